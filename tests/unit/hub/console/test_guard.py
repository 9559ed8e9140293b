"""The console's sessions and browser guard in process: real user store and tokens, a small app behind the guard."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlport.auth import TokenService, UserStore, load_token_config
from mlport.core.sqlitedb import Database
from mlport.errors import Unauthorized
from mlport.hub.console.security import COOKIE, BrowserGuard, host_name
from mlport.hub.console.sessions import SessionStore

PASSWORD = "a-password-of-length"


@pytest.fixture
def sessions(tmp_path: Path) -> SessionStore:
    users = UserStore(Database(":memory:"))
    users.create_user("ann", PASSWORD, ["deployer"])
    users.create_user("bot", PASSWORD, ["predictor"], kind="service")
    tokens = TokenService(load_token_config(tmp_path, secret="s" * 40), revoked=users.is_revoked)
    return SessionStore(users, tokens, ttl_s=600, max_sessions=2)


@pytest.mark.parametrize(("value", "name"), [("hub.example:8090", "hub.example"), ("HUB.example", "hub.example"),
                                             ("[::1]:8090", "::1"), ("[::1]", "::1"), ("127.0.0.1", "127.0.0.1")])
def test_host_names(value: str, name: str) -> None:
    assert host_name(value) == name


def test_sessions_sign_in_and_out(sessions: SessionStore) -> None:
    sid, session = sessions.sign_in("ann", PASSWORD)
    assert sessions.get(sid) == session and session.roles == ("deployer",)
    assert sessions.tokens.verify(session.token).subject == "ann"
    assert sessions.get(sid + "x") is None and sessions.get(None) is None and sessions.get("x" * 300) is None
    assert sessions.sign_out(sid) and not sessions.sign_out(sid)
    assert sessions.get(sid) is None
    with pytest.raises(Unauthorized):
        sessions.tokens.verify(session.token)  # signing out revoked the session's token
    with pytest.raises(Unauthorized):
        sessions.sign_in("ann", "wrong-password-here")
    with pytest.raises(Unauthorized):  # service accounts never sign in with a password
        sessions.sign_in("bot", PASSWORD)


def test_the_oldest_session_ends_beyond_the_limit(sessions: SessionStore) -> None:
    first, _ = sessions.sign_in("ann", PASSWORD)
    sessions.sign_in("ann", PASSWORD)
    sessions.sign_in("ann", PASSWORD)
    assert sessions.get(first) is None


def _call(sessions: SessionStore, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async def echo(request: Request) -> Response:
        return JSONResponse({"authorization": request.headers.get("authorization")})

    app = Starlette(routes=[Route("/api", echo, methods=["GET", "POST"]), Route("/ui/", echo, methods=["GET"])])
    guarded = BrowserGuard(app, sessions=sessions, public_names=frozenset({"hub.example", "localhost"}))

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=guarded)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.example") as client:
            return await client.request(method, path, headers=headers)

    return asyncio.run(main())


def test_the_guard(sessions: SessionStore) -> None:
    sid, session = sessions.sign_in("ann", PASSWORD)
    cookie = {"cookie": f"{COOKIE}={sid}"}
    assert _call(sessions, "GET", "/api", cookie).json() == {"authorization": f"Bearer {session.token}"}
    assert _call(sessions, "POST", "/api", cookie).status_code == 403
    r = _call(sessions, "POST", "/api", {**cookie, "x-csrf-token": session.csrf})
    assert r.json() == {"authorization": f"Bearer {session.token}"}
    # an explicit bearer token wins over the cookie, and needs no CSRF token
    assert _call(sessions, "POST", "/api", {**cookie, "authorization": "Bearer t"}).json() == {
        "authorization": "Bearer t"}
    assert _call(sessions, "GET", "/api", {**cookie, "host": "evil.example"}).status_code == 403
    assert _call(sessions, "GET", "/api", {**cookie, "origin": "http://evil.example"}).status_code == 403
    assert _call(sessions, "GET", "/api", {"host": "evil.example"}).json() == {"authorization": None}  # a script
    assert _call(sessions, "GET", "/ui/", {"host": "evil.example"}).status_code == 403
    page = _call(sessions, "GET", "/ui/", {})
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "content-security-policy" not in _call(sessions, "GET", "/api", {}).headers
