"""Kubernetes manifests: every core object validates against the official schemas (strict: unknown fields fail),
pods meet the restricted Pod Security profile, and strategies become the documented HTTPRoute forms."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlport.deploy.autoscale import ScalePolicy
from mlport.deploy.kubernetes import (
    GRPC_PORT,
    HTTP_PORT,
    ClusterPlan,
    Resources,
    VersionImage,
    cluster_serving_runtime,
    render,
    serve_args,
    to_yaml,
)
from mlport.deploy.target import Target
from mlport.errors import InvalidInput

K8S_VERSION = kubernetes_validate.latest_version()
IMAGES = {1: VersionImage("registry.example/iris:v1", "onnx", "s3://models/iris/1"),
          2: VersionImage("registry.example/iris:v2", "onnx", "s3://models/iris/2")}


def plan(strategy: str = "single", percent: float = 0.0, **policy: Any) -> ClusterPlan:
    candidate = None if strategy == "single" else 2
    target = Target(model="iris", primary=1, strategy=strategy, candidate=candidate, percent=percent)
    return ClusterPlan("iris-prod", target, ScalePolicy(**{"max_replicas": 4, **policy}), IMAGES)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("strategy", ["single", "canary", "ab", "shadow"])
def test_core_objects_validate_against_the_official_schemas(strategy: str) -> None:
    objects = render(plan(strategy, 20.0 if strategy in ("canary", "ab") else 0.0), "kubernetes")
    core = [o for o in objects if o["kind"] != "HTTPRoute"]
    assert {o["kind"] for o in core} == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for obj in core:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    versions = 1 if strategy == "single" else 2
    assert len(by_kind(objects, "Deployment")) == versions
    assert len(by_kind(objects, "Service")) == versions + 1
    assert len(by_kind(objects, "HTTPRoute")) == (0 if strategy == "single" else 1)


def test_an_unknown_field_fails_validation() -> None:
    """The check above can fail: strict validation refuses a field the schema does not have."""
    deployment = by_kind(render(plan(), "kubernetes"), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_pods_meet_the_restricted_profile_and_probe_the_oip_endpoints() -> None:
    deployment = by_kind(render(plan(), "kubernetes"), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert container["args"] == serve_args() == ["serve", "/models", "--host", "0.0.0.0", "--http-port",
                                                 str(HTTP_PORT), "--grpc-port", str(GRPC_PORT)]
    assert {p["containerPort"] for p in container["ports"]} == {HTTP_PORT, GRPC_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["resources"] == Resources().to_k8s()


def test_autoscaler_follows_the_scale_policy() -> None:
    objects = render(plan(min_replicas=2, max_replicas=6, target_inflight=3.5, scale_down_after_s=120), "kubernetes")
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-prod-v1"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    assert spec["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "3500m"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    assert by_kind(objects, "Deployment")[0]["spec"]["replicas"] == 2


def test_canary_weights_shadow_mirror_and_the_stable_service() -> None:
    route = by_kind(render(plan("canary", 20.0), "kubernetes"), "HTTPRoute")[0]
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [("iris-prod-v1", 8000), ("iris-prod-v2", 2000)]
    assert route["spec"]["parentRefs"] == [{"name": "mlport-gateway"}]
    shadow = render(plan("shadow"), "kubernetes")
    rule = by_kind(shadow, "HTTPRoute")[0]["spec"]["rules"][0]
    assert rule["backendRefs"] == [{"name": "iris-prod-v1", "port": HTTP_PORT}]
    assert rule["filters"][0]["requestMirror"]["backendRef"]["name"] == "iris-prod-v2"
    stable = next(s for s in by_kind(shadow, "Service") if s["metadata"]["name"] == "iris-prod")
    assert stable["spec"]["selector"]["mlport.dev/version"] == "1"


def test_kserve_objects() -> None:
    runtime, isvc = render(plan("canary", 25.0), "kserve")
    assert runtime["kind"] == "ClusterServingRuntime" and isvc["kind"] == "InferenceService"
    container = runtime["spec"]["containers"][0]
    assert container["args"] == serve_args("/mnt/models") and container["image"] == IMAGES[1].image
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 25
    assert predictor["model"]["storageUri"] == "s3://models/iris/2"  # the canary applies over the primary
    assert predictor["model"]["runtime"] == "mlport" and predictor["model"]["protocolVersion"] == "v2"
    assert predictor["minReplicas"] == 1 and predictor["maxReplicas"] == 4
    single = render(plan(min_replicas=0, scale_to_zero=True), "kserve")[1]["spec"]["predictor"]
    assert single["minReplicas"] == 0 and "canaryTrafficPercent" not in single


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "Iris"}, "not a Kubernetes name"),
    ({"name": "iris\nkind: Secret"}, "not a Kubernetes name"),
    ({"namespace": "a b"}, "not a Kubernetes name"),
    ({"versions": {1: VersionImage("reg/iris:v1; rm -rf /")}}, "image reference"),
    ({"versions": {}}, "no image for version 1"),
    ({"resources": Resources(cpu_request="lots")}, "cpu_request"),
])
def test_bad_plans_are_refused_with_the_value_named(change: dict[str, Any], message: str) -> None:
    base = plan()
    values = {"name": base.name, "target": base.target, "policy": base.policy, "versions": base.versions,
              "namespace": base.namespace, "resources": base.resources}
    with pytest.raises(InvalidInput, match=message):
        render(ClusterPlan(**{**values, **change}), "kubernetes")


def test_kserve_ab_is_two_inference_services_behind_a_splitter_graph() -> None:
    objects = render(plan("ab", 30.4), "kserve")
    assert [o["kind"] for o in objects] == ["ClusterServingRuntime", "InferenceService", "InferenceService",
                                            "InferenceGraph"]
    v1, v2, graph = objects[1:]
    assert (v1["metadata"]["name"], v2["metadata"]["name"]) == ("iris-prod-v1", "iris-prod-v2")
    for isvc, uri in ((v1, "s3://models/iris/1"), (v2, "s3://models/iris/2")):
        model = isvc["spec"]["predictor"]["model"]
        assert model["storageUri"] == uri and model["runtime"] == "mlport"
        # KServe's router posts to /v2/models/<InferenceService name>/infer: the model is served under that name
        assert model["args"] == ["--name", isvc["metadata"]["name"]]
        assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    assert graph["apiVersion"] == "serving.kserve.io/v1alpha1" and graph["metadata"]["name"] == "iris-prod"
    assert graph["spec"]["nodes"] == {"root": {"routerType": "Splitter", "steps": [
        {"name": "v1", "serviceName": "iris-prod-v1", "weight": 70},
        {"name": "v2", "serviceName": "iris-prod-v2", "weight": 30}]}}
    edge = render(plan("ab", 100.0), "kserve")[3]["spec"]["nodes"]["root"]["steps"]
    assert [s["weight"] for s in edge] == [0, 100]


def test_kserve_refuses_what_one_inference_service_cannot_express() -> None:
    with pytest.raises(InvalidInput, match=r"no 'shadow'.*RequestMirror"):
        render(plan("shadow"), "kserve")
    no_uri = ClusterPlan("iris", Target(model="iris", primary=1), ScalePolicy(), {1: VersionImage("reg/i:1")})
    with pytest.raises(InvalidInput, match="no storage URI"):
        render(no_uri, "kserve")
    with pytest.raises(InvalidInput, match="unknown target"):
        render(plan(), "nomad")


def test_yaml_round_trips() -> None:
    objects = render(plan("canary", 20.0), "kubernetes")
    assert list(yaml.safe_load_all(to_yaml(objects))) == objects
    assert yaml.safe_load(to_yaml([cluster_serving_runtime("reg/mlport:1", ["onnx"])]))["spec"][
        "supportedModelFormats"] == [{"name": "onnx", "version": "1", "autoSelect": True}]
