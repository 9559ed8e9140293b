"""The runtime's web pages: the landing page (``GET /``), the files they load (``/static/...``), and
the headers every page is sent with.

Pages are Jinja2 templates (``protocols/templates``); their script and style are files of
``protocols/http/static`` served by this server, so the Content-Security-Policy allows no inline
script and no other origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePath
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from mlport.errors import ErrorCode, MlportError
from mlport.protocols.http.state import AppState, state_of
from mlport.protocols.native import describe
from mlport.protocols.templating import render
from mlport.runtime.cache import format_bytes
from mlport.runtime.manager import ModelStatus, VersionState

__all__ = ["PAGE_CSP", "page_response", "root_of", "routes"]

#: The pages talk to this server only and load nothing from anywhere else; no inline script or style.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' blob: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def page_response(html: str) -> Response:
    return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache",
                                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


def root_of(request: Request) -> str:
    """The path this app is mounted at ('' at the root), to prefix the links of a page."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


# --------------------------------------------------------------------------- static files
@cache
def _static_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, media type) of every file shipped in ``static/``: a request can name no other."""
    folder = resources.files("mlport.protocols.http").joinpath("static")
    found: dict[str, tuple[bytes, str]] = {}
    for item in folder.iterdir():
        media = _STATIC_TYPES.get(PurePath(item.name).suffix)
        if media is not None and item.is_file():
            found[item.name] = (item.read_bytes(), media)
    return found


async def static_file(request: Request) -> Response:
    return _static(request.path_params["name"])


async def favicon(request: Request) -> Response:
    """Browsers ask for ``/favicon.ico`` on any page of a server, the plain-text ``/metrics`` included."""
    return _static("favicon.svg")


def _static(name: str) -> Response:
    found = _static_files().get(name)
    if found is None:
        raise MlportError(f"no file '{name[:100]}' in /static", ErrorCode.NOT_FOUND)
    content, media = found
    return Response(content, media_type=media,
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


# --------------------------------------------------------------------------- landing page
@dataclass(frozen=True, slots=True)
class _Version:
    version: str
    state: str
    reason: str
    memory: str


@dataclass(frozen=True, slots=True)
class _Model:
    name: str
    ready: bool
    versions: list[_Version]
    #: Ready, or loads on a request (lazy, evicted, loading): worth a "Try it".
    tryable: bool
    #: ``name type [shape]`` of each input and output of the serving version (empty when none serves).
    inputs: list[str]
    outputs: list[str]


_TRYABLE = frozenset({VersionState.READY, VersionState.LOADING, VersionState.NOT_LOADED, VersionState.EVICTED})


def _tensor_text(spec: dict[str, Any]) -> str:
    return f"{spec['name']} {spec['type']} [{', '.join(str(d) for d in spec['shape'])}]"


def _model(state: AppState, status: ModelStatus) -> _Model:
    versions = [_Version(str(v.version), v.state.value, v.reason, format_bytes(v.memory_bytes) if v.memory_bytes
                         else "") for v in status.versions]
    inputs: list[str] = []
    outputs: list[str] = []
    if status.ready:
        try:
            lv = state.manager.serving_version(status.name)
        except MlportError:
            pass  # unloaded since the status was taken
        else:
            described = describe(lv.signature, lv.config)
            inputs = [_tensor_text(s) for s in described["inputs"]]
            outputs = [_tensor_text(s) for s in described["outputs"]]
    tryable = any(v.state in _TRYABLE for v in status.versions)
    return _Model(status.name, status.ready, versions, tryable, inputs, outputs)


async def landing(request: Request) -> Response:
    state = state_of(request)
    models = [_model(state, s) for s in state.manager.all_status()]
    html = render("landing.html", root=root_of(request), version=state.server_version, models=models,
                  ready=state.manager.ready(state.strict_readiness))
    return page_response(html)


routes: list[Route] = [
    Route("/", landing, methods=["GET"]),
    Route("/static/{name}", static_file, methods=["GET"]),
    Route("/favicon.ico", favicon, methods=["GET"]),
]
