"""The error codes and the one status table per transport: every code has a status, and the usual ones are right."""

from __future__ import annotations

import grpc
import pytest

from mlport.errors import ErrorCode, InvalidInput, MlportError, ModelNotReady
from mlport.protocols.grpc.errors import GRPC_STATUS
from mlport.protocols.http.errors import HTTP_STATUS


def test_the_http_table_covers_every_code_and_nothing_else() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)


def test_the_grpc_table_covers_every_code_and_nothing_else() -> None:
    assert set(GRPC_STATUS) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_is_an_http_error_status(code: ErrorCode) -> None:
    assert 400 <= HTTP_STATUS[code] <= 599
    assert GRPC_STATUS[code] is not grpc.StatusCode.OK


@pytest.mark.parametrize(("code", "status"), [
    (ErrorCode.INVALID_ARGUMENT, 400), (ErrorCode.NOT_FOUND, 404), (ErrorCode.TOO_LARGE, 413),
    (ErrorCode.UNSUPPORTED_MEDIA, 415), (ErrorCode.UNAVAILABLE, 503), (ErrorCode.DEADLINE_EXCEEDED, 504),
    (ErrorCode.BAD_GATEWAY, 502), (ErrorCode.INTERNAL, 500), (ErrorCode.UNAUTHENTICATED, 401),
    (ErrorCode.PERMISSION_DENIED, 403), (ErrorCode.CONFLICT, 409),
])
def test_http_statuses(code: ErrorCode, status: int) -> None:
    assert HTTP_STATUS[code] == status


def test_an_error_keeps_its_class_code_unless_given_one() -> None:
    assert InvalidInput("x").code is ErrorCode.INVALID_ARGUMENT
    assert ModelNotReady("x").code is ErrorCode.UNAVAILABLE
    assert MlportError("x").code is ErrorCode.INTERNAL
    err = MlportError("the replica's answer broke off", ErrorCode.BAD_GATEWAY)
    assert err.code is ErrorCode.BAD_GATEWAY and str(err) == "the replica's answer broke off"
