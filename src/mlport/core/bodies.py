"""Typed request bodies: validate JSON into a pydantic model, with errors that name the field.

Each body is a pydantic model; its JSON schema is what the OpenAPI documents publish, so the rules a server
enforces and the rules it documents are the same code.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mlport.errors import InvalidInput

__all__ = ["Body", "parse_body"]

B = TypeVar("B", bound=BaseModel)


class Body(BaseModel):
    """Base of request bodies: unknown fields are refused, values are never coerced to a different meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def parse_body(model: type[B], data: Any, *, strict: bool = False) -> B:
    """``data`` validated as ``model``; the first problem raises :class:`InvalidInput` naming the field."""
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        first = errors[0]
        field = _where(tuple(first["loc"]))
        if first["type"] == "extra_forbidden":
            raise InvalidInput(f"unknown field {field!r}") from None
        if first["type"] == "missing":
            raise InvalidInput(f"field {field!r} is required") from None
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"field {field!r}: {message[:1].lower()}{message[1:]}") from None
