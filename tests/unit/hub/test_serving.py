"""A deployment's loading options: stored, changed field by field, checked against the gateway's timeout, and the
``mlport serve`` flags of its replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlport.core.sqlitedb import Database
from mlport.errors import InvalidInput
from mlport.hub.serving import DeploymentServing, ServingOptions


def test_options_are_kept_changed_by_field_and_become_replica_flags(tmp_path: Path) -> None:
    serving = DeploymentServing(Database(tmp_path / "hub.db"), gateway_timeout_s=60)
    assert serving.get("prod") == ServingOptions() and serving.replica_args("prod") == []
    serving.set("prod", serving.checked("prod", True, None))
    assert serving.replica_args("prod") == ["--lazy", "--load-timeout", "30.0"]  # the default, within the gateway's
    serving.set("prod", serving.checked("prod", None, 12.5))  # lazy is kept when left out
    assert serving.get("prod") == ServingOptions(True, 12.5)
    assert serving.replica_args("prod") == ["--lazy", "--load-timeout", "12.5"]
    # stored: another hub on the same database reads them
    assert DeploymentServing(Database(tmp_path / "hub.db"), 60).get("prod") == ServingOptions(True, 12.5)
    serving.set("prod", serving.checked("prod", False, None))
    assert serving.replica_args("prod") == []  # eager replicas take no load timeout
    serving.forget("prod")
    assert serving.get("prod") == ServingOptions()


def test_a_load_timeout_the_gateway_would_not_wait_for_is_refused() -> None:
    serving = DeploymentServing(Database(":memory:"), gateway_timeout_s=20)
    assert serving.load_timeout_s(ServingOptions(True)) == 16.0  # the default shrinks with a short gateway timeout
    with pytest.raises(InvalidInput, match=r"load_timeout_s 17 is too long.*at most 16 s"):
        serving.checked("prod", True, 17)
    assert serving.checked("prod", True, 16).load_timeout_s == 16
