"""``mlport serve | describe | formats``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

from mlport import __version__
from mlport.errors import MlportError

__all__ = ["main"]

log = logging.getLogger("mlport.cli")


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
    p.add_argument("--workers", type=int,
                   help="server processes sharing the ports, each with every model loaded (default 1)")
    p.add_argument("--inference-threads", type=int,
                   help="threads running predictions in each worker (default: its share of the cores, min 2)")
    p.add_argument("--intra-op-threads", type=int,
                   help="threads per prediction inside the model's library (default: the worker's cores divided "
                        "by its inference threads, at least 1)")
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
        "workers": args.workers, "inference_threads": args.inference_threads,
        "intra_op_threads": args.intra_op_threads,
        "max_body_bytes": args.max_body_bytes, "log_level": args.log_level,
        "strict_readiness": args.strict_readiness, "access_log": args.access_log,
    }
    return load_settings(cli, args.config)


def _preset_path(path: Path) -> Path:
    """``preset:NAME`` (built on first use) or ``preset:all``/``presets`` as the folder to serve."""
    text = str(path)
    if text == "presets" and not path.exists():
        text = "preset:all"
    if not text.startswith("preset:"):
        return path
    from mlport import presets

    name = text.split(":", 1)[1]
    try:
        return presets.build_all() if name in ("all", "") else presets.build(name)
    except presets.PresetError as exc:
        raise MlportError(str(exc)) from exc


def _cmd_serve(args: argparse.Namespace) -> int:
    args.path = _preset_path(args.path)
    settings = _settings(args)
    _configure_logging(settings.log_level, settings.workers > 1 and "parent")
    if not settings.model_path or not settings.model_path.exists():
        raise MlportError(f"{settings.model_path} does not exist")
    if settings.workers > 1:
        return _Supervisor(settings).run()
    _announce(settings)
    _serve(settings)
    return 0


def _configure_logging(level: str, role: str | Literal[False] = False) -> None:
    tag = f" [{role}]" if role else ""
    logging.basicConfig(level=level.upper(), format=f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s")


def _announce(settings: Any) -> None:
    grpc = f" and grpc {settings.host}:{settings.grpc_port}" if settings.grpc_port else ""
    workers = f" ({settings.workers} workers)" if settings.workers > 1 else ""
    print(f"mlport {__version__} serving {settings.model_path} on http://{settings.host}:{settings.http_port}"
          f"{grpc}{workers}", file=sys.stderr, flush=True)


def _serve(settings: Any, group: Any = None, sock: socket.socket | None = None) -> None:
    """Run one server process until SIGINT/SIGTERM, which drain in-flight requests first."""
    import uvicorn

    from mlport.protocols.http.server import create_app

    app = create_app(settings, group=group)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.http_port, log_level=settings.log_level.lower(),
        access_log=settings.access_log, timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        lifespan="on", server_header=False,
        # uvloop when it is installed (grpc.aio runs on it too), else asyncio; httptools likewise, else h11
        loop="auto", http="auto",
    )
    # uvicorn drains in-flight requests on SIGINT/SIGTERM, then re-raises the signal with the handlers it
    # found: these make that last step a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


# ------------------------------------------------------------------------------------------------ workers
#: A worker that dies after it served is started again, unless this many did within RESTART_WINDOW_S.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: Seconds between checks, in a worker, that its parent is still there.
PARENT_CHECK_S = 1.0
#: How many connections each worker's listening socket queues.
BACKLOG = 2048


def _bind(host: str, port: int, listen: bool) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT, so that every worker listens on the same port and the kernel
    spreads new connections over them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _check_free(host: str, port: int, what: str) -> None:
    """Refuse a port another program listens on (SO_REUSEPORT alone would share it with that program)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise MlportError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from None


class _SharedReadiness:
    """The workers' 'first load done' flags, in memory shared with the parent and the other workers."""

    def __init__(self, flags: Any, index: int) -> None:
        self._flags = flags
        self._index = index

    def mark_loaded(self) -> None:
        self._flags[self._index] = 1

    def all_loaded(self) -> bool:
        return all(self._flags[:])


def _worker_main(values: dict[str, Any], index: int, flags: Any, parent: int, grpc_port: int) -> None:
    """The entry point of one worker process (started by :class:`_Supervisor`)."""
    from mlport.settings import Settings

    # Ctrl-C in a terminal signals the whole process group: the parent alone handles it and asks each
    # worker to drain once (a second signal would make the worker stop at once).
    os.setpgid(0, 0)
    settings = Settings(**{**values, "grpc_port": grpc_port})
    _configure_logging(settings.log_level, f"worker {index}")
    threading.Thread(target=_watch_parent, args=(parent,), name="mlport-parent-watch", daemon=True).start()
    sock = _bind(settings.host, settings.http_port, listen=True)
    try:
        _serve(settings, _SharedReadiness(flags, index), sock)
    finally:
        sock.close()


def _watch_parent(parent: int) -> None:
    """Stop (draining) when the parent went away without stopping this worker."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


class _Supervisor:
    """``--workers N``: N server processes listening on the same ports (SO_REUSEPORT), each with every
    model loaded; started, watched, restarted after a crash, and drained on SIGINT/SIGTERM."""

    def __init__(self, settings: Any) -> None:
        import multiprocessing

        self.settings = settings
        self.count = int(settings.workers)
        self._ctx = multiprocessing.get_context("spawn")
        self._flags = self._ctx.Array("b", self.count, lock=False)
        self._procs: list[Any] = [None] * self.count
        self._restarts: list[float] = []
        self._stopping = False
        self._reserved: list[socket.socket] = []
        self._metrics_dir: str | None = None
        self._killer: threading.Timer | None = None

    # -------------------------------------------------------------------- setup
    def _reserve_ports(self, share_grpc: bool) -> None:
        """Hold each port (bound, not listening) for the whole run: a port given as 0 gets its number here,
        and no other program can take the port while a worker restarts."""
        s = self.settings
        _check_free(s.host, s.http_port, "HTTP")
        http = _bind(s.host, s.http_port, listen=False)
        self._reserved.append(http)
        updates: dict[str, Any] = {"http_port": http.getsockname()[1]}
        if s.grpc_port:
            _check_free(s.host, s.grpc_port, "gRPC")
            if share_grpc:
                self._reserved.append(_bind(s.host, s.grpc_port, listen=False))
        self.settings = s.model_copy(update=updates)

    def _setup_environment(self) -> None:
        from mlport.protocols.service import MULTIPROCESS_ENV

        if not os.environ.get(MULTIPROCESS_ENV):
            self._metrics_dir = tempfile.mkdtemp(prefix="mlport-metrics-")
            os.environ[MULTIPROCESS_ENV] = self._metrics_dir
        # libraries that size their own thread pools from these (OpenMP, BLAS) get the worker's share
        share = str(self.settings.cores_per_worker())
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, share)

    # -------------------------------------------------------------------- running
    def run(self) -> int:
        from multiprocessing.connection import wait

        share_grpc = bool(self.settings.grpc_port)
        self._grpc_ports = [self.settings.grpc_port] * self.count
        self._reserve_ports(share_grpc)
        self._setup_environment()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        _announce(self.settings)
        status = 0
        try:
            for i in range(self.count):
                self._start(i)
            while any(p is not None and p.exitcode is None for p in self._procs) or not self._stopping:
                wait([p.sentinel for p in self._procs if p is not None and p.exitcode is None], timeout=0.5)
                for i, proc in enumerate(self._procs):
                    if proc is not None and proc.exitcode is not None:
                        status = max(status, self._reap(i, proc))
        finally:
            self._cleanup()
        return status

    def _start(self, index: int) -> None:
        self._flags[index] = 0
        values = self.settings.model_dump()
        proc = self._ctx.Process(
            target=_worker_main, name=f"mlport-worker-{index}",
            args=(values, index, self._flags, os.getpid(), self._grpc_ports[index]),
        )
        proc.start()
        self._procs[index] = proc
        log.info("worker %d started (pid %d)", index, proc.pid)

    def _reap(self, index: int, proc: Any) -> int:
        """Handle a worker that exited; returns the exit status it implies for the server."""
        self._procs[index] = None
        self._forget_metrics(proc.pid)
        code = proc.exitcode
        if self._stopping:
            if code != 0:
                log.warning("worker %d (pid %d) stopped with exit code %s", index, proc.pid, code)
            return 0 if code == 0 else 1
        served = bool(self._flags[index])
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
        if not served or len(self._restarts) >= MAX_RESTARTS:
            why = "before it finished loading" if not served else f"{MAX_RESTARTS} times in {RESTART_WINDOW_S:g} s"
            log.error("worker %d (pid %d) exited with code %s %s; stopping the server", index, proc.pid, code, why)
            self._stop()
            return 1
        log.error("worker %d (pid %d) exited with code %s; starting it again", index, proc.pid, code)
        self._restarts.append(now)
        self._start(index)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self._stopping:
            log.info("stopping: the workers finish their requests first")
        self._stop()

    def _stop(self) -> None:
        """Ask every worker to drain and stop (once); kill any that is still running after the time limit."""
        if self._stopping:
            return
        self._stopping = True
        for proc in self._procs:
            if proc is not None and proc.exitcode is None and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        self._killer = threading.Timer(float(self.settings.shutdown_timeout_s) + 15.0, self._kill_stragglers)
        self._killer.daemon = True
        self._killer.start()

    def _kill_stragglers(self) -> None:
        for proc in self._procs:
            if proc is not None and proc.exitcode is None and proc.pid is not None:
                log.error("worker pid %d did not stop in time; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)

    def _forget_metrics(self, pid: int | None) -> None:
        """A dead worker's gauges no longer describe anything; its counters stay in the totals."""
        from mlport.protocols.service import MULTIPROCESS_ENV

        folder = os.environ.get(MULTIPROCESS_ENV)
        if not folder or pid is None:
            return
        for path in Path(folder).glob(f"gauge_*_{pid}.db"):
            with contextlib.suppress(OSError):
                path.unlink()

    def _cleanup(self) -> None:
        if self._killer is not None:
            self._killer.cancel()
        for sock in self._reserved:
            sock.close()
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)


def _cmd_describe(args: argparse.Namespace) -> int:
    from mlport.formats.base import LoadOptions
    from mlport.formats.registry import default_registry
    from mlport.runtime.adapt import adapt
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
        cfg = src.config
        opts = LoadOptions(trusted=cfg.trusted, options=dict(cfg.options),
                           signature=cfg.signature.complete() if cfg.signature is not None else None)
        try:
            ev = adapt(formats.get(vsrc.format).load(vsrc.path, opts), cfg)
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


def _cmd_presets(args: argparse.Namespace) -> int:
    from mlport import presets

    if args.action == "build":
        try:
            for name in args.names or list(presets.PRESETS):
                print(presets.build(name, force=args.force))
        except presets.PresetError as exc:
            raise MlportError(str(exc)) from exc
        return 0
    print(f"presets in {presets.presets_dir()} (mlport serve preset:NAME builds one on first use):")
    for row in presets.status():
        state = "built" if row["built"] else ("ready to build" if not row["missing"]
                                             else f"needs {', '.join(row['missing'])}: {row['install']}")
        print(f"{row['name']:14} {row['summary']} [{state}]")
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
    pre = sub.add_parser("presets", help="list the preset models, or build them (mlport presets build [NAME...])")
    pre.add_argument("action", nargs="?", choices=["list", "build"], default="list")
    pre.add_argument("names", nargs="*")
    pre.add_argument("--force", action="store_true", help="rebuild presets that are built already")
    pre.set_defaults(func=_cmd_presets)
    from mlport.cli.hub import add_hub_command
    from mlport.cli.hubctl import add_client_commands

    add_hub_command(sub)
    add_client_commands(sub)
    from mlport.cli.score import add_score_command

    add_score_command(sub)
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
