"""OCI image references, checked before one reaches a builder, a registry call or a manifest."""

from __future__ import annotations

import re

from mlport.errors import InvalidInput

__all__ = ["check_image_ref"]

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
_WITH_DIGEST = re.compile(rf"{_NAME}(?:@sha256:[0-9a-f]{{64}})?")
_BY_NAME = re.compile(_NAME)


def check_image_ref(value: str, *, digest: bool = True) -> str:
    """``value`` when it is an OCI image reference (``[host[:port]/]path[:tag]``, with ``@sha256:...`` when
    ``digest``), the path in lower case; else :class:`InvalidInput`."""
    pattern = _WITH_DIGEST if digest else _BY_NAME
    if not isinstance(value, str) or len(value) > 255 or not pattern.fullmatch(value):
        form = "registry/name:tag or name@sha256:digest" if digest else "registry/name:tag"
        raise InvalidInput(f"image reference {value!r} is not valid ({form}, the name in lower case)")
    return value
