"""The hub's stored deployments: their current target, scaling policy and a history of every change.

The controller reads this store and moves the replicas toward it, so a hub that restarts finds its
deployments here and brings them back.  Rollback is a new history entry whose target is an earlier one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from mlport.core.sqlitedb import Database
from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.target import Target
from mlport.errors import Conflict, ErrorCode, InvalidInput, MlportError, valid_name

__all__ = ["DeploymentRecord", "DeploymentStore", "HistoryEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploy_deployments (
    name TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    target TEXT NOT NULL,
    policy TEXT NOT NULL,
    trusted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deploy_deployments_model ON deploy_deployments (model);
CREATE TABLE IF NOT EXISTS deploy_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL,
    at REAL NOT NULL,
    by TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    policy TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deploy_history_deployment ON deploy_history (deployment, id);
"""

#: Most history entries returned in one listing.
MAX_HISTORY = 1000


@dataclass(frozen=True)
class DeploymentRecord:
    name: str
    target: Target
    policy: ScalePolicy
    trusted: bool
    created_at: float
    created_by: str
    updated_at: float

    @property
    def model(self) -> str:
        return self.target.model

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "target": self.target.to_json(),
                "policy": self.policy.to_json(), "trusted": self.trusted, "created_at": self.created_at,
                "created_by": self.created_by, "updated_at": self.updated_at}


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    deployment: str
    at: float
    by: str
    action: str
    target: Target
    policy: ScalePolicy
    #: The entry's place in its deployment's history, from 1 (``id`` counts over all deployments).
    number: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "number": self.number, "at": self.at, "by": self.by, "action": self.action,
                "target": self.target.to_json(), "policy": self.policy.to_json()}


def _not_found(name: str) -> MlportError:
    return MlportError(f"deployment {name!r} not found", ErrorCode.NOT_FOUND)


def _policy_from_json(text: str) -> ScalePolicy:
    return ScalePolicy.from_json(json.loads(text))


class DeploymentStore:
    """Deployments in the hub database (tables ``deploy_deployments`` and ``deploy_history``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate(_SCHEMA)
        #: The hub is the only writer, so the list is read once and dropped on every change (the gateway and
        #: the controller read it on each request and pass).
        self._cache: list[DeploymentRecord] | None = None

    # -- reading -----------------------------------------------------------------------------------------
    def deployments(self) -> list[DeploymentRecord]:
        cached = self._cache
        if cached is None:
            rows = self.db.all("SELECT * FROM deploy_deployments ORDER BY name")
            cached = self._cache = [self._record(r) for r in rows]
        return list(cached)

    def get(self, name: str) -> DeploymentRecord:
        row = self.db.one("SELECT * FROM deploy_deployments WHERE name = ?", (name,))
        if row is None:
            raise _not_found(name)
        return self._record(row)

    def find(self, name: str) -> DeploymentRecord | None:
        row = self.db.one("SELECT * FROM deploy_deployments WHERE name = ?", (name,))
        return self._record(row) if row is not None else None

    def using_model(self, model: str) -> list[str]:
        """Names of the deployments whose target serves a version of ``model``."""
        return [r["name"] for r in self.db.all("SELECT name FROM deploy_deployments WHERE model = ? ORDER BY name",
                                               (model,))]

    def history(self, name: str, limit: int = MAX_HISTORY) -> list[HistoryEntry]:
        self.get(name)
        # number: the entry's place in this deployment's own history (1 for its creation)
        rows = self.db.all("SELECT *, ROW_NUMBER() OVER (ORDER BY id) AS number FROM deploy_history "
                           "WHERE deployment = ? ORDER BY id DESC LIMIT ?", (name, max(1, min(limit, MAX_HISTORY))))
        return [self._entry(r) for r in rows]

    # -- changing ----------------------------------------------------------------------------------------
    def create(self, name: str, target: Target, policy: ScalePolicy, *, by: str,
               trusted: bool = False) -> DeploymentRecord:
        valid_name(name, "deployment")
        target.validate()
        now = time.time()
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM deploy_deployments WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"deployment {name!r} exists already")
            conn.execute(
                "INSERT INTO deploy_deployments (name, model, target, policy, trusted, created_at, created_by, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, target.model, json.dumps(target.to_json()), json.dumps(policy.to_json()), int(trusted), now,
                 by, now))
            self._log(conn, name, now, by, "create", target, policy)
        self._cache = None
        return self.get(name)

    def change(self, name: str, *, by: str, action: str, target: Target | None = None,
               policy: ScalePolicy | None = None) -> DeploymentRecord:
        """Set a new target and/or policy; the change is kept in the history."""
        now = time.time()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM deploy_deployments WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise _not_found(name)
            current = self._record(dict(row))
            new_target = target if target is not None else current.target
            new_policy = policy if policy is not None else current.policy
            new_target.validate()
            if new_target.model != current.model:
                raise InvalidInput(f"deployment {name!r} serves model {current.model!r}; "
                                   f"deploy {new_target.model!r} under another name")
            conn.execute("UPDATE deploy_deployments SET target = ?, policy = ?, updated_at = ? WHERE name = ?",
                         (json.dumps(new_target.to_json()), json.dumps(new_policy.to_json()), now, name))
            self._log(conn, name, now, by, action, new_target, new_policy)
        self._cache = None
        return self.get(name)

    def rollback_target(self, name: str) -> Target:
        """The target a rollback goes back to.

        While an experiment runs (canary, A/B, shadow) it ends it: the primary version serves everything.
        Otherwise it is the last earlier target whose primary version differs from the current one's,
        served alone.
        """
        current = self.get(name).target
        if current.strategy != "single":
            return Target(model=current.model, primary=current.primary)
        for entry in self.history(name):
            if entry.target.primary != current.primary:
                return Target(model=current.model, primary=entry.target.primary)
        raise InvalidInput(f"deployment {name!r} has no earlier version to roll back to")

    def delete(self, name: str, *, by: str) -> None:
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM deploy_deployments WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise _not_found(name)
            conn.execute("DELETE FROM deploy_history WHERE deployment = ?", (name,))
        self._cache = None

    # -- rows --------------------------------------------------------------------------------------------
    @staticmethod
    def _log(conn: Any, name: str, at: float, by: str, action: str, target: Target, policy: ScalePolicy) -> None:
        conn.execute("INSERT INTO deploy_history (deployment, at, by, action, target, policy) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (name, at, by, action, json.dumps(target.to_json()), json.dumps(policy.to_json())))

    @staticmethod
    def _record(row: dict[str, Any]) -> DeploymentRecord:
        return DeploymentRecord(name=row["name"], target=Target.from_json(json.loads(row["target"])),
                                policy=_policy_from_json(row["policy"]), trusted=bool(row["trusted"]),
                                created_at=row["created_at"], created_by=row["created_by"],
                                updated_at=row["updated_at"])

    @staticmethod
    def _entry(row: dict[str, Any]) -> HistoryEntry:
        return HistoryEntry(id=row["id"], deployment=row["deployment"], at=row["at"], by=row["by"],
                            action=row["action"], target=Target.from_json(json.loads(row["target"])),
                            policy=_policy_from_json(row["policy"]), number=int(row.get("number") or 0))
