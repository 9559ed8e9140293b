"""Images in tests: a base made from Debian packages (mmdebstrap), a real OCI registry (Debian's docker-registry)
and running an image's command with ``buildah run --isolation chroot`` on the host's loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port, stop_process

#: The test base: Debian bookworm with python3 and venv, imported once per machine (reused while it exists).
DEBIAN_BASE = "localhost/mlport-test-debian:bookworm"
TOOLS = ("buildah", "mmdebstrap", "skopeo", "docker-registry")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def ensure_debian_base(workdir: Path) -> str:
    """The test base image, built from Debian's packages when it is not there yet (about 20 s to 2 min)."""
    if subprocess.run(["buildah", "inspect", "--type", "image", DEBIAN_BASE], capture_output=True,
                      check=False).returncode == 0:
        return DEBIAN_BASE
    rootfs = workdir / "rootfs.tar"
    subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(rootfs)],
                   check=True, capture_output=True, timeout=900)
    ctr = subprocess.run(["buildah", "from", "scratch"], check=True, capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["buildah", "add", ctr, str(rootfs), "/"], check=True, capture_output=True, timeout=300)
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        subprocess.run(["buildah", "config", "--env", path, ctr], check=True, capture_output=True)
        subprocess.run(["buildah", "commit", "-q", ctr, DEBIAN_BASE], check=True, capture_output=True, timeout=300)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
        rootfs.unlink(missing_ok=True)
    return DEBIAN_BASE


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def registry(workdir: Path, htpasswd: Path | None = None) -> Iterator[Registry]:
    """A docker-registry on 127.0.0.1 with its storage in ``workdir``; stopped on exit."""
    port = free_port()
    auth = (f"auth:\n  htpasswd:\n    realm: mlport-test\n    path: {htpasswd}\n" if htpasswd else "")
    config = workdir / f"registry-{port}.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: "
                      f"{workdir / f'storage-{port}'}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}")
    log = workdir / f"registry-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {log.read_text()}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not answer: {log.read_text()}") from None
                time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", proc, log)
    finally:
        stop_process(proc)


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    container: str
    log: Path

    def server_pid(self) -> int:
        """The pid of the image's own process (the deepest descendant of ``buildah run``)."""
        pid = self.proc.pid
        while True:
            children = _children(pid)
            if not children:
                return pid
            pid = children[0]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def image_command(image: str) -> list[str]:
    """The image's entrypoint followed by its default command, as a container runtime would run it."""
    import json

    out = subprocess.run(["buildah", "inspect", "--type", "image", image], check=True, capture_output=True,
                         text=True).stdout
    config = json.loads(out)["OCIv1"]["config"]
    return [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]


@contextmanager
def run_image(image: str, argv: list[str], workdir: Path, ready_url: str, timeout: float = 120,
              env: dict[str, str] | None = None) -> Iterator[Running]:
    """Run ``argv`` in a container of ``image`` (chroot isolation, host network) until it answers ``ready_url``."""
    ctr = subprocess.run(["buildah", "from", image], check=True, capture_output=True, text=True).stdout.strip()
    for key, value in (env or {}).items():
        subprocess.run(["buildah", "config", "--env", f"{key}={value}", ctr], check=True, capture_output=True)
    log = workdir / f"{ctr}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["buildah", "run", "--isolation", "chroot", ctr, "--", *argv], stdout=out,
                                stderr=subprocess.STDOUT)
    running = Running(proc, ctr, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the image's command exited with {proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout} s: {log.read_text()}")
            time.sleep(0.2)
        yield running
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(running.server_pid(), signal.SIGTERM)
        stop_process(proc)
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)
