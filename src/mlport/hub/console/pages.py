"""The hub console's pages: sign in and out, and the page shells its script fills from the management API.

The pages hold no data of their own: ``console.js`` reads and changes everything through ``/api/v1/...`` and
the gateway, as the CLI does, with the session's cookie and CSRF token.  The page only decides which controls
to draw from the signed-in user's roles; the API still checks every right.
"""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from mlport.auth import ROLES, Action
from mlport.errors import MlportError, valid_name
from mlport.hub.console.render import STATIC_DIR, render
from mlport.hub.console.security import COOKIE
from mlport.hub.console.sessions import Session, SessionStore
from mlport.hub.settings import HubSettings
from mlport.protocols.http.body import read_body

__all__ = ["console_routes", "public_names"]

_LOCAL = ("localhost", "127.0.0.1", "::1")
_MAX_FORM_BYTES = 8192


def public_names(settings: HubSettings) -> frozenset[str]:
    """The names browsers may reach the hub by: the configured ones, else the bound host and loopback names
    (and this machine's names when bound to every interface)."""
    if settings.public_names:
        return frozenset(n.strip().lower().strip("[]") for n in settings.public_names if n.strip())
    names = {settings.host.lower().strip("[]"), *_LOCAL}
    if settings.host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def _sessions(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


def _session(request: Request) -> Session | None:
    session = request.scope.get("state", {}).get("session")
    return session if isinstance(session, Session) else None


def _can(session: Session) -> dict[str, bool]:
    actions: set[Action] = set()
    for role in session.roles:
        actions |= ROLES.get(role, frozenset())
    return {a.value: a in actions for a in Action}


def _page(request: Request, template: str, **context: Any) -> Response:
    session = _session(request)
    if session is None:
        return RedirectResponse("/ui/login", 303)
    return render(template, user=session.subject, roles=", ".join(session.roles), can=_can(session),
                  csrf=session.csrf, **context)


async def home(request: Request) -> Response:
    return RedirectResponse("/ui/", 303)


async def login_form(request: Request) -> Response:
    if _session(request) is not None:
        return RedirectResponse("/ui/", 303)
    return render("login.html", error="")


async def login(request: Request) -> Response:
    form = dict(parse_qsl((await read_body(request, _MAX_FORM_BYTES)).decode("utf-8", "replace")))
    name, password = form.get("username", "")[:64], form.get("password", "")[:1024]
    try:
        session_id, session = _sessions(request).sign_in(name, password)
    except MlportError as exc:
        return render("login.html", 401, error=exc.message)
    response = RedirectResponse("/ui/", 303)
    response.set_cookie(COOKIE, session_id, max_age=int(session.expires_at - time.time()), path="/", httponly=True,
                        secure=request.url.scheme == "https", samesite="strict")
    return response


async def logout(request: Request) -> Response:
    """Sign out (a POST with the CSRF token, checked by the guard): the session ends and its token is revoked."""
    _sessions(request).sign_out(request.cookies.get(COOKIE))
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, secure=request.url.scheme == "https", samesite="strict")
    return response


async def models(request: Request) -> Response:
    return _page(request, "models.html", page="models")


async def model(request: Request) -> Response:
    return _page(request, "model.html", page="model", model=valid_name(request.path_params["model"], "model"))


async def deployments(request: Request) -> Response:
    return _page(request, "deployments.html", page="deployments")


async def deployment(request: Request) -> Response:
    name = valid_name(request.path_params["name"], "deployment")
    return _page(request, "deployment.html", page="deployment", deployment=name)


async def admin(request: Request) -> Response:
    return _page(request, "admin.html", page="admin")


async def docs(request: Request) -> Response:
    return render("docs.html", title="mlport hub API")


def console_routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/ui/login", login_form, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/", models, methods=["GET"]),
        Route("/ui/models/{model}", model, methods=["GET"]),
        Route("/ui/deployments", deployments, methods=["GET"]),
        Route("/ui/deployments/{name}", deployment, methods=["GET"]),
        Route("/ui/admin", admin, methods=["GET"]),
        Mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="console-static"),
    ]
