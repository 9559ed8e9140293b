"""Child-process helpers for replica sets: free ports, spawning tied to the parent's life, CPU priority (shadow
replicas serve at a lower one), stopping, log tails."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "MAX_LOG_BYTES",
    "free_port",
    "log_tail",
    "rotate_log",
    "set_nice",
    "spawn",
    "terminate",
]

#: A replica's log file is moved aside (one old copy kept) when it is larger than this at a (re)start.
MAX_LOG_BYTES = 16 * 1024 * 1024
#: Most bytes read back from the end of a log for an error message.
TAIL_BYTES = 64 * 1024
_PR_SET_PDEATHSIG = 1


def free_port(host: str, avoid: frozenset[int] = frozenset()) -> int:
    """A TCP port that is free on ``host`` now: bind port 0, read the number the kernel chose, release it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise OSError(f"no free port found on {host}")


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_PRCTL = _prctl()


def die_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send SIGTERM to the child when ``parent`` ends (PR_SET_PDEATHSIG).

    The signal follows the *thread* that forked: spawn from a thread that lives as long as the process (the
    event loop's), never from a short-lived worker thread.
    """
    prctl = _PRCTL
    if prctl is None:
        return None

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent ended before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def _tasks(pid: int) -> list[int]:
    """The threads of ``pid`` and, recursively, of its children (Linux; ``[pid]`` elsewhere)."""
    root = Path(f"/proc/{pid}/task")
    if not root.is_dir():
        return [pid]
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 4096:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            found.append(int(task.name))
            with contextlib.suppress(OSError, ValueError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def set_nice(pid: int, nice: int | None) -> bool:
    """Set the niceness of process ``pid`` (every thread, and its children's) to ``nice`` (``None``: this
    thread's own).  False when not allowed (raising a niceness back needs CAP_SYS_NICE or a large enough
    RLIMIT_NICE) or the process is gone.  On Linux a niceness belongs to each thread, so each one is set."""
    if nice is None:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    done = True
    for tid in _tasks(pid):
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) != nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # not allowed, or the thread ended meanwhile
            done = False
    return done


def spawn(cmd: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr appended to ``log_path``, in its own process group (a Ctrl-C in
    the parent's terminal is the parent's to handle), and ending with the parent (Linux)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
            env=dict(env) if env is not None else None, preexec_fn=die_with(os.getpid()), process_group=0,
        )


async def terminate(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> int | None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL (the process and its process group) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if proc.poll() is None:
        # still ours and not reaped: its pid (and group id, set at spawn) cannot have been reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        deadline = time.monotonic() + 10.0
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    return proc.poll()


def rotate_log(path: Path, limit: int = MAX_LOG_BYTES) -> None:
    """Move ``path`` to ``path.1`` (replacing an older copy) when it grew past ``limit`` bytes."""
    try:
        if path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".1"))
    except OSError:
        pass


def log_tail(path: Path, start: int = 0, lines: int = 6, max_chars: int = 1500) -> str:
    """The last ``lines`` non-empty lines written to ``path`` after byte ``start`` (for an error message)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - TAIL_BYTES) if start <= size else max(0, size - TAIL_BYTES))
            data = f.read(TAIL_BYTES)
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip() and not ln.startswith("--- ")]
    out = "\n".join(kept[-lines:])
    return out[-max_chars:]
