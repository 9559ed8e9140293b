"""``mlport jobs submit|status|cancel|logs``: batch jobs run by a hub."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mlport.cli.hubctl import _call, _guard, _print, common_options

__all__ = ["add_jobs_command"]


def _describe(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    total = f"/{p['rows_total']}" if p.get("rows_total") is not None else ""
    err = f" ({job['error']})" if job.get("error") else ""
    return (f"{job['id']}  {job['state']:9}  {job['model']} v{job['version']}  {p.get('rows_scored', 0)}{total} "
            f"rows, {p.get('rows_failed', 0)} failed  {job['input']} -> {job['output']}{err}")


def _jobs(args: argparse.Namespace) -> int:
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
        data = _call(args, "GET", f"/api/v1/jobs/{args.id}/logs")
        _print(args, data, data["log"].rstrip("\n"))
        return 0
    else:
        data = _call(args, "POST" if args.action == "cancel" else "GET",
                     f"/api/v1/jobs/{args.id}" + ("/cancel" if args.action == "cancel" else ""))
    _print(args, data, _describe(data))
    return 0


def add_jobs_command(sub: Any) -> None:
    p = sub.add_parser("jobs", parents=[common_options()],
                       help="submit batch scoring jobs to a hub, follow or stop them")
    p.add_argument("action", choices=["submit", "status", "cancel", "logs"])
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
