"""The gateway's cache of verified tokens, on a real SQLite database shared by two stores (two processes of
the hub would share it the same way)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlport.auth.tokens import TokenConfig, TokenService
from mlport.auth.users import UserStore
from mlport.core.sqlitedb import Database
from mlport.errors import Unauthorized
from mlport.hub.tokencache import TTL_S, TokenCache
from tests.waiting import wait_for

SECRET = b"0123456789abcdef0123456789abcdef-unit"


@pytest.fixture
def stores(tmp_path: Path) -> tuple[UserStore, UserStore]:
    """The hub's store and another one on the same database (its changes reach the cache only by time)."""
    return UserStore(Database(tmp_path / "hub.db")), UserStore(Database(tmp_path / "hub.db"))


def make(users: UserStore, **kw: float) -> tuple[TokenCache, TokenService]:
    tokens = TokenService(TokenConfig("HS256", secret=SECRET), revoked=users.is_revoked)
    return TokenCache(tokens, users, **kw), tokens  # type: ignore[arg-type]


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def test_the_bound_is_under_a_second() -> None:
    assert 0 < TTL_S <= 0.5


def test_a_token_checked_once_is_kept(stores: tuple[UserStore, UserStore]) -> None:
    users, _ = stores
    users.create_user("app", "x" * 32, ["predictor"], kind="service", deployments=["d"])
    cache, tokens = make(users, ttl_s=3600)
    token, _ = tokens.issue("app", ["predictor"], kind="service", deployments=["d"])
    p = cache.principal(bearer(token))
    assert (p.subject, p.deployments) == ("app", frozenset({"d"}))
    calls = []
    users.db.one = lambda *a, **k: calls.append(a)  # type: ignore[method-assign]
    assert cache.principal(bearer(token)) is p and calls == []


def test_revoked_here_is_refused_at_once(stores: tuple[UserStore, UserStore]) -> None:
    users, _ = stores
    users.create_user("app", "x" * 32, ["predictor"], kind="service")
    cache, tokens = make(users, ttl_s=3600)
    token, claims = tokens.issue("app", ["predictor"], kind="service")
    other, _ = tokens.issue("app", ["predictor"], kind="service")
    cache.principal(bearer(token))
    cache.principal(bearer(other))
    users.revoke(claims["jti"], claims["exp"])
    with pytest.raises(Unauthorized, match="token revoked"):
        cache.principal(bearer(token))
    assert cache.principal(bearer(other)).subject == "app"
    users.set_disabled("app", True)
    with pytest.raises(Unauthorized, match="disabled"):
        cache.principal(bearer(other))


def test_revoked_or_disabled_elsewhere_is_refused_within_the_bound(stores: tuple[UserStore, UserStore]) -> None:
    users, elsewhere = stores
    users.create_user("app", "x" * 32, ["predictor"], kind="service")
    users.create_user("web", "x" * 32, ["predictor"], kind="service")
    cache, tokens = make(users)
    token, claims = tokens.issue("app", ["predictor"], kind="service")
    web, _ = tokens.issue("web", ["predictor"], kind="service")
    cache.principal(bearer(token))
    cache.principal(bearer(web))
    started = time.monotonic()
    elsewhere.revoke(claims["jti"], claims["exp"])
    elsewhere.set_disabled("web", True)

    wait_for(lambda: _refused(cache, bearer(token)) and _refused(cache, bearer(web)), 5, "the refusals")
    assert time.monotonic() - started <= 1.0  # the guarantee: refused within a second


def test_an_expiring_token_is_not_kept_past_its_end(stores: tuple[UserStore, UserStore]) -> None:
    users, _ = stores
    users.create_user("app", "x" * 32, ["predictor"], kind="service")
    tokens = TokenService(TokenConfig("HS256", secret=SECRET, leeway_s=0), revoked=users.is_revoked)
    cache = TokenCache(tokens, users, ttl_s=3600)
    token, _ = tokens.issue("app", ["predictor"], kind="service", ttl_s=1)
    cache.principal(bearer(token))
    wait_for(lambda: _refused(cache, bearer(token)), 5, "the expired token refused")


def _refused(cache: TokenCache, header: bytes) -> bool:
    try:
        cache.principal(header)
    except Unauthorized:
        return True
    return False


@pytest.mark.parametrize("header", [None, b"", b"Basic abc", b"Bearer", b"Bearer a b", b"Bearer " + b"x" * 20000,
                                    b"Bearer not-a-jwt"])
def test_bad_headers_are_refused(stores: tuple[UserStore, UserStore], header: bytes | None) -> None:
    cache, _ = make(stores[0])
    with pytest.raises(Unauthorized):
        cache.principal(header)


def test_the_cache_is_bounded(stores: tuple[UserStore, UserStore]) -> None:
    users, _ = stores
    users.create_user("app", "x" * 32, ["predictor"], kind="service")
    cache, tokens = make(users, max_entries=3)
    for _ in range(10):
        cache.principal(bearer(tokens.issue("app", ["predictor"], kind="service")[0]))
        assert len(cache._entries) <= 3
