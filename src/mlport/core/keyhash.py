"""One stable hash for routing keys, shared by every sticky router (the hub's A/B split, manifest routers)."""

from __future__ import annotations

import hashlib

__all__ = ["key_hash", "key_point"]

_SPAN = 2.0**64


def key_hash(key: str) -> int:
    """A 64-bit hash of a routing key: the first 8 bytes of SHA-256 over its UTF-8 bytes (lone surrogates kept),
    the same in every process and on every run (unlike Python's salted ``hash()``)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def key_point(key: str, scale: float = 1.0) -> float:
    """The key's stable position in [0, ``scale``)."""
    return key_hash(key) * scale / _SPAN
