"""``mlport jobs submit|status|cancel|logs``: batch jobs run by a hub."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from mlport.cli.hubctl import EXIT_REFUSED, EXIT_UNREACHABLE, _call, _Fail, _guard, _print, _token, _url, common_options

__all__ = ["add_jobs_command"]


def _describe(job: dict[str, Any]) -> str:
    spec = job.get("spec") or {}
    what = f"{spec.get('model')} v{spec.get('version')}"
    if job.get("kind") == "batch-score":
        what += f"  {spec.get('input')} -> {spec.get('output')}"
    return f"{job['id']}  {job['kind']:12} {job['state']:9}  {what}  {job.get('message') or ''}".rstrip()


def _jobs(args: argparse.Namespace) -> int:
    if args.action in ("list", "get"):
        args.action = "status"
    if args.action == "submit":
        if not args.input or not args.output_uri or not (args.model or args.deployment):
            print("mlport: jobs submit needs --model (or --deployment), --input and --to", file=sys.stderr)
            return 2
        body: dict[str, Any] = {"input": args.input, "output": args.output_uri, "options": {}}
        if args.deployment:
            body["deployment"] = args.deployment
        else:
            body["model"] = args.model
            if args.version is not None:
                body["version"] = args.version
        for key in ("batch_size", "workers"):
            if getattr(args, key) is not None:
                body["options"][key] = getattr(args, key)
        if args.keep:
            body["options"]["keep"] = args.keep
        data = _call(args, "POST", "/api/v1/jobs", json=body)
    elif args.action == "status" and not args.id:
        data = _call(args, "GET", "/api/v1/jobs")
        _print(args, data, "\n".join(_describe(j) for j in data["jobs"]) or "no jobs")
        return 0
    elif not args.id:
        print(f"mlport: jobs {args.action} needs a job id", file=sys.stderr)
        return 2
    elif args.action == "logs":
        return _logs(args)
    else:
        data = _call(args, "POST" if args.action == "cancel" else "GET",
                     f"/api/v1/jobs/{args.id}" + ("/cancel" if args.action == "cancel" else ""))
    _print(args, data, _describe(data))
    return 0


def _logs(args: argparse.Namespace) -> int:
    try:
        r = httpx.get(f"{_url(args)}/api/v1/jobs/{args.id}/log", headers={"authorization": f"Bearer {_token(args)}"},
                      timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise _Fail(f"cannot reach the hub at {_url(args)}: {exc}", EXIT_UNREACHABLE) from None
    if r.status_code >= 400:
        raise _Fail(f"{r.status_code}: {r.text[:500]}", EXIT_REFUSED)
    print(r.text, end="" if r.text.endswith("\n") or not r.text else "\n")
    return 0


def add_jobs_command(sub: Any) -> None:
    p = sub.add_parser("jobs", parents=[common_options()],
                       help="submit batch scoring jobs to a hub, follow or stop them")
    # list/get are status without and with an id (the vocabulary of the image-build jobs)
    p.add_argument("action", choices=["submit", "status", "list", "get", "cancel", "logs"])
    p.add_argument("id", nargs="?", help="the job (status, cancel, logs)")
    p.add_argument("--model", "-m")
    p.add_argument("--version", "-v", type=int, help="model version (default: the latest)")
    p.add_argument("--deployment", help="score with the version this deployment serves")
    p.add_argument("--input", help="a path on the hub's machine or an s3:// URI")
    p.add_argument("--to", dest="output_uri", help="where the scored rows go (.parquet, .csv, .jsonl)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--keep", nargs="+")
    p.set_defaults(func=_guard(_jobs))
