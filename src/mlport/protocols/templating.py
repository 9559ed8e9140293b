"""Jinja2 templates of the runtime's HTML pages, shipped as package data in ``protocols/templates``.

Autoescape is on for every template: a value put in a page is escaped unless a template marks it
safe, and none does for anything that comes from a request or a model.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

__all__ = ["render"]


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mlport.protocols", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, **context: Any) -> str:
    """The template ``name`` filled with ``context``."""
    return _environment().get_template(name).render(**context)
