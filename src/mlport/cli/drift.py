"""``mlport profile DATA --model MODEL -o profile.json`` and ``mlport drift NAME`` (a runtime's or a hub's)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mlport.cli.hubclient import EXIT_UNREACHABLE, Fail, add_parser, call, print_out

__all__ = ["add_drift_commands", "with_profile"]

#: Longest wait for a runtime's answer, seconds.
RUNTIME_TIMEOUT_S = 30.0


def add_drift_commands(sub: Any) -> None:
    p = sub.add_parser("profile", help="compute a model's reference profile from a data file (for drift and "
                                       "outlier watching)",
                       description="Read DATA (CSV, Parquet or JSON Lines), map its columns to the model's inputs "
                                   "as mlport score does, run the model on it, and write the reference profile: "
                                   "per feature quantiles, histogram, category frequencies and missing rate, for "
                                   "inputs and outputs. Put it beside the model as profile.json.")
    p.add_argument("data", help="a CSV, Parquet or JSON Lines file; a path or s3:// URI")
    p.add_argument("--model", required=True, help="the model file or folder the data feeds (or preset:NAME, "
                                                  "hub://MODEL/VERSION)")
    p.add_argument("-o", "--output", type=Path, default=Path("profile.json"), help="default: profile.json")
    p.add_argument("--map", dest="maps", action="append", default=[], metavar="COLUMN=INPUT[:INDEX]",
                   help="feed COLUMN to model input INPUT (at position INDEX of a multi-valued input)")
    p.add_argument("--max-rows", type=int, default=100_000, help="rows read, the first ones (default 100000)")
    p.add_argument("--input-format", choices=["csv", "parquet", "jsonl"])
    p.add_argument("--name", help="the model's name (default: the file's stem)")
    p.add_argument("--trusted", action="store_true", help="trust the model to run code when loaded")
    p.add_argument("--s3-endpoint-url", help="an S3-compatible server (default: AWS_ENDPOINT_URL, else AWS)")
    p.set_defaults(func=_cmd_profile)

    d = add_parser(sub, "drift", "show the drift of a served model (a runtime's) or of a deployment (a hub's)", """
mlport drift iris --url http://127.0.0.1:8080     # a runtime serving model iris
mlport drift iris                                 # deployment iris of the hub you logged in to
mlport drift iris --output json
""", _cmd_drift)
    d.add_argument("name", help="the model (with --url) or the deployment (in the hub)")
    d.add_argument("--url", help="a runtime's base URL: ask it instead of the hub")


def _cmd_profile(args: argparse.Namespace) -> int:
    from mlport.batch.profile import ProfileJob, profile_data
    from mlport.cli.score import resolve_model

    job = ProfileJob(model=resolve_model(args.model), data=args.data, maps=args.maps, input_format=args.input_format,
                     max_rows=args.max_rows, name=args.name, trusted=args.trusted,
                     endpoint_url=args.s3_endpoint_url)
    profile = profile_data(job)
    args.output.write_bytes(profile.to_json())
    inputs = sum(1 for f in profile.features if f.role == "input")
    print(f"profiled {profile.rows} rows of {args.data}: {inputs} input and {len(profile.features) - inputs} output "
          f"features -> {args.output}", file=sys.stderr)
    return 0


def _runtime(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    url = f"{args.url.rstrip('/')}/models/{args.name}/drift"
    try:
        answer = httpx.get(url, timeout=args.timeout or RUNTIME_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError as exc:
        raise Fail(f"cannot reach {args.url}: {exc}", EXIT_UNREACHABLE) from None
    if answer.status_code != 200:
        try:
            message = answer.json().get("error", answer.text)
        except ValueError:
            message = answer.text[:500]
        raise Fail(f"{answer.status_code}: {message}", 1)
    data: dict[str, Any] = answer.json()
    return data


def _cmd_drift(args: argparse.Namespace) -> int:
    if args.url:
        data = _runtime(args)
        versions = data.get("versions") or []
    else:
        data = call(args, "GET", f"/api/v1/deployments/{args.name}/drift")
        versions = []
        for r in data.get("replicas") or []:
            found = r.get("versions") or [{"version": r.get("version"), "status": r.get("status"),
                                           "error": r.get("error") or r.get("reason")}]
            versions.extend({**v, "replica": r.get("replica")} for v in found)
    print_out(args, data, _text(args.name, str(data.get("status")), versions, data.get("reason")))
    return 0


def _text(name: str, status: str, versions: list[dict[str, Any]], reason: Any) -> str:
    lines = [f"{name}: {status}"]
    if reason:
        lines.append(f"  {reason}")
    for v in versions:
        replica = f" replica {v['replica']}" if v.get("replica") is not None else ""
        where = f"version {v.get('version', '?')}{replica}"
        error = f" ({v['error']})" if v.get("error") else ""
        lines.append(f"  {where}: {v.get('status')} over {v.get('rows', 0)} rows{error}")
        for f in v.get("features") or []:
            figures = ", ".join(
                f"{m}={e['value']:.4g}" + (f" (p={e['pvalue']:.3g})" if "pvalue" in e else "")
                for m, e in f.get("methods", {}).items())
            lines.append(f"    {f['role']:<6} {f['name']:<24} {f['status']:<8} {figures}")
    return "\n".join(lines)




def with_profile(model: Path, profile: Path, dest: Path) -> Path:
    """A folder under ``dest`` holding the model (a file, with its ``<stem>.model.yaml`` as ``model.yaml``, or
    the files of a folder) and ``profile`` as ``profile.json``: what ``mlport versions upload --profile`` sends."""
    import shutil

    from mlport.observability.drift import read_profile

    read_profile(profile)  # refuse a file that is not a profile before uploading anything
    folder = dest / (model.name.split(".")[0] if model.is_file() else model.name)
    if model.is_dir():
        shutil.copytree(model, folder, symlinks=True)
    else:
        folder.mkdir(parents=True)
        shutil.copy2(model, folder / model.name)
        config = model.with_name(f"{model.name.split('.')[0]}.model.yaml")
        if config.is_file():
            shutil.copy2(config, folder / "model.yaml")
    shutil.copy2(profile, folder / "profile.json")
    return folder
