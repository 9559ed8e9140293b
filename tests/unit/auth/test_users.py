"""UserStore on a real SQLite database, bootstrap_admin, and revocation through TokenService."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import mlport.auth.users as users_module
from mlport.auth.passwords import hash_password, needs_rehash, verify_password
from mlport.auth.tokens import TokenConfig, TokenService
from mlport.auth.users import REVOKED_GRACE_S, Account, UserStore, bootstrap_admin
from mlport.core.sqlitedb import Database
from mlport.errors import Conflict, ErrorCode, InvalidInput, MlportError, Unauthorized

PW = "correct horse battery"


@pytest.fixture
def db() -> Database:
    return Database(":memory:")


@pytest.fixture
def users(db: Database) -> UserStore:
    return UserStore(db)


def test_tables_are_prefixed(db: Database, users: UserStore) -> None:
    names = {r["name"] for r in db.all("SELECT name FROM sqlite_master WHERE type IN ('table', 'index') "
                                        "AND name NOT LIKE 'sqlite_%'")}
    assert names and all(n.startswith("auth_") for n in names)
    assert {"auth_users", "auth_revoked_tokens"} <= names


def test_create_and_authenticate(db: Database, users: UserStore) -> None:
    users.create_user("alice", PW, ["deployer"])
    account = users.authenticate("alice", PW)
    assert account == Account(frozenset({"deployer"}), None, "user")
    roles, deployments, kind = account
    assert roles == {"deployer"} and deployments is None and kind == "user"
    stored = db.one("SELECT password_hash FROM auth_users WHERE name = 'alice'")
    assert stored is not None and stored["password_hash"].startswith("$argon2id$") and PW not in stored["password_hash"]


def test_wrong_password_and_unknown_user_look_alike(users: UserStore, monkeypatch: pytest.MonkeyPatch) -> None:
    users.create_user("alice", PW, ["viewer"])
    calls: list[str] = []

    def counting_verify(hash: str, pw: str) -> bool:
        calls.append(hash)
        return verify_password(hash, pw)

    monkeypatch.setattr(users_module, "verify_password", counting_verify)
    with pytest.raises(Unauthorized) as wrong:
        users.authenticate("alice", PW + "!")
    with pytest.raises(Unauthorized) as unknown:
        users.authenticate("mallory", PW)
    assert str(wrong.value) == str(unknown.value) == "invalid username or password"
    # both cost one real Argon2 verification (the unknown name against a dummy hash)
    assert len(calls) == 2 and all(h.startswith("$argon2id$") for h in calls)
    for name, pw in (("", PW), ("x" * 5000, PW), ("alice", ""), ("alice", "p" * 5000), ("ALICE", PW)):
        with pytest.raises(Unauthorized):
            users.authenticate(name, pw)


def test_create_user_validation(users: UserStore) -> None:
    users.create_user("alice", PW, ["viewer"])
    with pytest.raises(Conflict):
        users.create_user("alice", PW, ["viewer"])
    with pytest.raises(InvalidInput):
        users.create_user("Bad Name", PW, ["viewer"])
    with pytest.raises(InvalidInput, match="unknown role"):
        users.create_user("bob", PW, ["root"])
    with pytest.raises(InvalidInput):
        users.create_user("bob", PW, [])
    with pytest.raises(InvalidInput, match="kind"):
        users.create_user("bob", PW, ["viewer"], kind="robot")
    with pytest.raises(InvalidInput, match="too short"):
        users.create_user("bob", "x" * 11, ["viewer"])
    with pytest.raises(InvalidInput, match="too long"):
        users.create_user("bob", "x" * 1025, ["viewer"])
    with pytest.raises(InvalidInput):
        users.create_user("bob", None, ["viewer"])
    with pytest.raises(InvalidInput):
        users.create_user("bob", PW, ["predictor"], deployments=[])
    assert [u["name"] for u in users.list_users()] == ["alice"]
    users.create_user("bob", "x" * 12, ["viewer"])
    users.create_user("carol", "y" * 1024, ["viewer"])
    assert users.authenticate("bob", "x" * 12).roles == {"viewer"}
    assert users.authenticate("carol", "y" * 1024).roles == {"viewer"}


def test_limited_predictor_account(users: UserStore) -> None:
    users.create_user("app", PW, ["predictor"], deployments=["b", "a"])
    assert users.authenticate("app", PW).deployments == {"a", "b"}
    assert users.get_user("app")["deployments"] == ["a", "b"]
    users.set_deployments("app", None)
    assert users.authenticate("app", PW).deployments is None


def test_list_get_delete(users: UserStore) -> None:
    users.create_user("bob", PW, ["viewer", "predictor"])
    users.create_user("alice", PW, ["admin"])
    listed = users.list_users()
    assert [u["name"] for u in listed] == ["alice", "bob"]
    assert listed[1] == {"name": "bob", "roles": ["predictor", "viewer"], "kind": "user", "deployments": None,
                         "created_at": listed[1]["created_at"], "disabled": False}
    assert all("password" not in k for u in listed for k in u)
    assert abs(listed[1]["created_at"] - time.time()) < 600
    users.delete_user("bob")
    with pytest.raises(MlportError) as err:
        users.get_user("bob")
    assert err.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(MlportError) as err:
        users.delete_user("bob")
    assert err.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(Unauthorized):
        users.authenticate("bob", PW)


def test_set_password_and_roles(users: UserStore) -> None:
    users.create_user("bob", PW, ["viewer"])
    users.set_password("bob", "a brand new secret")
    with pytest.raises(Unauthorized):
        users.authenticate("bob", PW)
    assert users.authenticate("bob", "a brand new secret").roles == {"viewer"}
    with pytest.raises(InvalidInput):
        users.set_password("bob", "short")
    users.set_roles("bob", ["deployer"])
    assert users.authenticate("bob", "a brand new secret").roles == {"deployer"}
    with pytest.raises(InvalidInput):
        users.set_roles("bob", ["wizard"])
    with pytest.raises(MlportError) as err:
        users.set_password("nobody", PW)
    assert err.value.code is ErrorCode.NOT_FOUND


def test_disabled_account(users: UserStore) -> None:
    users.create_user("bob", PW, ["viewer"])
    users.check_active("bob")
    users.set_disabled("bob", True)
    with pytest.raises(Unauthorized, match="disabled"):
        users.authenticate("bob", PW)
    with pytest.raises(Unauthorized):
        users.check_active("bob")
    with pytest.raises(Unauthorized):
        users.check_active("nobody")
    users.set_disabled("bob", False)
    assert users.authenticate("bob", PW).kind == "user"


def test_service_account_has_no_password_login(users: UserStore) -> None:
    users.create_user("ci-bot", None, ["predictor"], kind="service", deployments=["a"])
    users.create_user("batch", "", ["deployer"], kind="service")
    assert users.get_user("ci-bot")["kind"] == "service"
    for pw in ("", "!service-account", PW):
        with pytest.raises(Unauthorized, match="invalid username or password"):
            users.authenticate("ci-bot", pw)
    # a password given for a service account is ignored: it still cannot log in
    users.create_user("svc", PW, ["viewer"], kind="service")
    with pytest.raises(Unauthorized, match="invalid username or password"):
        users.authenticate("svc", PW)
    with pytest.raises(InvalidInput):
        users.set_password("ci-bot", PW)


def test_outdated_hash_is_rehashed_on_login(db: Database, users: UserStore) -> None:
    users.create_user("bob", PW, ["viewer"])
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PW)
    assert needs_rehash(weak)
    db.changes("UPDATE auth_users SET password_hash = ? WHERE name = 'bob'", (weak,))
    assert users.authenticate("bob", PW).roles == {"viewer"}
    row = db.one("SELECT password_hash FROM auth_users WHERE name = 'bob'")
    assert row is not None and row["password_hash"] != weak and not needs_rehash(row["password_hash"])
    assert users.authenticate("bob", PW).roles == {"viewer"}
    current = hash_password(PW)
    db.changes("UPDATE auth_users SET password_hash = ? WHERE name = 'bob'", (current,))
    users.authenticate("bob", PW)
    row = db.one("SELECT password_hash FROM auth_users WHERE name = 'bob'")
    assert row is not None and row["password_hash"] == current  # up to date: left alone


def test_last_admin_is_kept(users: UserStore) -> None:
    users.create_user("root", PW, ["admin"])
    users.create_user("svc", None, ["admin"], kind="service")
    assert users.count_admins() == 1
    with pytest.raises(Conflict, match="last active admin"):
        users.delete_user("root")
    with pytest.raises(Conflict):
        users.set_roles("root", ["viewer"])
    with pytest.raises(Conflict):
        users.set_disabled("root", True)
    users.create_user("second", PW, ["admin", "viewer"])
    assert users.count_admins() == 2
    users.set_roles("root", ["viewer"])
    assert users.count_admins() == 1
    with pytest.raises(Conflict):
        users.delete_user("second")
    users.delete_user("root")
    assert users.count_admins() == 1


def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    first = UserStore(Database(path))
    first.create_user("alice", PW, ["viewer"])
    first.revoke("abc", time.time() + 60)
    first.db.close()
    again = UserStore(Database(path))
    assert again.authenticate("alice", PW).roles == {"viewer"}
    assert again.is_revoked("abc")


# -- revocation ---------------------------------------------------------------------------------------------------

def test_revoke_and_purge(users: UserStore) -> None:
    now = time.time()
    users.revoke("old", now - REVOKED_GRACE_S - 60)
    users.revoke("recent", now - 5)
    users.revoke("live", now + 600)
    assert users.is_revoked("recent") and users.is_revoked("live")
    assert not users.is_revoked("old")  # expired long ago: purged by the later inserts
    assert not users.is_revoked("never")
    users.revoke("live", now + 600)  # twice is fine
    with pytest.raises(InvalidInput):
        users.revoke("", now)
    with pytest.raises(InvalidInput):
        users.revoke("x" * 1000, now)
    with pytest.raises(InvalidInput):
        users.revoke("x", float("nan"))


def test_token_revocation_through_the_store(users: UserStore) -> None:
    tokens = TokenService(TokenConfig("HS256", secret=b"k" * 32), users.is_revoked)
    token, claims = tokens.issue("alice", ["viewer"])
    assert tokens.verify(token).subject == "alice"
    users.revoke(claims["jti"], claims["exp"])
    with pytest.raises(Unauthorized, match="revoked"):
        tokens.verify(token)


# -- bootstrap ----------------------------------------------------------------------------------------------------

def test_bootstrap_generates_a_password(users: UserStore) -> None:
    pw = bootstrap_admin(users)
    assert pw is not None and len(pw) >= 20 and pw.isprintable() and not any(c.isspace() for c in pw)
    assert users.authenticate("admin", pw).roles == {"admin"}
    assert users.count_admins() == 1
    # no second admin, and the first one keeps its password
    assert bootstrap_admin(users) is None
    assert bootstrap_admin(users, name="root", password="another long password") is None
    assert [u["name"] for u in users.list_users()] == ["admin"]
    assert users.authenticate("admin", pw).roles == {"admin"}


def test_bootstrap_generates_different_passwords() -> None:
    a = bootstrap_admin(UserStore(Database(":memory:")))
    b = bootstrap_admin(UserStore(Database(":memory:")))
    assert a and b and a != b


def test_bootstrap_with_given_password(users: UserStore) -> None:
    with pytest.raises(InvalidInput):
        bootstrap_admin(users, password="short")
    assert users.list_users() == []
    # created, and the given password is not echoed back (a caller printing the result never prints it)
    assert bootstrap_admin(users, name="root", password="the operator's choice") is None
    assert users.count_admins() == 1
    assert users.authenticate("root", "the operator's choice").roles == {"admin"}
    assert bootstrap_admin(users) is None
    assert users.count_admins() == 1


def test_bootstrap_when_the_name_is_taken_by_a_non_admin(users: UserStore) -> None:
    users.create_user("admin", PW, ["viewer"])
    with pytest.raises(Conflict, match="not an active admin"):
        bootstrap_admin(users)
    assert bootstrap_admin(users, name="root") is not None
