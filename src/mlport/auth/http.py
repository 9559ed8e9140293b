"""Reading the bearer token of an HTTP request."""

from __future__ import annotations

from collections.abc import Mapping

from mlport.errors import Unauthorized

__all__ = ["bearer_token"]

MAX_HEADER_CHARS = 16 * 1024  # far above any token the hub issues; the token check refuses beyond 8 KiB


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (the header name and scheme in any case).

    Works with a case-insensitive header mapping (Starlette's) and with a plain dict.  A missing or malformed
    header raises ``Unauthorized("missing bearer token")``.
    """
    value = headers.get("authorization")
    if value is None:
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == "authorization"), None)
    if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS:
        raise Unauthorized("missing bearer token")
    parts = value.strip().split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        raise Unauthorized("missing bearer token")
    return parts[1]
