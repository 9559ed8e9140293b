"""``mlport serve | describe | formats``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from mlport import __version__
from mlport.errors import MlportError

__all__ = ["main"]


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="a model file, a model folder or a repository folder")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--grpc-port", type=int, help="Open Inference Protocol gRPC port (default 8081; 0: no gRPC)")
    p.add_argument("--name", help="model name when one file is served (default: the file's stem)")
    p.add_argument("--config", type=Path, help="YAML file with any of these settings")
    p.add_argument("--trusted", action="store_true", default=None,
                   help="trust every model here to run code when loaded (pickles, Python files)")
    p.add_argument("--poll-interval", dest="poll_interval_s", type=float,
                   help="seconds between repository scans for new versions (0: off; default 5)")
    p.add_argument("--inference-threads", type=int, help="threads running predictions (default: cores, min 2)")
    p.add_argument("--intra-op-threads", type=int, help="threads per prediction inside the model's library")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (default 64 MiB)")
    p.add_argument("--strict-readiness", action="store_true", default=None,
                   help="report ready only when every model serves")
    p.add_argument("--log-level", help="debug, info, warning, error (default info)")
    p.add_argument("--access-log", action="store_true", default=None, help="log one line per request")


def _settings(args: argparse.Namespace) -> Any:
    from mlport.settings import load_settings

    cli = {
        "model_path": args.path, "host": args.host, "http_port": args.http_port, "grpc_port": args.grpc_port,
        "name": args.name, "trusted": args.trusted, "poll_interval_s": args.poll_interval_s,
        "inference_threads": args.inference_threads, "intra_op_threads": args.intra_op_threads,
        "max_body_bytes": args.max_body_bytes, "log_level": args.log_level,
        "strict_readiness": args.strict_readiness, "access_log": args.access_log,
    }
    return load_settings(cli, args.config)


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mlport.protocols.http.server import create_app

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.model_path or not settings.model_path.exists():
        raise MlportError(f"{settings.model_path} does not exist")
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.http_port, log_level=settings.log_level.lower(),
        access_log=settings.access_log, timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        lifespan="on", server_header=False, loop="asyncio",  # grpc.aio shares this loop
    )
    grpc = f" and grpc {settings.host}:{settings.grpc_port}" if settings.grpc_port else ""
    print(f"mlport {__version__} serving {settings.model_path} on http://{settings.host}:{settings.http_port}{grpc}",
          file=sys.stderr, flush=True)
    # uvicorn drains in-flight requests on SIGINT/SIGTERM, then re-raises the signal with the handlers it
    # found: these make that last step a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    uvicorn.Server(config).run()
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _cmd_describe(args: argparse.Namespace) -> int:
    from mlport.formats.base import LoadOptions
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
            ev = formats.get(vsrc.format).load(vsrc.path, LoadOptions(trusted=src.config.trusted,
                                                                      options=dict(src.config.options)))
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
    parser = argparse.ArgumentParser(prog="mlport", description="Serve trained model files as web services.")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
