"""``/openapi.json`` (the OpenAPI 3.1 document, see :mod:`.openapi`) and ``/docs``, a page to read and try the API.

The page is the template ``docs.html`` with its script in ``static/docs.js``. Its "Try it" form
knows, per served model, which inputs take an image (a file picker and drop zone), which take text,
and which a JSON value; the server writes that into the page, so the rule stays the one the eval
API applies (:func:`mlport.protocols.images.image_spec_problem`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlport.core.types import DataType
from mlport.errors import MlportError
from mlport.protocols.http.body import json_response
from mlport.protocols.http.openapi import (
    UNDOCUMENTED,
    build_openapi,
    route_table,
    sample_path,
    serves,
    undocumented,
)
from mlport.protocols.http.pages import page_response, root_of
from mlport.protocols.http.state import AppState, state_of
from mlport.protocols.images import image_spec_problem
from mlport.protocols.native import describe
from mlport.protocols.templating import render

__all__ = ["UNDOCUMENTED", "build_openapi", "input_forms", "route_table", "routes", "sample_path", "serves",
           "undocumented"]


def input_forms(state: AppState) -> dict[str, list[dict[str, Any]]]:
    """Per ready model, its inputs as the eval API names them, each with the kind of field that fills it.

    ``image``: an image-shaped input (sent as a PNG or JPEG part); ``text``: a string input (a text part);
    ``json``: anything else, a named field of ``fields`` included (a JSON part).
    """
    forms: dict[str, list[dict[str, Any]]] = {}
    for name in state.manager.names():
        try:
            lv = state.manager.serving_version(name)
        except MlportError:
            continue  # not ready: no form
        images = {s.name for s in lv.signature.inputs
                  if s.name not in lv.config.fields and image_spec_problem(s) is None}
        rows = describe(lv.signature, lv.config)["inputs"]
        for row in rows:
            spec = lv.signature.input(row["name"])
            text = spec is not None and spec.datatype is DataType.BYTES
            row["kind"] = "image" if row["name"] in images else "text" if text else "json"
        forms[name] = rows
    return forms


async def openapi_json(request: Request) -> Response:
    doc = build_openapi(state_of(request), request.app.routes, request.scope.get("root_path", ""))
    return json_response(doc)


async def docs_page(request: Request) -> Response:
    return page_response(render("docs.html", root=root_of(request), inputs=input_forms(state_of(request))))


routes: list[Route] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
]
