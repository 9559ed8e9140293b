"""``mlport logs NAME``: the logged requests of a model (from its sink) or of a hub deployment."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from mlport.cli.hubclient import Fail, add_parser, call, print_out
from mlport.core.logconfig import SinkConfig
from mlport.errors import MlportError
from mlport.observability.requestlog import LogReader, as_arrays, parse_since

__all__ = ["add_logging_command", "add_logs_command", "describe_record"]

#: Seconds between two looks for new records with --follow.
FOLLOW_POLL_S = 0.5


def _tensors(tensors: Any) -> str:
    if tensors is None:
        return "-"
    parts = []
    for name, arr in as_arrays(tensors).items():
        text = np.array2string(arr, threshold=8, edgeitems=2, max_line_width=10_000, separator=",")
        parts.append(f"{name}={' '.join(text.split())}")
    return " ".join(parts) or "-"


def describe_record(r: dict[str, Any]) -> str:
    """One line per record: time, model and version, protocol, status, latency, id, then the tensors."""
    lineage = ""
    if r.get("routed_to"):
        lineage += f" routed_to={','.join(r['routed_to'])}"
    if r.get("answered_by"):
        lineage += f" answered_by={','.join(r['answered_by'])}"
    return (f"{r.get('time', '-')} {r.get('model')} v{r.get('version')} {r.get('protocol')} {r.get('status')} "
            f"{r.get('latency_ms')}ms id={r.get('id')}{lineage} in: {_tensors(r.get('inputs'))} "
            f"out: {_tensors(r.get('outputs'))}")


def _emit(args: argparse.Namespace, records: Iterable[dict[str, Any]]) -> None:
    for r in records:
        print(json.dumps(r, sort_keys=True) if args.output == "json" else describe_record(r), flush=True)


def _local(args: argparse.Namespace, url: str) -> int:
    since = parse_since(args.since) if args.since else None
    reader = LogReader(SinkConfig(url=url, endpoint_url=args.endpoint_url), model=args.name, since=since)
    _emit(args, reader.records(args.limit))
    while args.follow:
        time.sleep(FOLLOW_POLL_S)
        _emit(args, reader.poll())
    return 0


def _hub(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.since:
        params["since"] = parse_since(args.since).isoformat()
    while True:
        data = call(args, "GET", f"/api/v1/deployments/{args.name}/logs", params=params)
        _emit(args, data["records"])
        if not args.follow:
            return 0
        params["after"] = data["cursor"]
        params.pop("since", None)
        time.sleep(FOLLOW_POLL_S)


def _logs(args: argparse.Namespace) -> int:
    url = args.request_log or os.environ.get("MLPORT_REQUEST_LOG")
    try:
        return _local(args, url) if url else _hub(args)
    except MlportError as exc:
        raise Fail(str(exc), 2) from None
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"mlport: {exc}", file=sys.stderr)
        return 2


def add_logs_command(sub: Any) -> None:
    p = add_parser(sub, "logs", "show logged requests (with their tensors) of a model or of a hub deployment", """
mlport logs iris --request-log ./request-logs --since 15m
mlport logs iris --request-log s3://logs/iris --follow --output json
mlport logs iris-prod --since 2h            (a hub deployment)""", _logs)
    p.add_argument("name", help="the model (or, without --request-log, the hub deployment)")
    p.add_argument("--request-log", metavar="URL",
                   help="the folder or s3://bucket/prefix the server logs to (default: MLPORT_REQUEST_LOG; "
                        "neither: ask the hub)")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint of an s3:// log (default: AWS_ENDPOINT_URL)")
    p.add_argument("--since", help="only records from this long ago (30s, 15m, 2h, 7d) or this ISO 8601 time")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records as they are written")
    p.add_argument("--limit", type=int, default=1000, help="the newest N records at most (default 1000)")


def _logging(args: argparse.Namespace) -> int:
    path = f"/api/v1/deployments/{args.name}/logging"
    if args.off:
        call(args, "DELETE", path)
        print_out(args, {}, f"deployment {args.name}: requests are not logged")
        return 0
    if args.sample is None and args.payload is None and args.sink is None:
        data = call(args, "GET", path)
    else:
        body = {k: v for k, v in (("sample", args.sample), ("payload", args.payload), ("sink", args.sink))
                if v is not None}
        data = call(args, "PUT", path, json=body)
    config = data.get("logging")
    text = (f"deployment {args.name}: not logged" if not config else
            f"deployment {args.name}: sample {config['sample']}, payload {config['payload']}, sink {data['sink']}")
    print_out(args, data, text)
    return 0


def add_logging_command(sub: Any) -> None:
    p = add_parser(sub, "logging", "show or set the request logging of a hub deployment", """
mlport logging iris-prod
mlport logging iris-prod --sample 0.1 --payload inputs
mlport logging iris-prod --off""", _logging)
    p.add_argument("name", help="the deployment")
    p.add_argument("--sample", type=float, help="share of requests logged, 0 to 1")
    p.add_argument("--payload", choices=["none", "inputs", "outputs", "all"], help="tensors each record carries")
    p.add_argument("--sink", help="a folder, s3://bucket/prefix or http(s):// receiver (admin; default: the hub's "
                                  "folder, which `mlport logs` reads)")
    p.add_argument("--off", action="store_true", help="stop logging")
