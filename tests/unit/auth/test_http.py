from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from mlport.auth.http import bearer_token
from mlport.errors import Unauthorized


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer abc.def.ghi"},
    {"authorization": "bearer abc.def.ghi"},
    {"AUTHORIZATION": "  BEARER   abc.def.ghi  "},
    Headers({"authorization": "Bearer abc.def.ghi"}),
    Headers(raw=[(b"authorization", b"Bearer abc.def.ghi"), (b"accept", b"*/*")]),
])
def test_bearer_token(headers: object) -> None:
    assert bearer_token(headers) == "abc.def.ghi"  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [
    {},
    {"accept": "*/*"},
    {"authorization": ""},
    {"authorization": "Bearer"},
    {"authorization": "Bearer "},
    {"authorization": "Basic YWxpY2U6cHc="},
    {"authorization": "Bearer a b"},
    {"authorization": "abc.def.ghi"},
    {"authorization": "Bearer " + "x" * 20_000},
    Headers({"x-authorization": "Bearer abc"}),
])
def test_missing_or_malformed(headers: object) -> None:
    with pytest.raises(Unauthorized, match="missing bearer token"):
        bearer_token(headers)  # type: ignore[arg-type]
