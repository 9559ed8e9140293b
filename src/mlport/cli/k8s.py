"""``mlport k8s render`` (Kubernetes or KServe manifests for an image) and ``mlport k8s runtime`` (mlport as a
KServe ClusterServingRuntime)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_k8s_command"]

_EXAMPLES = """examples:
  mlport k8s runtime --image registry.example.com/mlport:0.1.0 > runtime.yaml
  mlport k8s render --name iris --image registry.example.com/iris:v1 --max-replicas 4 | kubectl apply -f -
  mlport k8s render --name iris --image reg/iris:v1 --canary reg/iris:v2 --percent 20 | kubectl apply -f -
  mlport k8s render --name iris --target kserve --image reg/mlport:0.1.0 --storage-uri s3://models/iris/1
  mlport k8s render --name iris --target kserve --image reg/mlport:0.1.0 --storage-uri s3://models/iris/1 \
      --ab reg/mlport:0.1.0 --candidate-storage-uri s3://models/iris/2 --percent 30   # an InferenceGraph
  mlport k8s render iris-prod | kubectl apply -f -                # a hub deployment, with its recorded images
  mlport k8s render iris-prod --target kserve --image reg/mlport:0.1.0
"""


def add_k8s_command(sub: Any) -> None:
    k8s = sub.add_parser("k8s", help="write Kubernetes or KServe manifests for a model image",
                         description="Write manifests to apply with `kubectl apply -f`.", epilog=_EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = k8s.add_subparsers(dest="k8s_action", required=True)
    runtime = actions.add_parser("runtime", help="print mlport's KServe ClusterServingRuntime",
                                 epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    runtime.add_argument("--image", required=True, help="the runtime image (built with `mlport build --runtime-only`)")
    runtime.add_argument("--format", dest="formats", action="append", metavar="NAME",
                         help="a model format to advertise (repeatable; default: every format mlport serves)")
    runtime.add_argument("-o", "--output", dest="file", type=Path,
                         help="write to this file instead of standard output")
    runtime.set_defaults(func=_cmd_runtime)
    render = actions.add_parser("render", help="print the manifests of one deployment",
                                epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _render_args(render)
    render.set_defaults(func=_cmd_render)


def _render_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("deployment", nargs="?",
                   help="a hub deployment to render (with its versions' recorded images); or give --name and --image")
    p.add_argument("--hub", help="hub URL for a hub deployment (default: the saved login or MLPORT_HUB_URL)")
    p.add_argument("--token", help="bearer token for the hub (default: MLPORT_HUB_TOKEN or the saved login)")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the hub's answer")
    p.add_argument("--ca", metavar="PEM", help="CA certificate to verify an https:// hub with (default: MLPORT_CA)")
    p.add_argument("--name", help="the deployment's name (a Kubernetes name: a-z, 0-9, '-') for --image")
    p.add_argument("--target", choices=["kubernetes", "kserve"], default="kubernetes",
                   help="plain Kubernetes objects (default) or a KServe InferenceService (with --ab: one per "
                        "version behind an InferenceGraph)")
    p.add_argument("--image", help="image of the primary version (kserve: the runtime image)")
    p.add_argument("--model", help="model name used in labels (default: the deployment's name)")
    p.add_argument("--version", type=int, default=1, help="the primary version's number (default 1)")
    p.add_argument("--format", default="onnx", help="the model's format (default onnx; kserve's modelFormat)")
    p.add_argument("--storage-uri", help="kserve: where the primary version's artifact is (s3://..., pvc://...)")
    second = p.add_mutually_exclusive_group()
    second.add_argument("--canary", metavar="IMAGE", help="image of a candidate version taking --percent of traffic")
    second.add_argument("--ab", metavar="IMAGE", help="image of a B version taking --percent of traffic")
    second.add_argument("--shadow", metavar="IMAGE", help="image of a version that receives a mirror of traffic")
    p.add_argument("--candidate-version", type=int, help="the candidate's version number (default: --version + 1)")
    p.add_argument("--candidate-storage-uri", help="kserve: where the candidate's artifact is")
    p.add_argument("--percent", type=float, default=10.0, help="candidate share for --canary/--ab (default 10)")
    p.add_argument("--min-replicas", type=int, default=1, help="fewest replicas per version (default 1)")
    p.add_argument("--max-replicas", type=int, default=1, help="most replicas per version (default 1)")
    p.add_argument("--target-inflight", type=float, default=4.0,
                   help="requests in flight per replica above which the autoscaler adds one (default 4)")
    p.add_argument("--cpu", default="500m", help="CPU request per replica (default 500m)")
    p.add_argument("--cpu-limit", default="2", help="CPU limit per replica (default 2)")
    p.add_argument("--memory", default="512Mi", help="memory request per replica (default 512Mi)")
    p.add_argument("--memory-limit", default="2Gi", help="memory limit per replica (default 2Gi)")
    p.add_argument("--namespace", default="default", help="namespace of the objects (default 'default')")
    p.add_argument("--gateway", default="mlport-gateway",
                   help="Gateway API gateway the canary/A-B/shadow HTTPRoute attaches to (default mlport-gateway)")
    p.add_argument("-o", "--output", dest="file", type=Path, help="write to this file instead of standard output")


def _plan(args: argparse.Namespace) -> Any:
    from mlport.deploy.autoscale import ScalePolicy
    from mlport.deploy.kubernetes import ClusterPlan, Resources, VersionImage
    from mlport.deploy.target import Target

    strategy, image = "single", None
    for name in ("canary", "ab", "shadow"):
        if getattr(args, name):
            strategy, image = name, getattr(args, name)
    versions = {args.version: VersionImage(args.image, args.format, args.storage_uri)}
    candidate = None
    if image is not None:
        candidate = args.candidate_version or args.version + 1
        versions[candidate] = VersionImage(image, args.format, args.candidate_storage_uri)
    target = Target(model=args.model or args.name, primary=args.version, strategy=strategy, candidate=candidate,
                    percent=args.percent if strategy in ("canary", "ab") else 0.0)
    policy = ScalePolicy(min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                         target_inflight=args.target_inflight, scale_to_zero=args.min_replicas == 0)
    resources = Resources(args.cpu, args.memory, args.cpu_limit, args.memory_limit)
    return ClusterPlan(args.name, target, policy, versions, namespace=args.namespace, resources=resources,
                       gateway=args.gateway, runtime_image=args.image if args.target == "kserve" else None)


def _cmd_render(args: argparse.Namespace) -> int:
    from mlport.deploy.kubernetes import render, to_yaml
    from mlport.errors import InvalidInput

    if args.deployment is not None:
        if args.name is not None:
            raise InvalidInput("give a hub DEPLOYMENT, or --name and --image for an image (not both)")
        from mlport.cli.hubclient import guard
        from mlport.cli.hubjobs import render_from_hub

        args.output = "text"
        return guard(render_from_hub)(args)
    if args.name is None or args.image is None:
        raise InvalidInput("give a hub DEPLOYMENT, or --name and --image for an image")
    _write(to_yaml(render(_plan(args), args.target)), args.file)
    return 0


def _cmd_runtime(args: argparse.Namespace) -> int:
    from mlport.deploy.kubernetes import KSERVE_FORMATS, cluster_serving_runtime, to_yaml

    _write(to_yaml([cluster_serving_runtime(args.image, args.formats or KSERVE_FORMATS)]), args.file)
    return 0


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(output)
