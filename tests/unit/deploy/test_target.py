"""Target: validation and the JSON form."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlport.deploy.target import Target
from mlport.errors import InvalidInput


@pytest.mark.parametrize("target", [
    Target("iris", 1),
    Target("iris", 3, "canary", candidate=4, percent=20),
    Target("iris", 3, "canary", candidate=4, percent=0, sticky_header="x-user"),
    Target("iris", 1, "ab", candidate=2, percent=50, sticky_header="X-User-Id"),
    Target("iris", 2, "shadow", candidate=1),
    Target("iris", 2, "canary", candidate=1, percent=100),
])
def test_valid_targets_pass_and_round_trip(target: Target) -> None:
    assert target.validate() is target
    assert Target.from_json(target.to_json()) == target


@pytest.mark.parametrize(("target", "message"), [
    (Target("iris", 1, "canary", candidate=2, percent=-0.1), "percent"),
    (Target("iris", 1, "canary", candidate=2, percent=100.5), "percent"),
    (Target("iris", 1, "ab", candidate=2, percent=math.nan), "percent"),
    (Target("iris", 1, "canary", percent=10), "needs a candidate"),
    (Target("iris", 1, "ab", percent=10), "needs a candidate"),
    (Target("iris", 1, "shadow"), "needs a candidate"),
    (Target("iris", 1, "canary", candidate=1, percent=10), "must differ"),
    (Target("iris", 1, "blue-green", candidate=2), "unknown strategy"),
    (Target("iris", 1, candidate=2), "single"),
    (Target("iris", 0), "primary"),
    (Target("Iris!", 1), "model name"),
    (Target("iris", 1, "ab", candidate=2, percent=5, sticky_header="bad header"), "sticky_header"),
])
def test_invalid_targets_are_refused(target: Target, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        target.validate()


def test_versions_primary_first() -> None:
    assert Target("m", 5).versions() == [5]
    assert Target("m", 5, "canary", candidate=6, percent=10).versions() == [5, 6]
    assert Target("m", 5, "shadow", candidate=2).versions() == [5, 2]


@pytest.mark.parametrize(("data", "message"), [
    ([], "JSON object"),
    ({"model": "m"}, "primary"),
    ({"primary": 1}, "model"),
    ({"model": "m", "primary": "1"}, "primary"),
    ({"model": "m", "primary": True}, "primary"),
    ({"model": "m", "primary": 1, "percent": "10"}, "percent"),
    ({"model": "m", "primary": 1, "colour": "blue"}, "unknown target field"),
    ({"model": "m", "primary": 1, "strategy": "canary", "candidate": 2, "percent": 101}, "percent"),
    ({"model": 7, "primary": 1}, "model"),
])
def test_from_json_refuses_bad_documents(data: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Target.from_json(data)


def test_from_json_defaults() -> None:
    assert Target.from_json({"model": "m", "primary": 2}) == Target("m", 2)
