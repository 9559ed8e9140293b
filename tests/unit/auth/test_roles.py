from __future__ import annotations

import pytest

from mlport.auth.roles import ROLES, Action, Principal, authorize, check_deployments, check_roles
from mlport.errors import Forbidden, InvalidInput


def principal(*roles: str, deployments: list[str] | None = None) -> Principal:
    return Principal(subject="someone", roles=frozenset(roles), token_id="t1", kind="user",
                     deployments=None if deployments is None else frozenset(deployments))


A = Action
ALLOWED: dict[str, set[Action]] = {
    "admin": {A.READ, A.WRITE_MODELS, A.DEPLOY, A.PREDICT, A.ADMIN},
    "deployer": {A.READ, A.WRITE_MODELS, A.DEPLOY, A.PREDICT},
    "viewer": {A.READ},
    "predictor": {A.PREDICT},
}


def test_role_table_is_the_documented_one() -> None:
    assert set(ROLES) == set(ALLOWED)
    for role, actions in ALLOWED.items():
        assert ROLES[role] == frozenset(actions)


@pytest.mark.parametrize("role", sorted(ALLOWED))
@pytest.mark.parametrize("action", list(Action))
def test_every_role_and_action(role: str, action: Action) -> None:
    p = principal(role)
    for deployment in (None, "dep-1"):
        if action in ALLOWED[role]:
            authorize(p, action, deployment)
            assert p.can(action, deployment)
        else:
            with pytest.raises(Forbidden):
                authorize(p, action, deployment)
            assert not p.can(action, deployment)


def test_limited_predictor() -> None:
    p = principal("predictor", deployments=["a"])
    authorize(p, Action.PREDICT, "a")
    with pytest.raises(Forbidden, match="'b'"):
        authorize(p, Action.PREDICT, "b")
    # a prediction that names no deployment fails closed for a limited principal
    with pytest.raises(Forbidden):
        authorize(p, Action.PREDICT)
    # the limit never widens the role
    with pytest.raises(Forbidden):
        authorize(p, Action.READ, "a")


def test_unlimited_predictor_may_predict_everywhere() -> None:
    p = principal("predictor")
    for d in ("a", "b", "iris-prod", "x" * 63):
        authorize(p, Action.PREDICT, d)
    authorize(p, Action.PREDICT)


def test_limit_applies_to_other_roles_too() -> None:
    p = principal("deployer", deployments=["a", "c"])
    authorize(p, Action.DEPLOY, "c")
    with pytest.raises(Forbidden):
        authorize(p, Action.DEPLOY, "b")
    authorize(p, Action.READ)  # listing names no deployment


def test_viewer_cannot_predict_or_write() -> None:
    p = principal("viewer")
    authorize(p, Action.READ)
    authorize(p, Action.READ, "a")
    for action in (Action.PREDICT, Action.WRITE_MODELS, Action.DEPLOY, Action.ADMIN):
        with pytest.raises(Forbidden):
            authorize(p, action, "a")


def test_roles_add_up_and_unknown_roles_grant_nothing() -> None:
    p = principal("viewer", "predictor")
    authorize(p, Action.READ)
    authorize(p, Action.PREDICT, "a")
    with pytest.raises(Forbidden):
        authorize(p, Action.DEPLOY)
    nobody = principal("root", "superuser")
    for action in Action:
        with pytest.raises(Forbidden):
            authorize(nobody, action)
    with pytest.raises(Forbidden):
        authorize(principal(), Action.READ)


def test_check_roles() -> None:
    assert check_roles(["viewer", "viewer", "predictor"]) == frozenset({"viewer", "predictor"})
    with pytest.raises(InvalidInput, match="unknown role"):
        check_roles(["viewer", "root"])
    with pytest.raises(InvalidInput, match="at least one"):
        check_roles([])
    with pytest.raises(InvalidInput):
        check_roles("admin")
    with pytest.raises(InvalidInput, match="too many"):
        check_roles(["viewer"] * 100)


def test_check_deployments() -> None:
    assert check_deployments(None) is None
    assert check_deployments(["a", "b", "a"]) == frozenset({"a", "b"})
    with pytest.raises(InvalidInput):
        check_deployments([])
    with pytest.raises(InvalidInput):
        check_deployments("a")
    with pytest.raises(InvalidInput):
        check_deployments(["../x"])
    with pytest.raises(InvalidInput, match="too many"):
        check_deployments([f"d{i}" for i in range(1000)])
