"""Verified bearer tokens of gateway requests, kept for a short while so that a request costs no JWT check
and no database query.

A token is checked in full (signature, claims, revocation, the account still enabled) at most every
:data:`TTL_S` seconds per token, and never kept past its expiry: a token revoked, or an account disabled or
deleted, by any process sharing the hub's database is refused within :data:`TTL_S`; in this process (the
hub's API) at once, since :class:`mlport.auth.UserStore` tells the cache to forget every entry.  Refusals
are not kept (each is checked again).
"""

from __future__ import annotations

import threading
import time

from mlport.auth import Principal, TokenService, UserStore
from mlport.auth.http import MAX_HEADER_CHARS
from mlport.auth.tokens import principal_from_claims
from mlport.errors import Unauthorized

__all__ = ["TTL_S", "TokenCache"]

#: Longest time a verified token is trusted without checking it again, seconds (the refusal bound is 1 s).
TTL_S = 0.5
#: Tokens kept at most (all are forgotten when more come).
MAX_ENTRIES = 10_000


class TokenCache:
    """``principal(authorization header)``: the verified caller, from the cache when checked recently."""

    def __init__(self, tokens: TokenService, users: UserStore, ttl_s: float = TTL_S,
                 max_entries: int = MAX_ENTRIES) -> None:
        self._tokens = tokens
        self._users = users
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        users.on_change.append(self.clear)

    def principal(self, authorization: bytes | None) -> Principal:
        """The caller of an ``Authorization: Bearer <token>`` header value; :class:`Unauthorized` otherwise."""
        if authorization is None:
            raise Unauthorized("missing bearer token")
        now = time.monotonic()
        hit = self._entries.get(authorization)
        if hit is not None and hit[1] > now:
            return hit[0]
        claims = self._tokens.verify_claims(_token(authorization))
        principal = principal_from_claims(claims)
        self._users.check_active(principal.subject)
        left = float(claims["exp"]) - time.time()
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries = {}
            self._entries[authorization] = (principal, now + min(self._ttl_s, max(left, 0.0)))
        return principal

    def clear(self) -> None:
        with self._lock:
            self._entries = {}


def _token(header: bytes) -> str:
    if len(header) > MAX_HEADER_CHARS:
        raise Unauthorized("missing bearer token")
    parts = header.decode("latin-1").strip().split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
        raise Unauthorized("missing bearer token")
    return parts[1]
