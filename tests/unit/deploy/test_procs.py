"""Process helpers and Endpoint counting, with real (tiny) child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlport.deploy.procs import free_port, log_tail, rotate_log, set_nice, spawn, terminate
from mlport.deploy.replicas import Endpoint
from tests.waiting import wait_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and PR_SET_PDEATHSIG")


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_free_port_is_bindable() -> None:
    port = free_port("127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert free_port("127.0.0.1", frozenset({port})) != port


def test_spawn_logs_and_terminate_is_graceful(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    proc = spawn([sys.executable, "-c", "import time; print('hello', flush=True); time.sleep(60)"], log)
    try:
        wait_for(lambda: "hello" in log.read_text().splitlines(), 20, what="the child's output")
        assert os.getpgid(proc.pid) == proc.pid  # its own process group
        assert asyncio.run(terminate(proc, grace_s=10)) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert "starting:" in log.read_text()


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); "
            "time.sleep(60)")
    proc = spawn([sys.executable, "-c", code], log)
    try:
        wait_for(lambda: "armed" in log.read_text().splitlines(), 20, what="the child to ignore SIGTERM")
        assert asyncio.run(terminate(proc, grace_s=0.5)) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


@linux_only
def test_children_die_with_their_parent(tmp_path: Path) -> None:
    """A process that spawned a child is SIGKILLed: the child gets SIGTERM (parent-death signal)."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mlport.deploy.procs import spawn\n"
        "child = spawn([sys.executable, '-c', 'import time; time.sleep(120)'], Path(sys.argv[1]))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "child.log")], stdout=subprocess.PIPE)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not alive(child), 20, what="the orphaned child to end")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)


def test_log_tail_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    log.write_text("--- starting: x\nold line\n\nfirst\nsecond\n")
    start = len("--- starting: x\nold line\n")
    assert log_tail(log, start) == "first\nsecond"
    assert log_tail(log, 0, lines=1) == "second"
    assert log_tail(tmp_path / "missing.log") == ""
    rotate_log(log, limit=10)
    assert not log.exists()
    assert (tmp_path / "r.log.1").read_text().endswith("second\n")
    log.write_text("small")
    rotate_log(log, limit=10)
    assert log.read_text() == "small"


def test_endpoint_counts_requests_in_flight() -> None:
    ep = Endpoint(url="http://127.0.0.1:1", pid=1)
    with ep.track() as same:
        assert same is ep
        assert ep.inflight == 1
        ep.acquire()
        assert ep.inflight == 2
        ep.release()
    assert ep.inflight == 0
    with pytest.raises(RuntimeError), ep.track():
        raise RuntimeError("the request failed")
    assert ep.inflight == 0
    ep.release()  # never below zero
    assert ep.inflight == 0


@linux_only
def test_set_nice_on_every_thread(tmp_path: Path) -> None:
    def nice_of(pid: int) -> set[int]:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return {int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks}

    own = os.getpriority(os.PRIO_PROCESS, 0)
    code = ("import threading, time; threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); "
            "print('up', flush=True); time.sleep(60)")
    log = tmp_path / "niced.log"
    proc = spawn([sys.executable, "-c", code], log)
    try:
        wait_for(lambda: "up" in log.read_text().splitlines(), 20, what="the child's threads")
        assert len(list(Path(f"/proc/{proc.pid}/task").iterdir())) == 2 and nice_of(proc.pid) == {own}
        assert set_nice(proc.pid, 19)
        assert nice_of(proc.pid) == {19}  # both threads: on Linux a niceness belongs to each thread
        if os.geteuid() == 0:  # raising it back needs CAP_SYS_NICE
            assert set_nice(proc.pid, None)
            assert nice_of(proc.pid) == {own}
    finally:
        proc.kill()
        proc.wait()
    assert not set_nice(proc.pid, 19)  # gone
