"""Hub client commands for jobs and images: ``mlport jobs`` and ``mlport versions build`` (one hub job runner
runs image builds, and later batch scoring), and rendering a hub deployment's manifests."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from mlport.cli.hubclient import EXIT_REFUSED, EXIT_USAGE, Fail, add_parser, call, iso_time, print_out, request

__all__ = ["add_job_commands", "build_version", "render_from_hub", "wait_job"]

#: How often ``--wait`` asks the hub for a job's state, seconds.
POLL_S = 1.0
_ENDED = ("succeeded", "failed", "cancelled")


def _job_line(job: dict[str, Any]) -> str:
    spec = job.get("spec") or {}
    what = f"{spec.get('model', '')} v{spec.get('version', '')} -> {spec.get('tag', '')}" if spec.get("tag") else ""
    if spec.get("input"):  # batch scoring
        what = f"{spec.get('model', '')} v{spec.get('version', '')} {spec['input']} -> {spec.get('output', '')}"
    return (f"{job['id']}  {job['kind']:12} {job['state']:10} {iso_time(job['created_at'])}  {job['created_by']:10} "
            f"{what}  {job.get('message') or ''}").rstrip()


def wait_job(args: argparse.Namespace, job_id: str, limit_s: float) -> dict[str, Any]:
    """Poll job ``job_id`` until it ends (printing its progress to stderr) or ``limit_s`` passes."""
    deadline = time.monotonic() + limit_s
    last = ""
    while True:
        job: dict[str, Any] = call(args, "GET", f"/api/v1/jobs/{job_id}")
        if job["state"] in _ENDED:
            return job
        if job.get("message") and job["message"] != last and args.output != "json":
            last = job["message"]
            print(f"  {job['state']}: {last}", file=sys.stderr)
        if time.monotonic() > deadline:
            raise Fail(f"job {job_id} still {job['state']} after {limit_s:g} s (it goes on: "
                       f"`mlport jobs get {job_id}`)", EXIT_REFUSED)
        time.sleep(POLL_S)


def build_version(args: argparse.Namespace) -> int:
    """``mlport versions build MODEL VERSION --tag REF``: the hub builds (and pushes) the image as a job."""
    if not args.arg or not args.arg.isdigit():
        raise Fail("`mlport versions build MODEL VERSION --tag REF` needs a version number", EXIT_USAGE)
    if not args.tag:
        raise Fail("`mlport versions build` needs --tag REGISTRY/NAME:TAG", EXIT_USAGE)
    body = {"tag": args.tag, "push": not args.no_push, "tls_verify": args.tls_verify}
    job: dict[str, Any] = call(args, "POST", f"/api/v1/models/{args.model}/versions/{args.arg}/build", json=body)
    if not args.wait:
        print_out(args, job, f"job {job['id']} queued: follow it with `mlport jobs get {job['id']}`")
        return 0
    done = wait_job(args, job["id"], args.wait_timeout)
    result = done.get("result") or {}
    print_out(args, done, f"job {done['id']} {done['state']}: " +
              (f"{args.tag} {result.get('digest', '')}" if done["state"] == "succeeded" else done["message"]))
    return 0 if done["state"] == "succeeded" else EXIT_REFUSED


def _submit(args: argparse.Namespace) -> int:
    """``mlport jobs submit``: the hub scores a file with a model version (``mlport score`` as a job)."""
    if not args.input or not args.to or not (args.model or args.deployment):
        raise Fail("`mlport jobs submit` needs --model (or --deployment), --input and --to", EXIT_USAGE)
    body: dict[str, Any] = {"input": args.input, "output": args.to}
    body.update({"deployment": args.deployment} if args.deployment else {"model": args.model})
    if args.version is not None and not args.deployment:
        body["version"] = args.version
    options = {k: v for k, v in (("batch_size", args.batch_size), ("workers", args.workers), ("keep", args.keep))
               if v is not None}
    if options:
        body["options"] = options
    job = call(args, "POST", "/api/v1/jobs", json=body)
    print_out(args, job, f"job {job['id']} queued: follow it with `mlport jobs get {job['id']}`")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    if args.action == "submit":
        return _submit(args)
    if args.action == "list":
        data = call(args, "GET", "/api/v1/jobs", params={"state": args.state} if args.state else None)
        print_out(args, data, "\n".join(_job_line(j) for j in data["jobs"]) or "no jobs")
        return 0
    if not args.id:
        raise Fail(f"`mlport jobs {args.action} ID` needs a job id", EXIT_USAGE)
    if args.action == "logs":
        sys.stdout.write(request(args, "GET", f"/api/v1/jobs/{args.id}/log").text)
        return 0
    if args.action == "cancel":
        job = call(args, "POST", f"/api/v1/jobs/{args.id}/cancel")
    else:
        job = call(args, "GET", f"/api/v1/jobs/{args.id}")
    print_out(args, job, _job_line(job))
    return 0


def render_from_hub(args: argparse.Namespace) -> int:
    """``mlport k8s render DEPLOYMENT``: the hub renders its deployment's manifests."""
    params = {"target": args.target, "namespace": args.namespace, "gateway": args.gateway}
    if args.image:
        params["image"] = args.image
    text = request(args, "GET", f"/api/v1/deployments/{args.deployment}/manifests", params=params).text
    if args.file is None:
        sys.stdout.write(text)
    else:
        tmp = args.file.with_name(args.file.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.file)
    return 0


def add_job_commands(sub: Any) -> None:
    p = add_parser(sub, "jobs", "submit batch scoring to the hub; list, get, read the log of, or cancel the hub's "
                   "jobs (image builds, batch scoring)", """
mlport jobs submit --model iris --input s3://bucket/rows.csv --to s3://bucket/scored.parquet --keep id
mlport jobs list
mlport jobs list --state running
mlport jobs get 3f2a9c0d1e4b5a6c
mlport jobs logs 3f2a9c0d1e4b5a6c
mlport jobs cancel 3f2a9c0d1e4b5a6c""", _jobs)
    p.add_argument("action", choices=["submit", "list", "get", "logs", "cancel"], help="what to do")
    p.add_argument("id", nargs="?", help="the job's id (all actions but list)")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"],
                   help="list: only jobs in this state")
    p.add_argument("--model", "-m", help="submit: the model to score with")
    p.add_argument("--version", "-v", type=int, help="submit: its version (default: the latest)")
    p.add_argument("--deployment", help="submit: score with the version this deployment serves")
    p.add_argument("--input", help="submit: a path on the hub's machine or an s3:// URI")
    p.add_argument("--to", help="submit: where the scored rows go (.parquet, .csv, .jsonl)")
    p.add_argument("--batch-size", type=int, help="submit: rows per predict call")
    p.add_argument("--workers", type=int, help="submit: scoring processes")
    p.add_argument("--keep", nargs="+", help="submit: input columns copied to the output")
