"""Errors with a protocol-neutral code.

Each transport maps :class:`ErrorCode` to its own status once (HTTP in
``protocols.http.errors``), so REST and gRPC can never disagree about what a
failure means.  Messages are written for the client: they name the value that
was wrong and what was expected, and never carry a traceback.
"""

from __future__ import annotations

import enum
import re

__all__ = [
    "Conflict",
    "ErrorCode",
    "Forbidden",
    "InvalidInput",
    "MlportError",
    "ModelLoading",
    "ModelNotFound",
    "ModelNotReady",
    "PayloadTooLarge",
    "RetryLater",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "valid_name",
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
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    CONFLICT = "conflict"
    #: A server this one forwarded to answered wrongly (broke off, too large): HTTP 502.
    BAD_GATEWAY = "bad_gateway"
    #: Refused for now, by choice of the server (a full queue, when so configured): HTTP 429.
    RESOURCE_EXHAUSTED = "resource_exhausted"
    #: The client went away before its request ran (no answer reaches it; HTTP 499 in logs).
    CANCELLED = "cancelled"
    #: Well-formed, but the server lacks what it needs to answer it (an explanation without background data):
    #: HTTP 422.
    UNPROCESSABLE = "unprocessable"


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


class RetryLater(MlportError):
    """Worth trying again after ``retry_after_s`` seconds (HTTP ``Retry-After``, gRPC ``retry-after`` trailer)."""

    code = ErrorCode.UNAVAILABLE

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelLoading(ModelNotReady, RetryLater):
    """The model is not loaded (yet): try again after ``retry_after_s`` seconds (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        RetryLater.__init__(self, message, retry_after_s)


class PayloadTooLarge(MlportError):
    code = ErrorCode.TOO_LARGE


class UnsupportedMediaType(MlportError):
    code = ErrorCode.UNSUPPORTED_MEDIA


class Unprocessable(MlportError):
    """Understood, but not answerable as the model stands (HTTP 422): the message says what to provide."""

    code = ErrorCode.UNPROCESSABLE


class Unauthorized(MlportError):
    """No credentials, or credentials that do not verify (HTTP 401)."""

    code = ErrorCode.UNAUTHENTICATED


class Forbidden(MlportError):
    """Valid credentials without the right to do this (HTTP 403)."""

    code = ErrorCode.PERMISSION_DENIED


class Conflict(MlportError):
    """The request clashes with the current state: a name taken, a deployed model deleted (HTTP 409)."""

    code = ErrorCode.CONFLICT


_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def valid_name(name: str, what: str) -> str:
    """Return ``name`` when it is a valid hub name (model, deployment, user), else raise :class:`InvalidInput`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(f"{what} name {name!r} is invalid: use 1-63 characters of a-z, 0-9, '.', '_' and '-', "
                           "starting with a letter or digit")
    return name
