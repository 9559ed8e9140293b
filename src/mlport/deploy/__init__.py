"""Deployments: what to serve (targets and routing), how many replicas (autoscaling), and the processes.

- :mod:`mlport.deploy.target`, :mod:`mlport.deploy.strategy`, :mod:`mlport.deploy.autoscale`: pure policies.
- :mod:`mlport.deploy.replicas`: ``mlport serve`` processes of one artifact.
- :mod:`mlport.deploy.controller`: the loop that keeps the replicas in line with the deployments.
"""

from __future__ import annotations

from mlport.deploy.autoscale import LoadSample, ScalePolicy, desired_replicas
from mlport.deploy.controller import Controller
from mlport.deploy.deployments import Deployment, DeploymentSource, DeploymentSpec
from mlport.deploy.replicas import Endpoint, ReplicaSet
from mlport.deploy.strategy import Choice, choose
from mlport.deploy.target import Target

__all__ = [
    "Choice",
    "Controller",
    "Deployment",
    "DeploymentSource",
    "DeploymentSpec",
    "Endpoint",
    "LoadSample",
    "ReplicaSet",
    "ScalePolicy",
    "Target",
    "choose",
    "desired_replicas",
]
