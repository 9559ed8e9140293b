"""How a deployment's replicas load their model: eagerly at start (the default) or on the first request (lazy).

A lazy replica starts without loading its model and reports ready at once (its strict readiness counts a model
waiting for its first request as serving); the first request through the gateway loads it, and the requests
that come meanwhile wait for that one load up to the replica's load timeout, then get its ``503`` with
``Retry-After``, which the gateway passes on.  The gateway sends a request again only when no byte of an answer
came (a connection failure), never one a replica accepted, so waiting for a cold load never starts a second
one; and the load timeout stays below the gateway's own timeout, so the replica's answer always arrives first.

The options are stored in the hub database (table ``deploy_serving``); the replicas are ``mlport serve``
processes with their own flags, so a change starts them again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mlport.core.sqlitedb import Database
from mlport.errors import InvalidInput

__all__ = ["DEFAULT_LOAD_TIMEOUT_S", "DeploymentServing", "ServingOptions"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deploy_serving (
    deployment TEXT PRIMARY KEY,
    lazy INTEGER NOT NULL DEFAULT 0,
    load_timeout_s REAL,
    updated_at REAL NOT NULL
);
"""

#: A lazy replica's load timeout when none is given: ``mlport serve``'s default, within the gateway's timeout.
DEFAULT_LOAD_TIMEOUT_S = 30.0
#: The share of the gateway's timeout a replica's load timeout may use (the rest carries the 503 back).
GATEWAY_SHARE = 0.8


@dataclass(frozen=True)
class ServingOptions:
    """A deployment's loading options (``load_timeout_s`` None: the default)."""

    lazy: bool = False
    load_timeout_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"lazy": self.lazy, "load_timeout_s": self.load_timeout_s}


class DeploymentServing:
    """The loading options of every deployment, and the replica flags they become."""

    def __init__(self, db: Database, gateway_timeout_s: float) -> None:
        self.db = db
        self.gateway_timeout_s = float(gateway_timeout_s)
        db.migrate(_SCHEMA)
        self._cache: dict[str, ServingOptions] | None = None

    def _all(self) -> dict[str, ServingOptions]:
        cached = self._cache
        if cached is None:
            rows = self.db.all("SELECT deployment, lazy, load_timeout_s FROM deploy_serving")
            cached = self._cache = {r["deployment"]: ServingOptions(bool(r["lazy"]), r["load_timeout_s"])
                                    for r in rows}
        return cached

    def get(self, name: str) -> ServingOptions:
        return self._all().get(name, ServingOptions())

    def checked(self, name: str, lazy: bool | None, load_timeout_s: float | None) -> ServingOptions:
        """The deployment's options with the fields given changed (None keeps the current value), checked."""
        now = self.get(name)
        new = ServingOptions(now.lazy if lazy is None else lazy,
                             now.load_timeout_s if load_timeout_s is None else load_timeout_s)
        limit = self.gateway_timeout_s * GATEWAY_SHARE
        if new.load_timeout_s is not None and new.load_timeout_s > limit:
            raise InvalidInput(f"load_timeout_s {new.load_timeout_s:g} is too long: a request through the gateway "
                               f"waits at most {self.gateway_timeout_s:g} s (the hub's gateway_timeout_s), so a "
                               f"replica's load timeout may be at most {limit:g} s")
        return new

    def set(self, name: str, options: ServingOptions) -> None:
        if options == ServingOptions():
            self.db.execute("DELETE FROM deploy_serving WHERE deployment = ?", (name,))
        else:
            self.db.execute("INSERT OR REPLACE INTO deploy_serving (deployment, lazy, load_timeout_s, updated_at) "
                            "VALUES (?, ?, ?, ?)", (name, int(options.lazy), options.load_timeout_s, time.time()))
        self._cache = None

    def forget(self, name: str) -> None:
        self.set(name, ServingOptions())

    def load_timeout_s(self, options: ServingOptions) -> float:
        """The load timeout a lazy replica gets: the one given, or the default within the gateway's timeout."""
        if options.load_timeout_s is not None:
            return options.load_timeout_s
        return min(DEFAULT_LOAD_TIMEOUT_S, self.gateway_timeout_s * GATEWAY_SHARE)

    def replica_args(self, name: str) -> list[str]:
        """The ``mlport serve`` flags of the deployment's replicas (none when it loads eagerly)."""
        options = self.get(name)
        if not options.lazy:
            return []
        return ["--lazy", "--load-timeout", repr(self.load_timeout_s(options))]
