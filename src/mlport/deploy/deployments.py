"""What the deployment machinery reads of a deployment, and where it reads the deployments from.

The controller and the gateway both read deployments through :class:`Deployment` and
:class:`DeploymentSource`; the hub's store (:class:`mlport.hub.state.DeploymentStore`, whose records carry
history too) is one source, and :class:`DeploymentSpec` is the plain record for any other (tests, tools).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.target import Target

__all__ = ["Deployment", "DeploymentSource", "DeploymentSpec"]


class Deployment(Protocol):
    """One deployment: its name, what it serves (the target), how it scales, and whether its model is trusted."""

    @property
    def name(self) -> str: ...

    @property
    def target(self) -> Target: ...

    @property
    def policy(self) -> ScalePolicy: ...

    @property
    def trusted(self) -> bool: ...


class DeploymentSource(Protocol):
    """Where the deployments are read from (the hub's deployment store)."""

    def deployments(self) -> Sequence[Deployment]: ...


@dataclass(frozen=True)
class DeploymentSpec:
    """A plain :class:`Deployment`."""

    name: str
    target: Target
    policy: ScalePolicy = field(default_factory=ScalePolicy)
    trusted: bool = False
