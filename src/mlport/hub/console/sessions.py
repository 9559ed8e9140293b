"""Browser sessions of the hub console, kept on the server.

Signing in with a user's name and password creates a session: a random id (the cookie's value; only its
SHA-256 is kept), a CSRF token, and a bearer token issued to the user as ``POST /auth/token`` would.  Each
request carrying the cookie is sent on to the management API with that bearer token, so the console has the
same rights as the CLI and no other way in.  Signing out forgets the session and revokes its token.  Sessions
live in the hub's memory: a restarted hub asks everyone to sign in again.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from mlport.auth import TokenService, UserStore
from mlport.errors import Unauthorized

__all__ = ["MAX_SESSIONS", "Session", "SessionStore"]

#: Most sessions kept at once; signing in beyond it ends the oldest one.
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    subject: str
    roles: tuple[str, ...]
    token: str
    jti: str
    csrf: str
    expires_at: float


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    def __init__(self, users: UserStore, tokens: TokenService, *, ttl_s: int = 8 * 3600,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.users = users
        self.ttl_s = ttl_s
        self.tokens = tokens
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def sign_in(self, name: str, password: str) -> tuple[str, Session]:
        """A new session for a person (not a service account): ``(cookie value, session)``."""
        roles, deployments, kind = self.users.authenticate(name, password)
        if kind != "user":
            raise Unauthorized("service accounts use the token they were given")
        token, claims = self.tokens.issue(name, roles, kind=kind, deployments=deployments, ttl_s=self.ttl_s)
        session_id = secrets.token_urlsafe(32)
        session = Session(name, tuple(sorted(roles)), token, str(claims["jti"]), secrets.token_urlsafe(32),
                          float(claims["exp"]))
        with self._lock:
            self._sessions[_key(session_id)] = session
            while len(self._sessions) > self.max_sessions:
                _, oldest = self._sessions.popitem(last=False)
                self.users.revoke(oldest.jti, oldest.expires_at)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value; ``None`` when unknown or expired."""
        if not session_id or len(session_id) > 256:
            return None
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.expires_at <= time.time():
                del self._sessions[key]
                session = None
        return session

    def sign_out(self, session_id: str | None) -> bool:
        """Forget the session and revoke its token; ``False`` when there was none."""
        if not session_id:
            return False
        with self._lock:
            session = self._sessions.pop(_key(session_id), None)
        if session is None:
            return False
        self.users.revoke(session.jti, session.expires_at)
        return True
