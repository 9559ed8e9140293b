"""Roles, actions and the one authorisation check of the hub.

A principal is whoever presented a verified token.  Each role grants a fixed set of actions; a principal may
additionally be limited to named deployments, in which case every action that targets a deployment is
refused for the others.  Unknown role names grant nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mlport.errors import Forbidden, InvalidInput, valid_name

__all__ = ["KINDS", "ROLES", "Action", "Principal", "authorize", "check_deployments", "check_roles"]


class Action(enum.Enum):
    """What a request wants to do; the hub maps every route to exactly one action."""

    READ = "read"                  # list and inspect models, versions and deployments
    WRITE_MODELS = "write_models"  # create/delete models, upload and register versions
    DEPLOY = "deploy"              # create/change/delete deployments, canary, promote, rollback, scale
    PREDICT = "predict"            # call a deployed model through the gateway
    ADMIN = "admin"                # users, service accounts, token revocation


ROLES: dict[str, frozenset[Action]] = {
    "admin": frozenset(Action),
    "deployer": frozenset({Action.READ, Action.WRITE_MODELS, Action.DEPLOY, Action.PREDICT}),
    "viewer": frozenset({Action.READ}),
    "predictor": frozenset({Action.PREDICT}),
}

#: Kinds of accounts: people who log in with a password, and service accounts that only hold issued tokens.
KINDS = ("user", "service")

MAX_ROLE_ITEMS = 16  # a role list given by a client is refused beyond this many entries
MAX_DEPLOYMENT_ITEMS = 64  # deployments a principal may be limited to (keeps its tokens well under 8 KiB)


@dataclass(frozen=True)
class Principal:
    """The verified identity behind a request."""

    subject: str
    roles: frozenset[str]
    deployments: frozenset[str] | None  # None: not limited to named deployments
    token_id: str
    kind: str  # "user" | "service"

    def actions(self) -> frozenset[Action]:
        """Every action any of the principal's roles grants."""
        granted: set[Action] = set()
        for role in self.roles:
            granted |= ROLES.get(role, frozenset())
        return frozenset(granted)

    def can(self, action: Action, deployment: str | None = None) -> bool:
        try:
            authorize(self, action, deployment)
        except Forbidden:
            return False
        return True


def authorize(p: Principal, action: Action, deployment: str | None = None) -> None:
    """Raise :class:`Forbidden` unless ``p`` may do ``action`` (on ``deployment`` when one is named).

    A principal limited to named deployments may act on those only; a prediction by such a principal must name
    its deployment, so a caller that forgets to pass it fails closed.
    """
    if action not in p.actions():
        raise Forbidden(f"{p.subject!r} may not {action.value.replace('_', ' ')}")
    if p.deployments is None:
        return
    if deployment is None:
        if action is Action.PREDICT:
            raise Forbidden(f"{p.subject!r} may only predict on named deployments")
        return
    if deployment not in p.deployments:
        raise Forbidden(f"{p.subject!r} may not use deployment {deployment!r}")


def _name_set(items: Iterable[str], what: str, limit: int, check: Callable[[Any], str], empty: str) -> frozenset[str]:
    """A client's list of names as a set: a list (not one string), at most ``limit`` names, each checked."""
    if isinstance(items, str):
        raise InvalidInput(f"{what}s must be a list of {what} names")
    out: set[str] = set()
    for i, item in enumerate(items):
        if i >= limit:
            raise InvalidInput(f"too many {what}s: at most {limit}")
        out.add(check(item))
    if not out:
        raise InvalidInput(empty)
    return frozenset(out)


def _known_role(role: Any) -> str:
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidInput(f"unknown role {str(role)[:40]!r}: use one of {', '.join(sorted(ROLES))}")
    return role


def check_roles(roles: Iterable[str]) -> frozenset[str]:
    """Validate role names given by a client: at least one, all known."""
    return _name_set(roles, "role", MAX_ROLE_ITEMS, _known_role, "at least one role is needed")


def check_deployments(deployments: Iterable[str] | None) -> frozenset[str] | None:
    """Validate a deployment limit: ``None`` means all deployments; otherwise 1..MAX names, each valid."""
    if deployments is None:
        return None
    return _name_set(deployments, "deployment", MAX_DEPLOYMENT_ITEMS, lambda n: valid_name(n, "deployment"),
                     "an empty deployment list allows nothing: leave it out to allow all deployments")
