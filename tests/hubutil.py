"""A real ``mlport hub`` process on 127.0.0.1 for tests, and small helpers to drive it."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port, stop_process
from tests.waiting import until, wait_for  # noqa: F401  (the shared waits, re-exported for the hub tests)

ADMIN_PASSWORD = "admin-password-for-tests"
JWT_SECRET = "0123456789abcdef0123456789abcdef-test-secret"


@dataclass
class HubProc:
    url: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    #: what its certificate is verified with when it serves HTTPS
    verify: ssl.SSLContext | bool = True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, token: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=timeout, headers=headers, verify=self.verify)

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        r = httpx.post(self.url + "/auth/token", json={"username": username, "password": password}, timeout=30,
                       verify=self.verify)
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        return stop_process(self.proc, sig, timeout)


def start_hub(data_dir: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None,
              timeout: float = 60, jwt_secret: bool = True, ca: Path | None = None) -> HubProc:
    """``ca``: the hub serves HTTPS (``--tls-cert`` in ``args``) with a certificate this CA signed."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"hub-{port}-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "MLPORT_HUB_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLPORT_HUB_JWT_SECRET": JWT_SECRET,
                **(env or {})}
    if not jwt_secret:
        del full_env["MLPORT_HUB_JWT_SECRET"]
    cmd = [sys.executable, "-m", "mlport.cli.main", "hub", "--data-dir", str(data_dir), "--http-port", str(port),
           "--controller-interval", "0.2", *args]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    verify = ssl.create_default_context(cafile=str(ca)) if ca is not None else True
    hub = HubProc(f"{'https' if ca else 'http'}://127.0.0.1:{port}", port, data_dir, proc, log_path, env or {}, verify)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hub exited with {proc.returncode}:\n{hub.log()}")
        try:
            if httpx.get(hub.url + "/healthz", timeout=2, verify=verify).status_code == 200:
                return hub
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    hub.stop(signal.SIGKILL)
    raise RuntimeError(f"hub did not start:\n{hub.log()}")


def ready_versions(client: httpx.Client, deployment: str) -> dict[int, int]:
    """Ready replicas per version of a deployment, from the management API."""
    r = client.get(f"/api/v1/deployments/{deployment}")
    r.raise_for_status()
    replicas = r.json().get("replicas") or {}
    out: dict[int, int] = {}
    for info in replicas.get("versions") or []:
        out[int(info["version"])] = out.get(int(info["version"]), 0) + int(info.get("ready", 0))
    return out


def version_status(client: httpx.Client, deployment: str, version: int) -> dict[str, Any]:
    """The controller's status of one version of a deployment (pids, ports, ready, desired...)."""
    r = client.get(f"/api/v1/deployments/{deployment}")
    r.raise_for_status()
    for info in (r.json().get("replicas") or {}).get("versions") or []:
        if int(info["version"]) == version:
            return dict(info)
    return {}


def cli(config_home: Path, *args: str, stdin: str | None = "", env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A real ``mlport`` CLI process with its own saved login under ``config_home`` and no terminal."""
    full_env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), **(env or {})}
    for name in ("MLPORT_HUB_TOKEN", "MLPORT_HUB_URL", "MLPORT_HUB_PASSWORD"):
        if name not in (env or {}):
            full_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "mlport.cli.main", *args], input=stdin, capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def cli_login(hub: HubProc, config_home: Path) -> Path:
    """``config_home`` logged in to ``hub`` as admin, for :func:`cli` and :func:`cli_ok`."""
    r = cli(config_home, "login", "--hub", hub.url, "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    return config_home


def cli_ok(config_home: Path, *args: str) -> str:
    """A CLI command that must succeed without a traceback: its standard output."""
    r = cli(config_home, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout


@contextlib.contextmanager
def running_hub(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[HubProc]:
    """:func:`start_hub` for the length of a ``with`` block (a module fixture's body)."""
    proc = start_hub(data_dir, *args, env=env)
    try:
        yield proc
    finally:
        proc.stop()
