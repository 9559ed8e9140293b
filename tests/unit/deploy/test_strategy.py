"""choose(): the version each request goes to."""

from __future__ import annotations

import random

import pytest

from mlport.deploy.strategy import Choice, bucket, choose
from mlport.deploy.target import Target

DRAWS = 10_000


def test_single_always_primary() -> None:
    target = Target("m", 3)
    rng = random.Random(1)
    assert {choose(target, key=None, rand=rng.random()) for _ in range(200)} == {Choice(3, None)}
    assert choose(target, key="someone", rand=0.0) == Choice(3, None)


@pytest.mark.parametrize("percent", [20.0, 5.0, 73.5])
def test_canary_share_over_seeded_draws(percent: float) -> None:
    target = Target("m", 1, "canary", candidate=2, percent=percent)
    rng = random.Random(42)
    to_candidate = sum(choose(target, key=None, rand=rng.random()).serve == 2 for _ in range(DRAWS))
    assert abs(to_candidate / DRAWS * 100 - percent) <= 1.5


def test_canary_edges() -> None:
    none = Target("m", 1, "canary", candidate=2, percent=0)
    every = Target("m", 1, "canary", candidate=2, percent=100)
    assert choose(none, key=None, rand=0.0).serve == 1
    assert choose(every, key=None, rand=0.999999).serve == 2


def test_canary_ignores_the_key_without_a_sticky_header() -> None:
    target = Target("m", 1, "canary", candidate=2, percent=50)
    served = {choose(target, key="same-user", rand=r).serve for r in (0.1, 0.9)}
    assert served == {1, 2}


def test_sticky_key_always_gets_the_same_version() -> None:
    target = Target("m", 1, "canary", candidate=2, percent=30, sticky_header="x-user")
    rng = random.Random(7)
    for user in (f"user-{i}" for i in range(300)):
        first = choose(target, key=user, rand=rng.random()).serve
        assert all(choose(target, key=user, rand=rng.random()).serve == first for _ in range(20))
        # the decision is the key's hash, not the draw
        assert first == (2 if bucket(user) < 30 else 1)


def test_bucket_is_stable_sha256() -> None:
    # fixed values: the same in every process (not Python's salted hash())
    assert bucket("alice") == pytest.approx(int("2bd806c97f0e00af", 16) * 100 / 2**64)
    assert 0 <= bucket("") < 100
    assert bucket("alice") == bucket("alice")


def test_ab_split_by_key() -> None:
    target = Target("m", 1, "ab", candidate=2, percent=40, sticky_header="x-user")
    served = [choose(target, key=f"user-{i}", rand=0.99).serve for i in range(DRAWS)]
    share = served.count(2) / DRAWS * 100
    assert abs(share - 40) <= 1.5
    again = [choose(target, key=f"user-{i}", rand=0.0).serve for i in range(DRAWS)]
    assert again == served


def test_ab_without_key_uses_the_draw() -> None:
    target = Target("m", 1, "ab", candidate=2, percent=40)
    rng = random.Random(3)
    share = sum(choose(target, key=None, rand=rng.random()).serve == 2 for _ in range(DRAWS)) / DRAWS * 100
    assert abs(share - 40) <= 1.5


def test_shadow_serves_primary_and_copies_to_candidate() -> None:
    target = Target("m", 4, "shadow", candidate=5)
    rng = random.Random(0)
    assert {choose(target, key=None, rand=rng.random()) for _ in range(100)} == {Choice(4, 5)}
    assert choose(target, key="k", rand=0.0) == Choice(4, 5)
