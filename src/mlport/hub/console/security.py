"""The browser-facing guard in front of the hub's app.

- Requests to the console's pages, and every request carrying the session cookie, must name the hub by one of
  its public names in ``Host`` (DNS rebinding) and, when they send one, in ``Origin`` (cross-site requests):
  403 otherwise.  Requests with a bearer token and no cookie are scripts and are not affected.
- A request with a live session cookie and no ``Authorization`` header goes on with the session's bearer token,
  so the management API sees the signed-in user; when it changes state (any method but GET, HEAD, OPTIONS) it
  must carry the session's CSRF token in ``X-CSRF-Token``: 403 otherwise.
- The console's answers carry a Content-Security-Policy allowing scripts, styles and connections from the
  hub itself only (no inline script, no other origin), and headers that keep them out of frames.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlport.hub.console.sessions import SessionStore

__all__ = ["COOKIE", "CSP", "BrowserGuard", "is_console_path"]

COOKIE = "mlport_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_PAGE_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                 (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin")]


def is_console_path(path: str) -> bool:
    return path in ("/", "/ui", "/docs") or path.startswith("/ui/")


def host_name(value: str) -> str:
    """The host of a ``Host`` header value or URL netloc, without port or IPv6 brackets, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def session_cookie(headers: Headers) -> str | None:
    raw = headers.get("cookie")
    if not raw or len(raw) > 8192:
        return None
    try:
        jar = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


async def _refuse(send: Send, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *_PAGE_HEADERS]})
    await send({"type": "http.response.body", "body": body})


class BrowserGuard:
    def __init__(self, app: ASGIApp, sessions: SessionStore, public_names: frozenset[str]) -> None:
        self.app = app
        self.sessions = sessions
        self.public_names = public_names

    def _origin_problem(self, headers: Headers) -> str | None:
        host = host_name(headers.get("host", ""))
        if host not in self.public_names:
            return f"the Host {host!r} is not one of the hub's public names"
        origin = headers.get("origin")
        if origin is not None:
            name = urlsplit(origin).hostname if origin != "null" else None
            if name is None or name.lower() not in self.public_names:
                return f"cross-origin request from {origin[:100]!r} refused"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookie = session_cookie(headers)
        page = is_console_path(scope["path"])
        if page or cookie is not None:
            problem = self._origin_problem(headers)
            if problem is not None:
                await _refuse(send, problem)
                return
        if cookie is not None and "authorization" not in headers:
            session = self.sessions.get(cookie)
            if session is not None:
                if scope["method"] not in SAFE_METHODS and not hmac.compare_digest(
                        headers.get(CSRF_HEADER, "").encode(), session.csrf.encode()):
                    await _refuse(send, "missing or wrong CSRF token (send the X-CSRF-Token header of the page)")
                    return
                bearer = (b"authorization", f"Bearer {session.token}".encode())
                scope = {**scope, "headers": [*scope["headers"], bearer]}
                scope.setdefault("state", {})["session"] = session
        if not page:
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_PAGE_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_policy)
