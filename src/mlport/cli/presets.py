"""``mlport presets``: list the preset models (here, or a hub's catalogue with ``--hub``), or build them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlport.cli.hubclient import EXIT_USAGE, Fail, add_parser, call, human_size, print_out

__all__ = ["add_presets_command", "describe_presets"]


def _figures(row: dict[str, Any]) -> str:
    shown = [f"{k.removeprefix('accuracy_').replace('_', ' ')} {v:.3f}" for k, v in (row.get("figures") or {}).items()
             if k.startswith("accuracy") and isinstance(v, int | float)]
    return "; ".join(shown)


def describe_presets(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        if row.get("version"):
            state = f"built, v{row['version']}"
        elif row.get("building"):
            state = f"building (job {row['building']})"
        elif row.get("built"):
            state = "built"
        else:
            state = "ready to build" if not row.get("missing") else \
                f"needs {', '.join(row['missing'])}: {row.get('install', '')}"
        languages = f" ({', '.join(row['languages'])})" if row.get("languages") else ""
        size = f", {human_size(row['size'])}" if row.get("size") else ""
        lines.append(f"{row['name']:14} {row['task']}{languages}: {row['summary']} [{state}{size}]")
        figures = _figures(row)
        if figures:
            lines.append(f"{'':14} held-out accuracy: {figures}")
    return "\n".join(lines)


def _cmd_presets(args: argparse.Namespace) -> int:
    if args.hub:
        if args.action == "build":
            raise Fail("`mlport presets build` builds here; on a hub, `mlport deploy NAME --preset P` builds the "
                       "preset as a job", EXIT_USAGE)
        data = call(args, "GET", "/api/v1/presets")
        print_out(args, data, describe_presets(data["presets"]))
        return 0
    from mlport import presets

    if args.action == "build":
        for name in args.names or list(presets.PRESETS):
            folder = presets.build(name, args.dir, force=args.force)
            if args.output == "json":  # one line each: a hub job reads the last one as its result
                print(json.dumps({"name": name, "path": str(folder.resolve()), "figures": presets.figures(folder),
                                  "provenance": presets.PRESETS[name].provenance()}), flush=True)
            else:
                print(folder)
        return 0
    rows = presets.catalogue(args.dir)
    if args.output == "json":
        print(json.dumps({"presets": rows}, indent=2))
        return 0
    print(f"presets in {args.dir or presets.presets_dir()} (mlport serve preset:NAME builds one on first use):")
    print(describe_presets(rows))
    return 0


def add_presets_command(sub: Any) -> None:
    pre = add_parser(sub, "presets", "list the preset models (here, or a hub's catalogue with --hub), or build them "
                     "(ready-made models trained on data that installed packages ship)", """
mlport presets
mlport presets build iris digits --dir models && mlport serve models
mlport presets --hub http://127.0.0.1:8090        # the hub's catalogue
mlport deploy fr --preset sentiment-fr             # the hub builds it (a job) if needed, then deploys it""",
                     _cmd_presets)
    pre.add_argument("action", nargs="?", choices=["list", "build"], default="list")
    pre.add_argument("names", nargs="*", help="presets to build (default: all)")
    pre.add_argument("--dir", type=Path, help="the repository folder to build in (default: MLPORT_PRESETS_DIR, "
                                              "else ~/.cache/mlport/presets)")
    pre.add_argument("--force", action="store_true", help="rebuild presets that are built already")
