"""Helpers of the hub's gateway access log."""

from __future__ import annotations

from typing import Any

import pytest

from mlport.hub.observe import _protocol, gateway_request_id


@pytest.mark.parametrize(("rest", "protocol"), [
    ("v2/models/iris/infer", "v2"), ("v2/health/ready", "v2"), ("v1/models/iris:predict", "v1"),
    ("eval", "eval"), ("models/iris/eval", "eval"), ("describe", "eval"), ("openapi.json", "other"), ("", "other"),
])
def test_protocol_of_a_gateway_path(rest: str, protocol: str) -> None:
    assert _protocol(rest) == protocol


def test_request_id_is_the_clients_or_a_new_one_sent_on() -> None:
    given: dict[str, Any] = {"headers": [(b"x-request-id", b"abc")]}
    assert gateway_request_id(given) == "abc" and given["headers"] == [(b"x-request-id", b"abc")]
    bare: dict[str, Any] = {"headers": [(b"accept", b"*/*")]}
    rid = gateway_request_id(bare)
    assert len(rid) == 32 and bare["headers"] == [(b"accept", b"*/*"), (b"x-request-id", rid.encode())]
