"""Accounts and revoked tokens, kept in the hub's database (tables ``auth_users`` and ``auth_revoked_tokens``).

People log in with a name and password (hashed with Argon2id); service accounts have no usable password and
act through long-lived tokens an admin issues for them.  The store refuses to remove, demote or disable the
last active admin, so a hub can never lock its operators out.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from mlport.auth.passwords import check_password, generate_password, hash_password, needs_rehash, verify_password
from mlport.auth.roles import KINDS, check_deployments, check_roles
from mlport.core.sqlitedb import Database
from mlport.errors import Conflict, ErrorCode, InvalidInput, MlportError, Unauthorized, valid_name

__all__ = ["MAX_USERS", "Account", "UserStore", "bootstrap_admin"]

MAX_USERS = 10_000
MAX_JTI_CHARS = 256
# Revoked ids are kept this long after their token's expiry, longer than any verification leeway.
REVOKED_GRACE_S = 3600.0
BAD_LOGIN = "invalid username or password"
# Stored for service accounts: not an Argon2 hash, so no password ever verifies against it.
UNUSABLE_PASSWORD = "!service-account"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    deployments TEXT,
    created_at REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS auth_revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS auth_revoked_tokens_expires ON auth_revoked_tokens (expires_at);
"""


class Account(NamedTuple):
    """What a successful login yields: ``roles, deployments, kind = users.authenticate(name, pw)``."""

    roles: frozenset[str]
    deployments: frozenset[str] | None  # None: all deployments
    kind: str


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user is unknown, so that such a login costs as much as a real one."""
    return hash_password(generate_password())


def _not_found(name: str) -> MlportError:
    return MlportError(f"user {name!r} not found", ErrorCode.NOT_FOUND)


def _is_active_admin(row: dict[str, Any]) -> bool:
    return row["kind"] == "user" and not row["disabled"] and "admin" in json.loads(row["roles"])


def _public(row: dict[str, Any]) -> dict[str, Any]:
    deployments = row["deployments"]
    return {
        "name": row["name"],
        "roles": sorted(json.loads(row["roles"])),
        "kind": row["kind"],
        "deployments": None if deployments is None else sorted(json.loads(deployments)),
        "created_at": row["created_at"],
        "disabled": bool(row["disabled"]),
    }


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate(_SCHEMA)
        #: called after a token is revoked or an account deleted, disabled or given other roles (caches of
        #: verified tokens forget them)
        self.on_change: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    # -- accounts ------------------------------------------------------------------------------------------------

    def create_user(self, name: str, password: str | None, roles: Iterable[str], *, kind: str = "user",
                    deployments: Iterable[str] | None = None) -> None:
        """Add an account.  People need a password of 12-1024 characters; service accounts never log in with a
        password: whatever is given is ignored and an unusable one is stored.  Conflict when the name is taken;
        InvalidInput on bad values."""
        valid_name(name, "user")
        if kind not in KINDS:
            raise InvalidInput(f"unknown account kind {kind!r}: use 'user' or 'service'")
        role_set = check_roles(roles)
        limit = check_deployments(deployments)
        if kind == "service":
            stored = UNUSABLE_PASSWORD  # a password given for a service account is ignored: it never logs in
        else:
            if password is None:
                raise InvalidInput("a password is needed")
            stored = hash_password(check_password(password))
        with self.db.transaction():
            if self.db.one("SELECT 1 AS x FROM auth_users WHERE name = ?", (name,)) is not None:
                raise Conflict(f"user {name!r} already exists")
            count = self.db.one("SELECT COUNT(*) AS n FROM auth_users")
            if count is not None and count["n"] >= MAX_USERS:
                raise Conflict(f"the hub holds at most {MAX_USERS} accounts")
            self.db.execute(
                "INSERT INTO auth_users (name, password_hash, roles, kind, deployments, created_at, disabled) "
                "VALUES (?, ?, ?, ?, ?, ?, 0)",
                (name, stored, json.dumps(sorted(role_set)), kind,
                 None if limit is None else json.dumps(sorted(limit)), time.time()),
            )

    def get_user(self, name: str) -> dict[str, Any]:
        """``{"name", "roles", "kind", "deployments", "created_at", "disabled"}``; NOT_FOUND when absent."""
        return _public(self._row(name))

    def list_users(self) -> list[dict[str, Any]]:
        return [_public(r) for r in self.db.all("SELECT * FROM auth_users ORDER BY name")]

    def delete_user(self, name: str) -> None:
        with self.db.transaction():
            row = self._row(name)
            self._keep_an_admin(row, "delete")
            self.db.changes("DELETE FROM auth_users WHERE name = ?", (name,))
        self._changed()

    def set_password(self, name: str, password: str) -> None:
        pw_hash = hash_password(check_password(password))
        with self.db.transaction():
            row = self._row(name)
            if row["kind"] != "user":
                raise InvalidInput("service accounts have no password: they use tokens issued by an admin")
            self.db.changes("UPDATE auth_users SET password_hash = ? WHERE name = ?", (pw_hash, name))

    def set_roles(self, name: str, roles: Iterable[str]) -> None:
        role_set = check_roles(roles)
        with self.db.transaction():
            row = self._row(name)
            if "admin" not in role_set:
                self._keep_an_admin(row, "demote")
            self.db.changes("UPDATE auth_users SET roles = ? WHERE name = ?", (json.dumps(sorted(role_set)), name))

    def set_deployments(self, name: str, deployments: Iterable[str] | None) -> None:
        """Limit the account to named deployments (``None``: all)."""
        limit = check_deployments(deployments)
        with self.db.transaction():
            self._row(name)
            self.db.changes("UPDATE auth_users SET deployments = ? WHERE name = ?",
                            (None if limit is None else json.dumps(sorted(limit)), name))

    def set_disabled(self, name: str, disabled: bool) -> None:
        with self.db.transaction():
            row = self._row(name)
            if disabled:
                self._keep_an_admin(row, "disable")
            self.db.changes("UPDATE auth_users SET disabled = ? WHERE name = ?", (1 if disabled else 0, name))
        self._changed()

    def count_admins(self) -> int:
        """Active (not disabled) people with the admin role; service accounts do not count."""
        rows = self.db.all("SELECT roles, kind, disabled FROM auth_users WHERE kind = 'user' AND disabled = 0")
        return sum(1 for r in rows if _is_active_admin(r))

    def check_active(self, name: str) -> None:
        """Unauthorized unless the account exists and is enabled (tokens outlive deleted or disabled accounts;
        the hub may call this for each request)."""
        row = self.db.one("SELECT disabled FROM auth_users WHERE name = ?", (name,))
        if row is None or row["disabled"]:
            raise Unauthorized("account deleted or disabled")

    # -- login ---------------------------------------------------------------------------------------------------

    def authenticate(self, name: str, password: str) -> Account:
        """The account's roles, deployment limit and kind when ``password`` is right; Unauthorized otherwise.

        An unknown name, a service account and a wrong password all cost one Argon2 verification and give the
        same message, so a caller cannot tell which names exist from the answer or its timing.
        """
        row: dict[str, Any] | None = None
        if isinstance(name, str) and len(name) <= 64:
            row = self.db.one("SELECT * FROM auth_users WHERE name = ?", (name,))
        if row is None or row["kind"] != "user":
            verify_password(_dummy_hash(), password)
            raise Unauthorized(BAD_LOGIN)
        stored = row["password_hash"]
        if not verify_password(stored, password):
            raise Unauthorized(BAD_LOGIN)
        if row["disabled"]:
            raise Unauthorized("account disabled")
        if needs_rehash(stored):
            # made with older parameters: store a hash with the current ones (unless it changed meanwhile)
            self.db.changes("UPDATE auth_users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                            (hash_password(password), name, stored))
        deployments = row["deployments"]
        return Account(roles=frozenset(json.loads(row["roles"])),
                       deployments=None if deployments is None else frozenset(json.loads(deployments)),
                       kind=row["kind"])

    # -- revoked tokens ------------------------------------------------------------------------------------------

    def revoke(self, jti: str, expires_at: float) -> None:
        """Refuse the token ``jti`` from now on; the entry is dropped some time after the token expired anyway
        (expired entries are purged on each insert)."""
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise InvalidInput(f"a token id must be 1-{MAX_JTI_CHARS} characters")
        if (not isinstance(expires_at, int | float) or isinstance(expires_at, bool)
                or not math.isfinite(expires_at)):
            raise InvalidInput("the token expiry must be a number of seconds since the epoch")
        with self.db.transaction():
            self.db.changes("DELETE FROM auth_revoked_tokens WHERE expires_at < ?", (time.time() - REVOKED_GRACE_S,))
            self.db.execute("INSERT OR REPLACE INTO auth_revoked_tokens (jti, expires_at) VALUES (?, ?)",
                            (jti, float(expires_at)))
        self._changed()

    def is_revoked(self, jti: str) -> bool:
        return self.db.one("SELECT 1 AS x FROM auth_revoked_tokens WHERE jti = ?", (jti,)) is not None

    # -- internals -----------------------------------------------------------------------------------------------

    def _row(self, name: str) -> dict[str, Any]:
        row = self.db.one("SELECT * FROM auth_users WHERE name = ?", (name,)) if isinstance(name, str) else None
        if row is None:
            raise _not_found(name)
        return row

    def _keep_an_admin(self, row: dict[str, Any], verb: str) -> None:
        if _is_active_admin(row) and self.count_admins() <= 1:
            raise Conflict(f"cannot {verb} {row['name']!r}: it is the last active admin")


def bootstrap_admin(users: UserStore, *, name: str = "admin", password: str | None = None) -> str | None:
    """Create the first admin when there is no active admin, with ``password`` or a generated one.

    Returns the generated password (to show the operator once); ``None`` when the password was given (it is not
    echoed back, so a caller that prints the result never prints it) or when an admin already exists.
    """
    if users.count_admins() > 0:
        return None
    pw = generate_password() if password is None else check_password(password)
    try:
        users.create_user(name, pw, ["admin"])
    except Conflict:
        if users.count_admins() > 0:  # another hub process created it meanwhile
            return None
        raise Conflict(f"user {name!r} exists but is not an active admin: name the first admin differently, "
                       "or enable that account") from None
    return pw if password is None else None
