"""Jinja2 templates of the hub's pages (autoescaped) and the folder of their static files."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

__all__ = ["STATIC_DIR", "render"]

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"


@cache
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(default=True),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """An HTML page from ``template`` with ``context`` (every value escaped unless marked safe)."""
    return HTMLResponse(_env().get_template(template).render(**context), status)
