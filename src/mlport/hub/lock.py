"""One hub per data folder: an OS file lock on ``<data_dir>/hub.lock``, held for the hub's life.

Two hubs on one folder would each start the deployments' replicas and split the state (an undeploy through
one would leave the other serving).  The lock is ``flock`` on a file that records the holder's pid and URL, so
a second hub refuses to start and names the first; the kernel releases the lock when the holder ends, however
it ends, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from mlport.errors import MlportError

__all__ = ["LOCK_NAME", "DataDirLock"]

LOCK_NAME = "hub.lock"
_MAX_READ = 4096


class DataDirLock:
    """``acquire`` takes the folder's lock (or raises :class:`MlportError` naming the holder); ``release``
    gives it back.  The lock file's descriptor is not inherited by child processes (replicas)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, url: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            pid, where = holder.get("pid", "?"), holder.get("url", "an unknown address")
            raise MlportError(f"the data folder {self.path.parent} is in use by another hub (pid {pid}, {where}): "
                              "stop it first, or give this hub another --data-dir") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "url": url, "started_at": time.time()}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, _MAX_READ, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
