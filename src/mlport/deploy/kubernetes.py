"""Kubernetes and KServe manifests for a deployment.  Pure functions: a :class:`ClusterPlan` in, plain dicts out.

The container contract is the image's (see :data:`HTTP_PORT`, :data:`GRPC_PORT`, :func:`serve_args`): the runtime
listens on all interfaces, HTTP on 8080 and gRPC on 8081, as uid 1000, with a writable ``/tmp`` only.

- ``kubernetes``: per served version a Deployment (OIP live/ready probes, resources, the restricted Pod Security
  profile) and a Service; for the deployment a Service on the primary version, a HorizontalPodAutoscaler
  (autoscaling/v2) and a PodDisruptionBudget per version, and for a canary, A/B or shadow strategy a Gateway API
  ``HTTPRoute`` (``gateway.networking.k8s.io/v1``): backend weights for canary and A/B, a ``RequestMirror``
  filter for shadow.
- ``kserve``: the ``ClusterServingRuntime`` for mlport (:func:`cluster_serving_runtime`) and an
  ``InferenceService`` whose predictor uses it, with ``canaryTrafficPercent`` for a canary; for A/B an
  ``InferenceService`` per version and an ``InferenceGraph`` (``serving.kserve.io/v1alpha1``) whose ``Splitter``
  root node sends each request to one of them by weight.  KServe has no mirroring, so shadow is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from mlport.core.imageref import check_image_ref
from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.target import Target
from mlport.errors import InvalidInput

__all__ = [
    "GRPC_PORT",
    "HTTP_PORT",
    "KSERVE_MODEL_DIR",
    "MODEL_DIR",
    "RUNTIME_NAME",
    "TARGETS",
    "ClusterPlan",
    "Resources",
    "VersionImage",
    "cluster_serving_runtime",
    "render",
    "serve_args",
    "to_yaml",
]

HTTP_PORT = 8080
GRPC_PORT = 8081
#: Where a model image holds its model (the image's own default argument).
MODEL_DIR = "/models"
#: Where KServe's storage initializer puts the model.
KSERVE_MODEL_DIR = "/mnt/models"
#: The name of mlport's ClusterServingRuntime.
RUNTIME_NAME = "mlport"
TARGETS = ("kubernetes", "kserve")
#: The uid and gid the image runs as.
RUN_AS = 1000
#: Model formats the runtime advertises to KServe (names from KServe's own runtimes where they exist).
KSERVE_FORMATS = ("onnx", "pmml", "tensorflow", "keras", "sklearn", "xgboost", "lightgbm", "pytorch", "mlport")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?")
_LABEL_PREFIX = "mlport.dev"


@dataclass(frozen=True)
class Resources:
    """CPU and memory requests and limits of one replica (Kubernetes quantities)."""

    cpu_request: str = "500m"
    memory_request: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"

    def validate(self) -> Resources:
        for name in ("cpu_request", "memory_request", "cpu_limit", "memory_limit"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
                raise InvalidInput(f"{name} must be a Kubernetes quantity such as 500m, 2 or 512Mi, not {value!r}")
        return self

    def to_k8s(self) -> dict[str, Any]:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}


@dataclass(frozen=True)
class VersionImage:
    """How one model version runs: its image, its format and (for KServe) where its artifact is stored."""

    image: str
    format: str = "onnx"
    storage_uri: str | None = None


@dataclass(frozen=True)
class ClusterPlan:
    """Everything a renderer needs: the deployment's name, target and scale policy, and each version's image."""

    name: str
    target: Target
    policy: ScalePolicy
    versions: Mapping[int, VersionImage]
    namespace: str = "default"
    resources: Resources = field(default_factory=Resources)
    #: The Gateway (Gateway API) that canary/A-B/shadow routes attach to.
    gateway: str = "mlport-gateway"
    #: The runtime-only image for KServe (defaults to the primary version's image).
    runtime_image: str | None = None

    def validate(self) -> ClusterPlan:
        for what, value in (("deployment name", self.name), ("namespace", self.namespace),
                            ("gateway", self.gateway)):
            _dns_label(value, what)
        _dns_label(_version_name(self.name, max(self.target.versions())), "deployment name with its version")
        self.target.validate()
        self.policy.validate()
        self.resources.validate()
        for version in self.target.versions():
            spec = self.versions.get(version)
            if spec is None:
                raise InvalidInput(f"no image for version {version} of deployment {self.name!r}")
            _image(spec.image)
        if self.runtime_image is not None:
            _image(self.runtime_image)
        return self


def serve_args(model_dir: str = MODEL_DIR) -> list[str]:
    """The arguments of the image's ``mlport`` entrypoint that serve ``model_dir`` on the container's ports."""
    return ["serve", model_dir, "--host", "0.0.0.0", "--http-port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT)]


def render(plan: ClusterPlan, target: str) -> list[dict[str, Any]]:
    """The objects for ``target`` (``kubernetes`` or ``kserve``), in the order they should be applied."""
    plan.validate()
    if target == "kubernetes":
        return _kubernetes(plan)
    if target == "kserve":
        image = plan.runtime_image or plan.versions[plan.target.primary].image
        formats = sorted({plan.versions[v].format for v in plan.target.versions()})
        runtime = cluster_serving_runtime(image, formats)
        if plan.target.strategy == "ab":
            return [runtime, *_ab_graph(plan)]
        return [runtime, _inference_service(plan)]
    raise InvalidInput(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, as ``kubectl apply -f`` reads it."""
    return yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False, default_flow_style=False)


# --- kubernetes -------------------------------------------------------------------------------------------------

def _kubernetes(plan: ClusterPlan) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for version in plan.target.versions():
        objects += [_deployment(plan, version), _service(plan, _version_name(plan.name, version), version),
                    _autoscaler(plan, version), _disruption_budget(plan, version)]
    objects.append(_service(plan, plan.name, plan.target.primary))
    if plan.target.candidate is not None and plan.target.strategy != "single":
        objects.append(_http_route(plan))
    return objects


def _labels(plan: ClusterPlan, version: int | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "mlport", "app.kubernetes.io/instance": plan.name,
              "app.kubernetes.io/managed-by": "mlport", f"{_LABEL_PREFIX}/model": plan.target.model}
    if version is not None:
        labels[f"{_LABEL_PREFIX}/version"] = str(version)
    return labels


def _selector(plan: ClusterPlan, version: int) -> dict[str, str]:
    return {"app.kubernetes.io/instance": plan.name, f"{_LABEL_PREFIX}/version": str(version)}


def _meta(plan: ClusterPlan, name: str, version: int | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": plan.namespace, "labels": _labels(plan, version)}


def _deployment(plan: ClusterPlan, version: int) -> dict[str, Any]:
    name = _version_name(plan.name, version)
    spec = plan.versions[version]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(plan, name, version),
        "spec": {
            "replicas": max(plan.policy.min_replicas, 1),
            "selector": {"matchLabels": _selector(plan, version)},
            "template": {
                "metadata": {"labels": _labels(plan, version),
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": _pod_spec(plan, spec.image, serve_args(MODEL_DIR)),
            },
        },
    }


def _pod_spec(plan: ClusterPlan, image: str, args: list[str]) -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "containers": [_container(plan, image, args)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }


def _container(plan: ClusterPlan, image: str, args: list[str]) -> dict[str, Any]:
    return {
        "name": "mlport", "image": image, "args": args,
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}],
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}],
        "resources": plan.resources.to_k8s(),
        "startupProbe": _probe("/v2/health/ready", period=2, failures=150),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2,
            "failureThreshold": failures}


def _service(plan: ClusterPlan, name: str, version: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(plan, name, version),
        "spec": {"selector": _selector(plan, version),
                 "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                           {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                            "appProtocol": "kubernetes.io/h2c"}]},
    }


def _autoscaler(plan: ClusterPlan, version: int) -> dict[str, Any]:
    """Scales on requests in flight per pod (the hub's own signal, through a custom-metrics adapter such as
    prometheus-adapter serving ``mlport_inflight_requests``) and on CPU; the HPA follows the larger of the two."""
    name = _version_name(plan.name, version)
    policy = plan.policy
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(plan, name, version),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": max(policy.min_replicas, 1), "maxReplicas": max(policy.max_replicas, 1),
            "metrics": [
                {"type": "Pods", "pods": {"metric": {"name": "mlport_inflight_requests"},
                                          "target": {"type": "AverageValue",
                                                     "averageValue": _milli(policy.target_inflight)}}},
                {"type": "Resource", "resource": {"name": "cpu",
                                                  "target": {"type": "Utilization", "averageUtilization": 80}}},
            ],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": int(policy.scale_up_after_s)},
                "scaleDown": {"stabilizationWindowSeconds": int(policy.scale_down_after_s),
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
            },
        },
    }


def _disruption_budget(plan: ClusterPlan, version: int) -> dict[str, Any]:
    name = _version_name(plan.name, version)
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(plan, name, version),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(plan, version)}}}


def _http_route(plan: ClusterPlan) -> dict[str, Any]:
    target = plan.target
    assert target.candidate is not None
    primary, candidate = _version_name(plan.name, target.primary), _version_name(plan.name, target.candidate)
    rule: dict[str, Any]
    if target.strategy == "shadow":
        rule = {"backendRefs": [_backend(primary)],
                "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": _backend(candidate)}}]}
    else:
        share = round(target.percent * 100)  # weights are integers: per ten thousand keeps two decimals
        rule = {"backendRefs": [_backend(primary, 10_000 - share), _backend(candidate, share)]}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": _meta(plan, plan.name),
            "spec": {"parentRefs": [{"name": plan.gateway}], "rules": [rule]}}


def _backend(service: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": service, "port": HTTP_PORT}
    if weight is not None:
        ref["weight"] = weight
    return ref


# --- kserve -----------------------------------------------------------------------------------------------------

def cluster_serving_runtime(image: str, formats: Iterable[str] = KSERVE_FORMATS) -> dict[str, Any]:
    """mlport as a KServe ``ClusterServingRuntime``: Open Inference Protocol v2 over REST and gRPC, models from
    ``/mnt/models`` (filled by KServe's storage initializer)."""
    _image(image)
    names = sorted(set(formats))
    return {
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime",
        "metadata": {"name": RUNTIME_NAME, "labels": {"app.kubernetes.io/name": "mlport"}},
        "spec": {
            "annotations": {"prometheus.kserve.io/port": str(HTTP_PORT), "prometheus.kserve.io/path": "/metrics"},
            "supportedModelFormats": [{"name": n, "version": "1", "autoSelect": True} for n in names],
            "protocolVersions": ["v2", "grpc-v2"],
            "multiModel": False,
            "containers": [{
                "name": "kserve-container", "image": image, "args": serve_args(KSERVE_MODEL_DIR),
                "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "resources": Resources().to_k8s(),
                "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": RUN_AS,
                                    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
            }],
        },
    }


def _inference_service(plan: ClusterPlan) -> dict[str, Any]:
    """One InferenceService.  KServe's canary routes ``canaryTrafficPercent`` to the latest rolled-out spec and the
    rest to the previous one, so a canary manifest names the candidate and is applied over the primary's."""
    target = plan.target
    if target.strategy == "shadow":
        raise InvalidInput("KServe has no 'shadow' (traffic mirroring): an InferenceGraph's Ensemble would answer "
                           "with both versions' outputs, not mirror one; render the 'kubernetes' target, whose "
                           "HTTPRoute mirrors requests with a Gateway API RequestMirror filter")
    version = target.candidate if target.strategy == "canary" and target.candidate is not None else target.primary
    predictor = _predictor(plan, version)
    if target.strategy == "canary":
        predictor["canaryTrafficPercent"] = round(target.percent)
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {**_meta(plan, plan.name, version),
                         "annotations": {f"{_LABEL_PREFIX}/primary-version": str(target.primary)}},
            "spec": {"predictor": predictor}}


def _predictor(plan: ClusterPlan, version: int, model_name: str | None = None) -> dict[str, Any]:
    spec = plan.versions[version]
    if not spec.storage_uri:
        raise InvalidInput(f"version {version} has no storage URI: KServe's storage initializer needs one "
                           "(an s3:// or gs:// URI, or pvc://)")
    model: dict[str, Any] = {"modelFormat": {"name": spec.format}, "runtime": RUNTIME_NAME, "protocolVersion": "v2",
                             "storageUri": spec.storage_uri, "resources": plan.resources.to_k8s()}
    if model_name is not None:
        model["args"] = ["--name", model_name]  # appended to the runtime's args by KServe
    return {
        "minReplicas": plan.policy.min_replicas if plan.policy.scale_to_zero else max(plan.policy.min_replicas, 1),
        "maxReplicas": max(plan.policy.max_replicas, 1),
        "model": model,
    }


def _ab_graph(plan: ClusterPlan) -> list[dict[str, Any]]:
    """A/B on KServe: an InferenceService per version and an InferenceGraph whose root ``Splitter`` sends each
    request to one of them at random by weight (whole percents summing to 100; no sticky key).  The graph's router
    posts to ``/v2/models/<InferenceService name>/infer`` (KServe names the model after the InferenceService when
    its args give no ``--model_name``), so each version serves its model under that name (``--name``)."""
    target = plan.target
    assert target.candidate is not None
    share = round(target.percent)
    objects: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for version, weight in ((target.primary, 100 - share), (target.candidate, share)):
        name = _version_name(plan.name, version)
        objects.append({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                        "metadata": _meta(plan, name, version), "spec": {"predictor": _predictor(plan, version, name)}})
        steps.append({"name": f"v{version}", "serviceName": name, "weight": weight})
    objects.append({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
                    "metadata": {**_meta(plan, plan.name),
                                 "annotations": {f"{_LABEL_PREFIX}/primary-version": str(target.primary)}},
                    "spec": {"nodes": {"root": {"routerType": "Splitter", "steps": steps}}}})
    return objects


# --- checks -----------------------------------------------------------------------------------------------------

def _version_name(name: str, version: int) -> str:
    return f"{name}-v{version}"


def _dns_label(value: str, what: str) -> str:
    if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
        raise InvalidInput(f"{what} {value!r} is not a Kubernetes name (lower-case letters, digits and '-', "
                           "at most 63, starting and ending with a letter or digit)")
    return value


def _image(value: str) -> str:
    return check_image_ref(value)


def _milli(value: float) -> str:
    return f"{round(value * 1000)}m"
