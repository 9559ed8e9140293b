"""The one exception the clients raise for a failed call, and the status tables behind it."""

from __future__ import annotations

__all__ = ["ClientError", "code_of_http", "http_of_code"]

#: gRPC status name -> the HTTP status that means the same (as mlport's server maps them).
_HTTP_OF_CODE: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 413,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

_CODE_OF_HTTP: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    406: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def http_of_code(code: str) -> int:
    """The HTTP status matching a gRPC status name (500 for names it does not know)."""
    return _HTTP_OF_CODE.get(code, 500)


def code_of_http(status: int) -> str:
    """The gRPC status name matching an HTTP status (by class for statuses it does not list)."""
    found = _CODE_OF_HTTP.get(status)
    if found is not None:
        return found
    if 200 <= status < 300:
        return "OK"
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL"


class ClientError(Exception):
    """A call failed: the server refused it, never answered, or answered something unreadable.

    ``code`` is a gRPC status name (``NOT_FOUND``, ``INVALID_ARGUMENT``, ``UNAVAILABLE``...) for every
    transport; ``status`` is the HTTP status (for gRPC, the HTTP status of the same meaning), or ``None``
    when no answer arrived (connection refused, timeout); ``message`` is the server's own message.
    """

    def __init__(self, message: str, code: str, status: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        where = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"[{where}] {self.message}"

    def __repr__(self) -> str:
        return f"ClientError({self.message!r}, code={self.code!r}, status={self.status!r})"
