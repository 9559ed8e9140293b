"""``mlport score MODEL INPUT -o OUTPUT``: batch scoring of whole files."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from mlport.errors import MlportError

__all__ = ["add_score_command", "resolve_model"]


def add_score_command(sub: Any) -> None:
    p = sub.add_parser("score", help="score a whole file (CSV, Parquet, JSON Lines, images) with a model")
    p.add_argument("model", help="a model file or folder, a manifest, a preset name (iris, preset:iris), or a hub "
                                 "version (hub://MODEL/VERSION)")
    p.add_argument("input", help="a CSV, Parquet or JSON Lines file, a folder or glob of images; a path or s3:// URI")
    p.add_argument("-o", "--output", required=True, help="a .parquet, .csv or .jsonl file; a path or s3:// URI")
    p.add_argument("--batch-size", type=int, default=10_000, help="rows per predict call (default 10000)")
    p.add_argument("--map", dest="maps", action="append", default=[], metavar="COLUMN=INPUT[:INDEX]",
                   help="feed COLUMN to model input INPUT (at position INDEX of a multi-valued input)")
    p.add_argument("--keep", nargs="+", default=[], metavar="COL", help="input columns copied to the output")
    p.add_argument("--errors", metavar="FILE", help="where bad rows go (default: OUTPUT.errors.csv)")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first bad row")
    p.add_argument("--workers", type=int, default=None, help="scoring processes (default: the cores)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its checkpoint")
    p.add_argument("--work-dir", type=Path, help="checkpoint folder (default: OUTPUT.parts)")
    p.add_argument("--input-format", choices=["csv", "parquet", "jsonl", "images"])
    p.add_argument("--output-format", choices=["parquet", "csv", "jsonl"])
    p.add_argument("--name", help="the model's name (default: the file's stem)")
    p.add_argument("--trusted", action="store_true", help="trust the model to run code when loaded")
    p.add_argument("--s3-endpoint-url", help="an S3-compatible server (default: AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--engine", choices=["local", "spark"], default="local",
                   help="local processes (default), or Spark (spark-submit, or --spark-master)")
    p.add_argument("--spark-master", help="the Spark master for --engine spark (local[4], spark://host:7077...)")
    p.add_argument("--hub", help="the hub of a hub:// model (default: MLPORT_HUB_URL, else http://127.0.0.1:8090)")
    p.add_argument("--token", help="a hub token for a hub:// model (default: MLPORT_HUB_TOKEN)")
    p.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto",
                   help="a bar on a terminal, plain lines otherwise (auto)")
    p.add_argument("--summary", choices=["text", "json"], default="text",
                   help="the closing summary as a line of text on stderr (default), or as JSON on stdout")
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress lines")
    p.set_defaults(func=_cmd_score)


def resolve_model(text: str, hub: str | None = None, token: str | None = None) -> Path:
    """A model path; the folder of a preset (``preset:NAME``, or a preset's bare name), built on first use; or a hub
    version (``hub://MODEL/VERSION``), fetched and verified."""
    if text.startswith("hub://"):
        from mlport.cli.hubmodel import fetch_hub_model  # httpx and the registry only for a hub model

        return fetch_hub_model(text, hub, token)
    path = Path(text)
    name = text.split(":", 1)[1] if text.startswith("preset:") else None
    if name is None and not path.exists():
        from mlport import presets

        if text in presets.PRESETS:
            name = text
    if name is None:
        if not path.exists():
            raise MlportError(f"model {text} does not exist (a model file or folder, a manifest, or a preset name)")
        return path
    from mlport import presets

    try:
        return presets.build(name)
    except presets.PresetError as exc:
        raise MlportError(str(exc)) from exc


def _cmd_score(args: argparse.Namespace) -> int:
    from mlport.batch import ScoreJob, score
    from mlport.batch.progress import make_progress

    job = ScoreJob(
        model=resolve_model(args.model, args.hub, args.token), input=args.input, output=args.output,
        batch_size=args.batch_size, maps=args.maps, keep=args.keep, errors=args.errors, fail_fast=args.fail_fast,
        workers=args.workers or os.cpu_count() or 1, resume=args.resume, input_format=args.input_format,
        output_format=args.output_format, work_dir=args.work_dir, name=args.name, trusted=args.trusted,
        endpoint_url=args.s3_endpoint_url,
    )
    if args.engine == "spark":
        from mlport.batch.spark_run import score_on_spark

        summary = score_on_spark(job, args.spark_master)
    else:
        summary = score(job, make_progress(args.progress, sys.stderr, args.progress_interval))
    if args.summary == "json":
        print(json.dumps(dataclasses.asdict(summary)), flush=True)
    else:
        print(summary.text(), file=sys.stderr)
    return 0
