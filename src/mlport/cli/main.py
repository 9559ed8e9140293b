"""``mlport serve | describe | formats``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlport import __version__
from mlport.cli.options import Parser
from mlport.errors import MlportError

__all__ = ["build_parser", "main"]


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a model file, a model folder or a repository folder, a preset (preset:NAME), or "
                                "s3://bucket/prefix (copied to a local folder at start)")
    p.add_argument("--config", type=Path, help="YAML file with any of these settings (keys as the flags, "
                                               "without the dashes in front)")
    from mlport.cli.options import add_settings_options
    from mlport.settings import Settings

    add_settings_options(p, Settings)


def _preset_path(text: str) -> Path:
    """``preset:NAME`` (built on first use) or ``preset:all``/``presets`` as the folder to serve."""
    path = Path(text)
    if text == "presets" and not path.exists():
        text = "preset:all"
    if not text.startswith("preset:"):
        return path
    from mlport import presets

    name = text.split(":", 1)[1]
    return presets.build_all() if name in ("all", "") else presets.build(name)


def _cmd_serve(args: argparse.Namespace) -> int:
    from mlport.cli.fetch import fetch_models, is_remote
    from mlport.cli.options import given_settings
    from mlport.serving import serve
    from mlport.settings import Settings, load_settings

    given = given_settings(args, Settings)
    if not is_remote(args.path):
        settings = load_settings({**given, "model_path": _preset_path(args.path)}, args.config)
        if not settings.model_path or not settings.model_path.exists():
            raise MlportError(f"{settings.model_path} does not exist")
        return serve(settings)
    settings = load_settings(given, args.config)
    with tempfile.TemporaryDirectory(prefix="mlport-models-") as tmp:
        print(f"fetching the models under {args.path}", file=sys.stderr)
        local = fetch_models(args.path, Path(tmp), endpoint_url=settings.s3_endpoint_url,
                             sha256=settings.expect_sha256)
        return serve(settings.model_copy(update={"model_path": local}))


def _cmd_describe(args: argparse.Namespace) -> int:
    from mlport.formats.adapt import load_adapted
    from mlport.formats.registry import default_registry
    from mlport.runtime.repository import Repository

    formats = default_registry()
    repo = Repository(args.path, formats, name=args.name, trusted=args.trusted)
    result: dict[str, Any] = {}
    status = 0
    for name, src in repo.scan().items():
        if src.error or not src.versions:
            result[name] = {"error": src.error or "; ".join(src.errors.values()) or "no versions"}
            status = 1
            continue
        version = max(src.config.version_policy.select(list(src.versions)) or src.versions)
        vsrc = src.versions[version]
        try:
            ev = load_adapted(formats.get(vsrc.format), vsrc.path, src.config)
        except MlportError as exc:
            result[name] = {"version": version, "format": vsrc.format, "error": str(exc)}
            status = 1
            continue
        result[name] = {"version": version, "format": vsrc.format, **ev.signature.describe()}
        ev.close()
    print(json.dumps(result, indent=2))
    return status


def _cmd_formats(args: argparse.Namespace) -> int:
    from mlport.formats.registry import default_registry

    for fmt in sorted(default_registry().formats, key=lambda f: f.name):
        missing = fmt.missing()
        hint = f"pip install 'mlport[{fmt.extra}]'" if fmt.extra else f"pip install {' '.join(missing)}"
        state = "available" if not missing else f"missing {', '.join(missing)}: {hint}"
        code = " (runs code: trusted models only)" if fmt.runs_code else ""
        print(f"{fmt.name:12} {state}{code}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mlport", description="Serve trained model files as web services.")
    parser.add_argument("--version", action="version", version=f"mlport {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model file or repository over HTTP and gRPC")
    _serve_args(serve)
    serve.set_defaults(func=_cmd_serve)
    desc = sub.add_parser("describe", help="print the signature of a model (or each model of a repository)")
    desc.add_argument("path", type=Path)
    desc.add_argument("--name")
    desc.add_argument("--trusted", action="store_true")
    desc.set_defaults(func=_cmd_describe)
    fmts = sub.add_parser("formats", help="list the model formats and whether each is available")
    fmts.set_defaults(func=_cmd_formats)
    from mlport.cli.build import add_build_command
    from mlport.cli.drift import add_drift_commands
    from mlport.cli.hub import add_hub_command
    from mlport.cli.hubctl import add_client_commands
    from mlport.cli.k8s import add_k8s_command
    from mlport.cli.logs import add_logging_command, add_logs_command
    from mlport.cli.presets import add_presets_command
    from mlport.cli.score import add_score_command

    add_hub_command(sub)
    add_client_commands(sub)
    add_build_command(sub)
    add_k8s_command(sub)
    add_score_command(sub)
    add_presets_command(sub)
    add_logs_command(sub)
    add_logging_command(sub)
    add_drift_commands(sub)
    return parser


def _score_parser() -> argparse.ArgumentParser:
    """The parser of ``mlport score`` alone: scoring starts without importing every other command's modules."""
    from mlport.cli.score import add_score_command

    parser = Parser(prog="mlport", description="Serve trained model files as web services.")
    add_score_command(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = (_score_parser() if argv[:1] == ["score"] else build_parser()).parse_args(argv)
    try:
        code: int = args.func(args)
    except MlportError as exc:
        print(f"mlport: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
