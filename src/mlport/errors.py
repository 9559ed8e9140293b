"""Errors with a protocol-neutral code.

Each transport maps :class:`ErrorCode` to its own status once (HTTP in
``protocols.http.errors``), so REST and gRPC can never disagree about what a
failure means.  Messages are written for the client: they name the value that
was wrong and what was expected, and never carry a traceback.
"""

from __future__ import annotations

import enum

__all__ = [
    "ErrorCode",
    "InvalidInput",
    "MlportError",
    "ModelNotFound",
    "ModelNotReady",
    "PayloadTooLarge",
    "UnsupportedMediaType",
]


class ErrorCode(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA = "unsupported_media"
    NOT_ACCEPTABLE = "not_acceptable"
    FAILED_PRECONDITION = "failed_precondition"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


class MlportError(Exception):
    """An error that is safe to show to a client."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidInput(MlportError):
    code = ErrorCode.INVALID_ARGUMENT


class ModelNotFound(MlportError):
    code = ErrorCode.NOT_FOUND


class ModelNotReady(MlportError):
    code = ErrorCode.UNAVAILABLE


class PayloadTooLarge(MlportError):
    code = ErrorCode.TOO_LARGE


class UnsupportedMediaType(MlportError):
    code = ErrorCode.UNSUPPORTED_MEDIA
