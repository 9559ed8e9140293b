"""``mlport serve --workers N``: N server processes listening on the same ports (SO_REUSEPORT), each with every
model loaded; started, watched, restarted after a crash, and drained on SIGINT/SIGTERM.

The supervisor hands each worker everything as arguments of :func:`worker_main`: the settings, the HTTP port
it reserved, and the folder where the workers keep the metrics they share.  A worker process imports the
server only after it has chosen prometheus_client's multiprocess mode (which that library reads from its
environment variable when it is first imported), so this module imports neither at its top.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mlport.serving import EXIT_MODEL_FAILED, configure_logging
from mlport.serving.sockets import bind, check_free
from mlport.settings import Settings

__all__ = ["Supervisor", "worker_main"]

log = logging.getLogger("mlport.serving")

#: A worker that dies after it served is started again, unless this many did within RESTART_WINDOW_S.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: Seconds between checks, in a worker, that its parent is still there.
PARENT_CHECK_S = 1.0
#: The variable prometheus_client reads, when first imported, to keep its values in files shared by processes.
_PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Libraries that size their own thread pools from these (OpenMP, BLAS) get the worker's share of the cores.
_THREAD_ENVS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class _SharedReadiness:
    """The workers' 'first load done' flags, in memory shared with the parent and the other workers."""

    def __init__(self, flags: Any, index: int) -> None:
        self._flags = flags
        self._index = index

    def mark_loaded(self) -> None:
        self._flags[self._index] = 1

    def all_loaded(self) -> bool:
        return all(self._flags[:])


def worker_main(values: dict[str, Any], index: int, flags: Any, parent: int, metrics_dir: str) -> None:
    """The entry point of one worker process (started by :class:`Supervisor`)."""
    # Ctrl-C in a terminal signals the whole process group: the parent alone handles it and asks each
    # worker to drain once (a second signal would make the worker stop at once).
    os.setpgid(0, 0)
    settings = Settings(**values)
    # before the server (and with it prometheus_client and the model libraries) is imported
    os.environ[_PROMETHEUS_DIR_ENV] = metrics_dir
    for var in _THREAD_ENVS:
        os.environ.setdefault(var, str(settings.cores_per_worker()))
    from mlport.observability.sharedvalues import use_shared_values

    use_shared_values()  # before any metric exists
    from mlport.serving.process import serve_process

    configure_logging(settings.log_level, f"worker {index}")
    threading.Thread(target=_watch_parent, args=(parent,), name="mlport-parent-watch", daemon=True).start()
    sock = bind(settings.host, settings.http_port, "HTTP", reuse_port=True)
    try:
        code = serve_process(settings, group=_SharedReadiness(flags, index), sock=sock, metrics_dir=metrics_dir)
    finally:
        sock.close()
    if code:
        raise SystemExit(code)


def _watch_parent(parent: int) -> None:
    """Stop (draining) when the parent went away without stopping this worker."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


class Supervisor:
    """Starts ``settings.workers`` worker processes and watches them until SIGINT/SIGTERM."""

    def __init__(self, settings: Settings) -> None:
        import multiprocessing

        self.settings = settings
        self.count = settings.workers
        self._ctx = multiprocessing.get_context("spawn")
        self._flags = self._ctx.Array("b", self.count, lock=False)
        self._procs: list[Any] = [None] * self.count
        self._restarts: list[float] = []
        self._stopping = False
        self._reserved: list[socket.socket] = []
        # prometheus_client's own variable, when the operator set it, names the folder to use
        self._metrics_dir = os.environ.get(_PROMETHEUS_DIR_ENV) or ""
        self._own_metrics_dir = False
        self._killer: threading.Timer | None = None

    # -------------------------------------------------------------------- setup
    def _reserve_ports(self) -> None:
        """Hold each port (bound, not listening) for the whole run: a port given as 0 gets its number here,
        and no other program can take the port while a worker restarts."""
        s = self.settings
        check_free(s.host, s.http_port, "HTTP")
        http = bind(s.host, s.http_port, "HTTP", listen=False, reuse_port=True)
        self._reserved.append(http)
        if s.grpc_port:
            check_free(s.host, s.grpc_port, "gRPC")
            self._reserved.append(bind(s.host, s.grpc_port, "gRPC", listen=False, reuse_port=True))
        self.settings = s.model_copy(update={"http_port": http.getsockname()[1]})

    # -------------------------------------------------------------------- running
    def run(self) -> int:
        from multiprocessing.connection import wait

        from mlport.serving.process import announce

        self._reserve_ports()
        if not self._metrics_dir:
            self._metrics_dir, self._own_metrics_dir = tempfile.mkdtemp(prefix="mlport-metrics-"), True
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        announce(self.settings, self.settings.http_port, self.settings.grpc_port)
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
        proc = self._ctx.Process(
            target=worker_main, name=f"mlport-worker-{index}",
            args=(self.settings.model_dump(), index, self._flags, os.getpid(), self._metrics_dir),
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
        if code == EXIT_MODEL_FAILED:
            log.error("worker %d (pid %d): a model failed to load (--exit-on-error); stopping the server",
                      index, proc.pid)
            self._stop()
            return EXIT_MODEL_FAILED
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
        if not self._metrics_dir or pid is None:
            return
        for path in Path(self._metrics_dir).glob(f"gauge_*_{pid}.db"):
            with contextlib.suppress(OSError):
                path.unlink()

    def _cleanup(self) -> None:
        if self._killer is not None:
            self._killer.cancel()
        for sock in self._reserved:
            sock.close()
        if self._own_metrics_dir:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
