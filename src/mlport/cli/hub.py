"""``mlport hub`` (run the hub) and ``mlport hub init`` (create the first admin)."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_hub_command"]

_EXAMPLES = """examples:
  mlport hub                                  # http://127.0.0.1:8090, data in ~/.local/share/mlport/hub
  mlport hub --http-port 9000 --data-dir ./hub-data
  mlport hub --serve presets --serve-http-port 8080 --serve-grpc-port 0
  MLPORT_HUB_ADMIN_PASSWORD=... mlport hub init
  mlport hub --store s3://models/hub --s3-endpoint-url http://127.0.0.1:9000"""


def add_hub_command(sub: Any) -> None:
    hub = sub.add_parser("hub", help="run the Serving Hub: registry, users, deployments and their gateway",
                         description="Run the hub (default), or `mlport hub init` to create the first admin. "
                                     "One hub per data folder: a second one on the same folder refuses to start.",
                         epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    hub.add_argument("action", nargs="?", choices=["serve", "init"], default="serve",
                     help="serve: run the hub (default); init: create the first admin and exit")
    hub.add_argument("--data-dir", type=Path, help="folder of the hub's state (default ~/.local/share/mlport/hub)")
    hub.add_argument("--store", help="artifact store: a folder (default <data-dir>/artifacts) or s3://bucket/prefix")
    hub.add_argument("--s3-endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    hub.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    hub.add_argument("--http-port", "--port", dest="port", type=int, help="HTTP port (default 8090)")
    hub.add_argument("--grpc-port", type=int,
                     help="the gateway's gRPC port (Open Inference Protocol; off by default; 0: a free port)")
    hub.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (with --tls-key)")
    hub.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    hub.add_argument("--tls-client-ca", type=Path, metavar="PEM",
                     help="mutual TLS: accept only clients whose certificate this CA signed")
    hub.add_argument("--public-name", dest="public_names", action="append", metavar="NAME",
                     help="a name browsers reach the hub by (repeat; default: the --host, localhost, 127.0.0.1)")
    hub.add_argument("--jwt-algorithm", choices=["HS256", "RS256"], help="token signing (default HS256)")
    hub.add_argument("--jwt-private-key", type=Path, help="PEM private key (RS256)")
    hub.add_argument("--jwt-public-key", type=Path,
                     help="PEM public key (RS256; derived from the private key when absent)")
    hub.add_argument("--controller-interval", dest="controller_interval_s", type=float,
                     help="seconds between two passes of the deployment controller (default 1)")
    hub.add_argument("--shadow-max-pending", type=int, metavar="N",
                     help="shadow copies waiting at most; beyond it they are dropped and counted (default 64)")
    hub.add_argument("--shadow-max-cpu", type=float, metavar="CORES",
                     help="send no shadow copy while the hub used more than this share of a core over the last "
                          "0.1 s; they wait in the queue meanwhile (default 0.5; 0: no CPU rule)")
    hub.add_argument("--log-level", help="debug, info, warning, error (default info)")
    hub.add_argument("--access-log", action="store_true", default=None, help="log one line per request")
    hub.add_argument("--access-log-format", choices=["text", "json"],
                     help="text (default): a line per request; json: a JSON object per gateway request "
                          "(turns the access log on)")
    hub.add_argument("--serve", metavar="PATH", help="also run `mlport serve PATH` (default ports 8080/8081) beside "
                                                     "the hub, stopped with it; e.g. --serve presets")
    hub.add_argument("--serve-http-port", type=int, help="--serve: the runtime's HTTP port (default 8080)")
    hub.add_argument("--serve-grpc-port", type=int, help="--serve: the runtime's gRPC port (default 8081; 0: none)")
    hub.set_defaults(func=_cmd_hub)


def _settings(args: argparse.Namespace) -> Any:
    from mlport.hub.settings import HubSettings

    fields = ["data_dir", "store", "s3_endpoint_url", "host", "port", "grpc_port", "jwt_algorithm", "jwt_private_key",
              "jwt_public_key", "controller_interval_s", "log_level", "access_log", "access_log_format",
              "tls_cert", "tls_key", "tls_client_ca", "public_names", "shadow_max_pending", "shadow_max_cpu"]
    given = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    return HubSettings(**given)


def _cmd_hub(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from mlport.errors import MlportError

    try:
        settings = _settings(args)
    except ValidationError as exc:
        raise MlportError(f"invalid hub settings: {exc}") from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check otherwise
    from mlport.hub.lock import DataDirLock
    from mlport.hub.service import Hub

    with DataDirLock(settings.data_dir) as lock:
        lock.acquire(f"http://{settings.host}:{settings.port}" if args.action == "serve" else "mlport hub init")
        hub = Hub(settings)
        created, password = hub.bootstrap()
        if args.action == "init":
            _print_init(created, password)
            hub.db.close()
            return 0
        if password is not None:
            print(f"created user 'admin' with password: {password}\n(shown once; set MLPORT_HUB_ADMIN_PASSWORD to "
                  "choose it yourself)", flush=True)
        runtime = _start_runtime(args) if args.serve else None
        try:
            return _run(hub, _sign_in_hint(created, password))
        finally:
            if runtime is not None:
                _stop_runtime(runtime)


def _sign_in_hint(created: bool, password: str | None) -> str:
    if password is not None:
        return f"sign in as admin with password {password}"
    if created:
        return "sign in as admin with the password of MLPORT_HUB_ADMIN_PASSWORD"
    return "sign in with your user name and password"


def _print_init(created: bool, password: str | None) -> None:
    if not created:
        print("an admin exists already; nothing to do")
    elif password is None:
        print("created user 'admin' with the password from MLPORT_HUB_ADMIN_PASSWORD")
    else:
        print(f"created user 'admin' with the one-time password below (only its hash is stored; keep it "
              f"safe):\n{password}")


def _start_runtime(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """``mlport serve PATH`` as a child process that shares the terminal and dies with the hub."""
    import os

    from mlport.deploy.procs import die_with

    cmd = [sys.executable, "-m", "mlport.cli.main", "serve", args.serve]
    if args.serve_http_port is not None:
        cmd += ["--http-port", str(args.serve_http_port)]
    if args.serve_grpc_port is not None:
        cmd += ["--grpc-port", str(args.serve_grpc_port)]
    return subprocess.Popen(cmd, preexec_fn=die_with(os.getpid()))


def _stop_runtime(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _run(hub: Any, hint: str) -> int:
    import uvicorn

    from mlport.hub.app import build_app
    from mlport.observability.access import AccessLog
    from mlport.protocols.http.wire import CoalescingHttpProtocol
    from mlport.protocols.tls import server_tls
    from mlport.serving.sockets import bind, url_host

    settings = hub.settings
    tls = server_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    json_log = settings.access_log_format == "json"
    config = uvicorn.Config(build_app(hub, AccessLog() if json_log else None), host=settings.host,
                            port=settings.port, log_level=settings.log_level, http=CoalescingHttpProtocol,
                            access_log=settings.access_log and not json_log, lifespan="on",
                            timeout_graceful_shutdown=30, **(tls.uvicorn_options() if tls is not None else {}))
    server = uvicorn.Server(config)
    # uvicorn stops the hub (and its replicas) on SIGINT/SIGTERM, then re-raises the signal with the handlers
    # it found: these make that last step a clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    # bound before the banner: a taken port is one clear line (exit 2), and the banner names a port that listens
    sock = bind(settings.host, settings.port, "the hub's HTTP")
    scheme = "https" if tls is not None else "http"
    url = f"{scheme}://{url_host(settings.host)}:{sock.getsockname()[1]}"
    print(f"mlport hub on {url} (data in {settings.data_dir}, artifacts in {settings.store_url})\n"
          f"console: open {url}/ in a browser and {hint}", flush=True)
    try:
        server.run(sockets=[sock])  # on uvloop when it is installed (the config's loop "auto"), as the runtime
    except KeyboardInterrupt:
        return 130
    return 0 if server.started else 1

