"""The routes of an app matched against the paths of an OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

__all__ = ["route_table", "sample_path", "serves", "undocumented"]

_PARAM = re.compile(r"\{[^}]*\}")


def route_table(app_routes: Iterable[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    """``(mount prefix, route)`` for every plain route, looking inside mounts."""
    found: list[tuple[str, Route]] = []
    for route in app_routes:
        if isinstance(route, Route):
            found.append((prefix, route))
        elif isinstance(route, Mount):
            found.extend(route_table(route.routes, prefix + route.path_format.rstrip("/")))
    return found


def sample_path(template: str) -> str:
    """An OpenAPI path template with every parameter filled in (``/models/{name}`` -> ``/models/1``).

    ``1`` fits every Starlette convertor (str, path, int, float).
    """
    return _PARAM.sub("1", template)


def serves(prefix: str, route: Route, method: str, template: str) -> bool:
    """Whether ``route`` answers ``method`` on the paths ``template`` describes.

    Matching a filled-in template against the route's own pattern also covers routes that take the
    rest of the path in one parameter (``/v1/models/{path:path}``) and parse it themselves.
    """
    sample = sample_path(template)
    if method not in (route.methods or {"GET"}) or not sample.startswith(prefix):
        return False
    return route.path_regex.fullmatch(sample[len(prefix):]) is not None


def undocumented(paths: dict[str, Any], app_routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """``(path, METHOD)`` of each route method that no operation in ``paths`` describes (HEAD left out)."""
    missing: list[tuple[str, str]] = []
    for prefix, route in route_table(app_routes):
        for method in sorted(route.methods or {"GET"}):
            if method == "HEAD":
                continue
            if not any(serves(prefix, route, method, template) and method.lower() in ops
                       for template, ops in paths.items()):
                missing.append((prefix + route.path_format, method))
    return missing

