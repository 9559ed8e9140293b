"""Hub client commands for deployments: ``mlport deploy``, ``promote``, ``rollback``, ``scale``, ``status`` and
``undeploy``."""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any

from mlport.cli.hubclient import EXIT_REFUSED, EXIT_USAGE, Fail, add_parser, call, iso_time, print_out

__all__ = ["add_deploy_commands", "describe_deployment"]

#: ``deploy --wait`` gives up after this long unless ``--timeout`` says otherwise, seconds.
DEFAULT_WAIT_S = 300.0
#: How long ``deploy --preset`` follows the hub's build of the preset unless ``--timeout`` says otherwise.
PRESET_BUILD_S = 1800.0
_POLL_S = 0.5


def _policy_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
              "target_inflight": args.target_inflight, "scale_to_zero": args.scale_to_zero,
              "max_concurrency": args.max_concurrency, "max_queue": args.max_queue,
              "queue_timeout_s": args.queue_timeout, "overload_status": args.overload_status}
    given = {k: v for k, v in fields.items() if v is not None}
    if args.no_limits:
        given.update(max_concurrency=None, max_queue=None, queue_timeout_s=None)
    return given


def _limits(p: dict[str, Any]) -> str:
    """The gateway's admission limits of a policy, in words (empty without any)."""
    if p.get("max_concurrency") is None:
        return ""
    queue = "no bound" if p.get("max_queue") is None else str(p["max_queue"])
    timeout = "" if p.get("queue_timeout_s") is None else f", queue timeout {p['queue_timeout_s']:g} s"
    return (f"  limits: {p['max_concurrency']} at once per replica, queue {queue}{timeout}, "
            f"refusals {p.get('overload_status', 503)}")


def _deploy(args: argparse.Namespace) -> int:
    name = args.name
    experiments = [s for s in ("canary", "ab", "shadow") if getattr(args, s) is not None]
    if len(experiments) > 1:
        raise Fail("use one of --canary, --ab and --shadow", EXIT_USAGE)
    calls = copy.copy(args)
    if args.wait:
        calls.timeout = None  # --timeout bounds the whole wait; each call keeps the default
    if experiments:
        strategy = experiments[0]
        if args.version is None:
            raise Fail(f"--{strategy} needs --version", EXIT_USAGE)
        body: dict[str, Any] = {"version": args.version}
        if strategy != "shadow":
            body["percent"] = getattr(args, strategy)
        if args.sticky_header:
            body["sticky_header"] = args.sticky_header
        if args.force:
            body["force"] = True
        data = call(calls, "POST", f"/api/v1/deployments/{name}/{strategy}", json=body)
    elif args.preset:
        if args.model or args.version is not None:
            raise Fail("--preset deploys the preset's own model: leave out --model and --version", EXIT_USAGE)
        data = _deploy_preset(calls, args)
    else:
        if not args.model:
            raise Fail("`mlport deploy NAME` needs --model, --preset, or --canary/--ab/--shadow with --version",
                       EXIT_USAGE)
        body = {"name": name, "model": args.model, **_policy_fields(args)}
        if args.version is not None:
            body["version"] = args.version
        if args.trusted:
            body["trusted"] = True
        if args.lazy is not None:
            body["lazy"] = args.lazy
        if args.load_timeout is not None:
            body["load_timeout_s"] = args.load_timeout
        data = call(calls, "POST", "/api/v1/deployments", json=body)
    if args.wait:
        data = _wait(calls, name, args.timeout if args.timeout is not None else DEFAULT_WAIT_S)
    print_out(args, data, describe_deployment(data))
    return 0


def _deploy_preset(args: argparse.Namespace, given: argparse.Namespace) -> dict[str, Any]:
    """Deploy a preset: the hub deploys its registered build, or builds it first as a job, followed here."""
    from mlport.cli.hubjobs import wait_job

    body = {"deployment": given.name, **_policy_fields(given)}
    answer: dict[str, Any] = call(args, "POST", f"/api/v1/presets/{given.preset}/deploy", json=body)
    job = answer.get("job")
    if job is None:
        deployment: dict[str, Any] = answer["deployment"]
        return deployment
    if given.output != "json":
        print(f"building preset {given.preset} on the hub (job {job['id']})...", file=sys.stderr, flush=True)
    done = wait_job(args, job["id"], given.timeout if given.timeout is not None else PRESET_BUILD_S)
    if done["state"] != "succeeded":
        raise Fail(f"the build of preset {given.preset} {done['state']}: {done.get('message', '')} "
                   f"(`mlport jobs logs {done['id']}`)", EXIT_REFUSED)
    found: dict[str, Any] = call(args, "GET", f"/api/v1/deployments/{given.name}")
    return found


def _wanted(d: dict[str, Any]) -> list[int]:
    t = d["target"]
    return [v for v in (t.get("primary"), t.get("candidate")) if isinstance(v, int)]


def _rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    replicas = d.get("replicas") or {}
    rows = replicas.get("versions") if isinstance(replicas, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _problem(d: dict[str, Any]) -> str | None:
    """Why the deployment cannot serve: its record's error, or the failure of a version it routes to."""
    replicas = d.get("replicas") or {}
    if isinstance(replicas, dict) and replicas.get("error"):
        return str(replicas["error"])
    wanted = _wanted(d)
    for row in _rows(d):
        if row.get("version") in wanted and row.get("failure"):
            return f"v{row['version']}: {row['failure']}"
    return None


def _ready(d: dict[str, Any]) -> bool:
    rows = {r.get("version"): r for r in _rows(d)}
    for version in _wanted(d):
        row = rows.get(version)
        if row is None:
            return False
        scaled_to_zero = row.get("desired") == 0 and row.get("state") == "running"
        if not (row.get("ready") or scaled_to_zero):
            return False
    return True


def _wait(args: argparse.Namespace, name: str, timeout_s: float) -> dict[str, Any]:
    """Poll the deployment until every version it routes to has a ready replica; :class:`Fail` with the reason
    when one fails (its model does not load, its replicas crash) or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        d: dict[str, Any] = call(args, "GET", f"/api/v1/deployments/{name}")
        problem = _problem(d)
        if problem is not None:
            raise Fail(f"deployment {name} is not ready: {problem}", EXIT_REFUSED)
        if _ready(d):
            return d
        if time.monotonic() >= deadline:
            raise Fail(f"deployment {name} is not ready after {timeout_s:g} s: {describe_deployment(d)}",
                       EXIT_REFUSED)
        if not told and args.output != "json":
            print(f"waiting for {name} to be ready (up to {timeout_s:g} s)...", file=sys.stderr, flush=True)
            told = True
        time.sleep(_POLL_S)


def describe_deployment(d: dict[str, Any]) -> str:
    t = d["target"]
    if t["strategy"] == "single":
        what = f"v{t['primary']}"
    elif t["strategy"] == "shadow":
        what = f"v{t['primary']} (shadow v{t['candidate']})"
    else:
        what = f"v{t['primary']} + {t['strategy']} v{t['candidate']} at {t['percent']:g}%"
    rows = _rows(d)
    counts = ", ".join(f"v{v.get('version')}: {v.get('ready', 0)}/{v.get('desired', 0)} ready" for v in rows)
    serving = d.get("serving") or {}
    lazy = "  (lazy)" if isinstance(serving, dict) and serving.get("lazy") else ""
    lines = [f"{d['name']}: {d['model']} {what}" + (f"  [{counts}]" if counts else "") + lazy]
    limits = _limits(d.get("policy") or {})
    if limits:
        lines.append(limits)
    replicas = d.get("replicas") or {}
    if isinstance(replicas, dict) and replicas.get("error"):
        lines.append(f"  error: {replicas['error']}")
    for row in rows:
        if row.get("failure"):
            lines.append(f"  v{row.get('version')} failed: {row['failure']}")
        elif row.get("last_error"):
            lines.append(f"  v{row.get('version')} last error: {row['last_error']}")
    return "\n".join(lines)


def _simple(action: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        data = call(args, "POST", f"/api/v1/deployments/{args.name}/{action}")
        print_out(args, data, describe_deployment(data))
        return 0

    return run


def _scale(args: argparse.Namespace) -> int:
    body = _policy_fields(args)
    if not body:
        raise Fail("`mlport scale NAME` needs at least one of --min-replicas, --max-replicas, --target-inflight, "
                   "--scale-to-zero, --no-scale-to-zero, --max-concurrency, --max-queue, --queue-timeout, "
                   "--overload-status, --no-limits", EXIT_USAGE)
    data = call(args, "POST", f"/api/v1/deployments/{args.name}/scale", json=body)
    p = data.get("policy") or {}
    print_out(args, data, describe_deployment(data) + f"\n  replicas {p.get('min_replicas')}..{p.get('max_replicas')}"
                                                      f", scale to zero: {p.get('scale_to_zero')}")
    return 0


def _status(args: argparse.Namespace) -> int:
    if not args.name:
        data = call(args, "GET", "/api/v1/deployments")
        print_out(args, data, "\n".join(describe_deployment(d) for d in data["deployments"]) or "no deployments")
        return 0
    data = call(args, "GET", f"/api/v1/deployments/{args.name}")
    if args.history:
        data["history"] = call(args, "GET", f"/api/v1/deployments/{args.name}/history")["history"]
    if data["target"]["strategy"] == "shadow":
        data["shadow"] = call(args, "GET", f"/api/v1/deployments/{args.name}/shadow")
    lines = [describe_deployment(data)]
    if "shadow" in data:
        s = data["shadow"]
        rate = s.get("agreement_rate")
        lines.append(f"shadow: {s.get('requests', 0)} requests compared, agreement "
                     f"{'-' if rate is None else f'{rate:.1%}'}")
    for entry in data.get("history", []):
        lines.append(f"  #{entry.get('number', entry['id'])} {iso_time(entry['at'])} {entry['action']} "
                     f"by {entry['by']}")
    print_out(args, data, "\n".join(lines))
    return 0


def _undeploy(args: argparse.Namespace) -> int:
    call(args, "DELETE", f"/api/v1/deployments/{args.name}")
    print_out(args, {}, f"deleted deployment {args.name}")
    return 0


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-replicas", type=int, help="fewest replicas per version (0 with --scale-to-zero)")
    p.add_argument("--max-replicas", type=int, help="most replicas per version")
    p.add_argument("--target-inflight", type=float, help="in-flight requests per replica to scale at")
    p.add_argument("--scale-to-zero", action="store_true", default=None,
                   help="stop every replica when idle; the next request starts one")
    p.add_argument("--no-scale-to-zero", dest="scale_to_zero", action="store_false",
                   help="keep at least one replica")
    p.add_argument("--max-concurrency", type=int, metavar="N",
                   help="requests the gateway forwards at once per ready replica; more wait in its queue")
    p.add_argument("--max-queue", type=int, metavar="N", help="requests that may wait per version (with "
                                                              "--max-concurrency); beyond, refused with Retry-After")
    p.add_argument("--queue-timeout", type=float, metavar="SECONDS",
                   help="longest wait in the queue; then refused unsent")
    p.add_argument("--overload-status", type=int, choices=(503, 429), help="status of a refusal (default 503)")
    p.add_argument("--no-limits", action="store_true", help="remove the concurrency limit and the queue")


def add_deploy_commands(sub: Any) -> None:
    p = add_parser(sub, "deploy", "deploy a model version, or start a canary/A-B/shadow", """
mlport deploy iris-prod --model iris                        # the latest version
mlport deploy iris-prod --model iris --version 3 --wait     # exit 1 with the reason if v3 does not start
mlport deploy iris-prod --model iris --lazy                 # replicas load the model on its first request
mlport deploy iris-prod --canary 10 --version 4             # 10% of traffic to v4
mlport deploy iris-prod --ab 50 --version 4 --sticky-header x-user
mlport deploy iris-prod --shadow --version 4                # copy traffic to v4 and compare
mlport deploy fr --preset sentiment-fr --wait              # the hub builds the preset first if needed""", _deploy)
    p.add_argument("name", help="deployment name")
    p.add_argument("--model", "-m", help="model to deploy (when creating or moving the deployment)")
    p.add_argument("--version", "-v", type=int, help="model version (default: the latest)")
    p.add_argument("--preset", help="deploy a preset (mlport presets --hub URL lists them); the hub builds and "
                                    "registers it first when it has no build yet")
    p.add_argument("--canary", type=float, metavar="PERCENT", help="send PERCENT of traffic to --version")
    p.add_argument("--ab", type=float, metavar="PERCENT", help="A/B split: PERCENT to --version, sticky by a header")
    p.add_argument("--shadow", action="store_const", const=0.0, help="copy traffic to --version and compare")
    p.add_argument("--sticky-header", help="header whose value pins a caller to one version (default for A/B: "
                                           "x-routing-key)")
    p.add_argument("--force", action="store_true", help="canary/A-B/shadow: accept a version whose signature "
                                                        "differs from the primary's")
    _policy_args(p)
    p.add_argument("--trusted", action="store_true", help="let the model run code (pickles, Python; admin only)")
    p.add_argument("--lazy", action="store_true", default=None,
                   help="replicas start without loading the model; its first request loads it (kept until changed)")
    p.add_argument("--no-lazy", dest="lazy", action="store_false", help="replicas load the model at start again")
    p.add_argument("--load-timeout", type=float, metavar="SECONDS",
                   help="lazy replicas: how long a request waits for the load before 503 with Retry-After "
                        "(default 30, at most 0.8 x the hub's gateway timeout)")
    p.add_argument("--wait", action="store_true", help="wait until the versions are ready; exit 1 with the reason "
                                                       "when one fails, or after --timeout (default "
                                                       f"{DEFAULT_WAIT_S:g} s)")

    for action, text in (("promote", "make the candidate version serve all traffic"),
                         ("rollback", "end the experiment, or go back to the previous version")):
        p = add_parser(sub, action, text, f"mlport {action} iris-prod", _simple(action))
        p.add_argument("name", help="deployment name")

    p = add_parser(sub, "scale", "change how a deployment scales", """
mlport scale iris-prod --min-replicas 2 --max-replicas 8
mlport scale iris-prod --scale-to-zero
mlport scale iris-prod --max-concurrency 4 --max-queue 32 --queue-timeout 5""", _scale)
    p.add_argument("name", help="deployment name")
    _policy_args(p)

    p = add_parser(sub, "status", "show deployments (all, or one with --history), with their replicas and errors", """
mlport status
mlport status iris-prod --history
mlport status iris-prod -o json""", _status)
    p.add_argument("name", nargs="?", help="deployment name (default: all)")
    p.add_argument("--history", action="store_true", help="also list the deployment's changes, newest first")

    p = add_parser(sub, "undeploy", "delete a deployment and stop its replicas", "mlport undeploy iris-prod",
                   _undeploy)
    p.add_argument("name", help="deployment name")
