"""The stored deployments: history of every change and what a rollback goes back to."""

from __future__ import annotations

import pytest

from mlport.core.sqlitedb import Database
from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.target import Target
from mlport.errors import Conflict, InvalidInput, MlportError
from mlport.hub.state import DeploymentStore


@pytest.fixture
def store() -> DeploymentStore:
    return DeploymentStore(Database(":memory:"))


def single(v: int) -> Target:
    return Target(model="iris", primary=v)


def test_create_change_history(store: DeploymentStore) -> None:
    store.create("prod", single(1), ScalePolicy(), by="ann")
    with pytest.raises(Conflict):
        store.create("prod", single(1), ScalePolicy(), by="ann")
    with pytest.raises(InvalidInput):
        store.create("Bad Name", single(1), ScalePolicy(), by="ann")
    canary = Target(model="iris", primary=1, strategy="canary", candidate=2, percent=20)
    store.change("prod", by="bob", action="canary v2", target=canary)
    store.change("prod", by="bob", action="scale", policy=ScalePolicy(min_replicas=2, max_replicas=4))
    record = store.get("prod")
    assert record.target == canary and record.policy.max_replicas == 4
    history = store.history("prod")
    assert [(e.action, e.by) for e in history] == [("scale", "bob"), ("canary v2", "bob"), ("create", "ann")]
    assert history[-1].target == single(1)
    with pytest.raises(InvalidInput):
        store.change("prod", by="bob", action="x", target=Target(model="other", primary=1))
    assert store.using_model("iris") == ["prod"] and store.using_model("other") == []


def test_rollback_ends_an_experiment_then_goes_back_a_version(store: DeploymentStore) -> None:
    store.create("prod", single(1), ScalePolicy(), by="ann")
    with pytest.raises(InvalidInput):
        store.rollback_target("prod")  # nothing earlier
    store.change("prod", by="ann", action="canary", target=Target(model="iris", primary=1, strategy="canary",
                                                                 candidate=2, percent=20))
    assert store.rollback_target("prod") == single(1)  # the canary is dropped
    store.change("prod", by="ann", action="promote", target=single(2))
    assert store.rollback_target("prod") == single(1)  # back to the version served before
    store.change("prod", by="ann", action="rollback", target=single(1))
    assert store.rollback_target("prod") == single(2)  # a second rollback undoes the first


def test_delete(store: DeploymentStore) -> None:
    store.create("prod", single(1), ScalePolicy(), by="ann")
    store.delete("prod", by="ann")
    with pytest.raises(MlportError) as err:
        store.get("prod")
    assert "not found" in str(err.value)
    with pytest.raises(MlportError):
        store.delete("prod", by="ann")
    assert store.deployments() == []
