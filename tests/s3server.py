"""A real S3-protocol server (moto's server mode) in its own process, for tests that need a bucket.

Use the session fixture by importing it into a test module (``from tests.s3server import s3_server``) and
asking for it with ``request.getfixturevalue("s3_server")`` or as an argument; ``make_bucket`` gives each
test its own bucket.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

__all__ = ["S3Server", "make_bucket", "s3_client", "s3_server", "start_s3_server"]


@dataclass
class S3Server:
    endpoint_url: str
    proc: subprocess.Popen[bytes]
    access_key: str
    secret_key: str
    region: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def options(self) -> dict[str, str]:
        """Keyword arguments for ``S3Store`` / ``open_store``."""
        return {"endpoint_url": self.endpoint_url, "region": self.region, "access_key": self.access_key,
                "secret_key": self.secret_key}

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def start_s3_server(log_dir: Path, *, timeout: float = 60, attempts: int = 3) -> S3Server:
    """Start ``python -m moto.server`` on a free port of 127.0.0.1 and wait until it answers."""
    log_dir.mkdir(parents=True, exist_ok=True)
    last = ""
    for _ in range(attempts):
        port = free_port()
        log_path = log_dir / f"moto-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = S3Server(f"http://127.0.0.1:{port}", proc, "testing", "testing", "us-east-1", log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(server.endpoint_url):
                return server
            time.sleep(0.1)
        last = server.log()
        server.stop()  # the port was taken meanwhile, or the server did not come up: try another port
    raise RuntimeError(f"the S3 test server did not start:\n{last}")


def s3_client(server: S3Server) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint_url, region_name=server.region,
                        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)


def make_bucket(server: S3Server, name: str | None = None) -> str:
    """Create a bucket (a fresh unique name by default) and return its name."""
    name = name or f"test-{uuid.uuid4().hex[:20]}"
    s3_client(server).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3 server process for the whole test session, stopped at its end."""
    server = start_s3_server(tmp_path_factory.mktemp("s3-logs"))
    try:
        yield server
    finally:
        server.stop()
