"""The whole OpenAPI 3.1 document, built for the models served now."""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.routing import BaseRoute

from mlport.protocols.http.openapi.examples import Served, parameters
from mlport.protocols.http.openapi.parts import TAGS, Json, responses
from mlport.protocols.http.openapi.paths import explain_paths, native_paths, oip_paths, server_paths, tf_paths
from mlport.protocols.http.openapi.routetable import undocumented
from mlport.protocols.http.openapi.schemas import schemas
from mlport.protocols.http.state import AppState

__all__ = ["OPENAPI_VERSION", "UNDOCUMENTED", "build_openapi"]

OPENAPI_VERSION = "3.1.0"
#: Marks an operation that exists in the app but has no hand-written description here.
UNDOCUMENTED = "x-mlport-undocumented"


def build_openapi(state: AppState, app_routes: Iterable[BaseRoute] = (), root_path: str = "") -> Json:
    """The OpenAPI document for the models served now; ``app_routes`` adds any route not described here."""
    served = Served(state)
    paths: Json = {**native_paths(served), **oip_paths(served), **explain_paths(), **tf_paths(served),
                   **server_paths()}
    for path, method in undocumented(paths, app_routes):
        op: Json = {"summary": f"{method} {path}", UNDOCUMENTED: True,
                    "responses": {"200": {"description": "OK"}}}
        names = re.findall(r"\{([^}]*)\}", path)
        if names:
            op["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                                for n in names]
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "mlport", "version": state.server_version,
                 "description": "Model server: describe/eval, Open Inference Protocol v2 and TF Serving "
                                "REST. Errors answer {\"error\": message}."},
        "servers": [{"url": root_path or "/"}],
        "tags": [{"name": t} for t in TAGS],
        "paths": paths,
        "components": {"schemas": schemas(), "parameters": parameters(served), "responses": responses()},
    }

