"""Whether two versions of a model take the same requests and give the same answers: their signatures compared."""

from __future__ import annotations

from typing import Any

__all__ = ["signature_difference", "signature_warning"]

#: Most differences named in one message.
MAX_SHOWN = 5


def _tensors(signature: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    rows = signature.get(key)
    if not isinstance(rows, list):
        return {}
    return {str(t["name"]): t for t in rows if isinstance(t, dict) and "name" in t}


def _compare(kind: str, old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for name, a in old.items():
        b = new.get(name)
        if b is None:
            out.append(f"{kind} '{name}' is missing")
            continue
        for field in ("datatype", "shape"):
            if a.get(field) != b.get(field):
                out.append(f"{kind} '{name}' {field} is {b.get(field)}, not {a.get(field)}")
    if kind == "input":
        out.extend(f"input '{name}' is new" for name in new if name not in old)
    return out


def signature_difference(primary: dict[str, Any] | None, candidate: dict[str, Any] | None) -> str | None:
    """What differs between the candidate's signature and the primary's (``{"inputs": [...], "outputs": [...]}``
    as ``mlport describe`` prints them), or None when they agree or one is unknown (nothing to compare)."""
    if not isinstance(primary, dict) or not isinstance(candidate, dict):
        return None
    found = _compare("input", _tensors(primary, "inputs"), _tensors(candidate, "inputs"))
    found += _compare("output", _tensors(primary, "outputs"), _tensors(candidate, "outputs"))
    if not found:
        return None
    more = f" (and {len(found) - MAX_SHOWN} more)" if len(found) > MAX_SHOWN else ""
    return "; ".join(found[:MAX_SHOWN]) + more


def signature_warning(reason: str, fmt: str | None) -> str:
    """What an upload without a readable signature tells its author: why, and what to do about it."""
    if "trusted" in reason:
        todo = ("if you trust this file, upload it again with --trusted (?trusted=true, admin only) to record its "
                "signature, and deploy it with --trusted")
    else:
        todo = (f"the hub may lack the {fmt or 'model'} format's extra (see `mlport formats` on the hub's machine): "
                "install it and upload again")
    return (f"the version is stored without a signature ({reason}); canary, A/B and shadow deployments cannot "
            f"check it against the primary; {todo}")
