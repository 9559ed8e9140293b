"""The one JSON reader of request bodies, and a guard that request bodies keep going through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlport.errors import InvalidInput
from mlport.protocols.jsonbody import MAX_DEPTH, check_parameters, loads

SRC = Path(__file__).resolve().parents[2] / "src" / "mlport"


def test_loads_refuses_depth_and_malformed_json_with_a_400() -> None:
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(InvalidInput, match="malformed JSON: depth limit exceeded"):
        loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(InvalidInput, match=r"^the body is not valid JSON: "):
        loads(b'{"a": ', "the body is not valid JSON")
    assert loads('{"s": "a\\u0000"}') == {"s": "a\x00"}


def test_parameters_that_cannot_be_written_back_are_refused() -> None:
    check_parameters({})
    check_parameters({"routing_key": "k", "n": 3, "nested": {"a": [1, 2]}})
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    with pytest.raises(InvalidInput, match="'parameters' cannot be used"):
        check_parameters({"p": deep})


#: Request-facing modules allowed to parse JSON themselves, and why.
_OWN_PARSERS = {
    "protocols/jsonbody.py": "the reader itself",
    "protocols/tfserving.py": "NaN/Infinity tokens: the standard library after orjson refused the body",
}
_PARSE = re.compile(r"\b(orjson\.loads|json\.loads|msgspec\.json\.decode|msgspec\.json\.Decoder)\(")
_HANDLES_REQUESTS = re.compile(r"^from starlette\.requests import|^import starlette", re.MULTILINE)


def test_request_bodies_are_parsed_only_by_the_reader() -> None:
    """Codecs (``protocols/``) and every module that handles HTTP requests parse JSON with the reader."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text(encoding="utf-8")
        request_facing = rel.startswith("protocols/") or _HANDLES_REQUESTS.search(text)
        if request_facing and rel not in _OWN_PARSERS and _PARSE.search(text):
            offenders.append(rel)
    assert offenders == [], f"parse request bodies with mlport.protocols.jsonbody.loads: {offenders}"
