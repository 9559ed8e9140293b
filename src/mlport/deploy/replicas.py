"""N ``mlport serve`` processes of one artifact on local ports: started, health-checked, restarted, drained.

A :class:`ReplicaSet` belongs to one event loop and is used from that loop's thread only (the controller and
the gateway); its processes are spawned from that thread, which Linux's parent-death signal is tied to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mlport.core.backoff import Backoff
from mlport.deploy.autoscale import MAX_REPLICAS
from mlport.deploy.endpoint import Endpoint
from mlport.deploy.procs import free_port, log_tail, rotate_log, set_nice, spawn, terminate
from mlport.errors import InvalidInput, MlportError
from mlport.protocols.tls import ServerTls

__all__ = ["Endpoint", "ReplicaSet"]

log = logging.getLogger("mlport.deploy")

#: Restart back-off: the first restart after 1 s, doubling up to 30 s; back to 1 s after 60 s up.
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_S = 60.0
#: A replica being removed gets this long for its requests in flight before it is stopped.
DRAIN_S = 30.0
#: SIGTERM, then SIGKILL after this long.
STOP_GRACE_S = 10.0
#: Health checks: a ready replica is taken out of rotation after this many failed checks in a row.
HEALTH_FAILURES = 3
#: ... and stopped (then restarted with back-off) after this many: it hangs or lost its model.
HEALTH_RESTART_FAILURES = 30
#: A starting replica whose model is reported failed in every check for this long did not load, seconds (a
#: state seen once may be the moment before the load begins; a failed load stays failed in a replica).
LOAD_FAILURE_CONFIRM_S = 1.0
HEALTH_TIMEOUT = httpx.Timeout(2.0, connect=1.0)
#: How often the replicas handed to requests are checked to be alive, at most (seconds).
ALIVE_POLL_S = 0.05
#: A replica that exits with a port clash right after start is started again on another port, this often.
BIND_RETRIES = 5
_BIND_ERROR = re.compile(r"address already in use|errno 98|eaddrinuse|cannot listen for grpc", re.IGNORECASE)


@dataclass(eq=False)
class _Replica:
    """One slot of the set: its current process (None while waiting to restart) and its restart state."""

    index: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    endpoint: Endpoint | None = None
    ready: bool = False
    started_at: float = 0.0
    log_start: int = 0
    failures: int = 0
    #: Since when every health check found the model failed (``time.monotonic()``), None when the last did not.
    load_failed_since: float | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(BACKOFF_START_S, BACKOFF_MAX_S, BACKOFF_RESET_S))
    next_start: float | None = None
    bind_retries: int = 0
    #: when :meth:`ReplicaSet.endpoints` asks next whether the process is still alive (``time.monotonic()``)
    next_poll: float = 0.0


class ReplicaSet:
    """``desired`` processes of ``mlport serve PATH --name NAME`` on free ports of ``host``.

    :meth:`scale` starts or removes processes, :meth:`supervise` (called periodically by the owner) restarts
    crashed ones and health-checks them, :meth:`endpoints` lists the replicas ready for traffic, :meth:`close`
    stops everything.  Each replica logs to its own file in ``log_dir``.
    """

    def __init__(self, key: str, path: Path, *, name: str, trusted: bool = False, log_dir: Path,
                 host: str = "127.0.0.1", extra_args: Sequence[str] = (), ready_timeout_s: float = 120.0,
                 tls: ServerTls | None = None, nice: int | None = None) -> None:
        self.key = key
        self.path = Path(path)
        self.name = name
        self.trusted = trusted
        self.log_dir = Path(log_dir)
        self.host = host
        self.extra_args = tuple(extra_args)
        #: TLS between the hub and its replicas: they serve HTTPS with the hub's certificate
        self.tls = tls
        self.ready_timeout_s = float(ready_timeout_s)
        #: niceness of the processes once ready (they start at the hub's, so that loading the model is not
        #: starved on a busy machine), ``None``: the hub's; a shadow version's serve at a lower CPU priority
        self.nice = nice
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        #: When a replica last became ready (``time.time()``), None before the first one did.
        self.last_ready_at: float | None = None
        self._replicas: list[_Replica] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self._draining: list[_Replica] = []
        self._next_index = 0
        self._restarts = 0
        self._waiting = 0
        self._closed = False
        self._lock = asyncio.Lock()
        self._check_lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "replica"

    # ------------------------------------------------------------------ views
    @property
    def desired(self) -> int:
        return len(self._replicas)

    @property
    def ready_count(self) -> int:
        return len(self.endpoints())

    @property
    def inflight(self) -> int:
        """Requests in flight on the replicas in rotation plus requests waiting for a replica to start."""
        return sum(r.endpoint.inflight for r in self._replicas if r.endpoint is not None) + self._waiting

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def closed(self) -> bool:
        return self._closed

    def endpoints(self) -> list[Endpoint]:
        """The replicas ready for traffic: answered their health check, process alive, not being removed."""
        out = []
        now = time.monotonic()
        for r in self._replicas:
            ep = r.endpoint
            if ep is None or not r.ready or not ep.healthy:
                continue
            if r.proc is None:
                continue
            if now >= r.next_poll:  # a system call each; a request to a replica dead since fails over anyway
                r.next_poll = now + ALIVE_POLL_S
                if r.proc.poll() is not None:
                    ep.healthy = False  # exited: out of rotation now; supervise() restarts it
                    continue
            out.append(ep)
        return out

    @property
    def failure(self) -> str | None:
        """The last error when no replica became ready since it happened (a model that fails to load, a replica
        that keeps crashing): requests can be refused with it at once instead of waiting."""
        if self.last_error is None or self.last_error_at is None or self.ready_count:
            return None
        if self.last_ready_at is not None and self.last_ready_at >= self.last_error_at:
            return None
        return self.last_error

    def pids(self) -> list[int]:
        """Every process of this set that has not been reaped yet (including replicas being removed)."""
        return [r.proc.pid for r in (*self._replicas, *self._draining)
                if r.proc is not None and r.proc.poll() is None]

    def set_nice(self, nice: int | None) -> bool:
        """Run the processes (those running and those ready from now on) at niceness ``nice`` (``None``: the
        hub's own); False when a running one could not be set (raising the priority back needs CAP_SYS_NICE: it
        then keeps the lower priority until it is restarted)."""
        self.nice = nice
        return all([set_nice(pid, nice) for pid in self.pids()])

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Count a request waiting for a replica (it shows in :attr:`inflight`, so the autoscaler sees it)."""
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        rows = []
        for r in self._replicas:
            alive = r.proc is not None and r.proc.poll() is None
            rows.append({
                "replica": r.index,
                "pid": r.proc.pid if alive and r.proc is not None else None,
                "port": r.endpoint.port if alive and r.endpoint is not None else None,
                "grpc_port": r.endpoint.grpc_port or None if alive and r.endpoint is not None else None,
                "url": r.endpoint.url if alive and r.endpoint is not None else None,
                "state": "ready" if alive and r.ready and r.endpoint is not None and r.endpoint.healthy
                else "unhealthy" if alive and r.ready else "starting" if alive else "restarting",
                "inflight": r.endpoint.inflight if r.endpoint is not None else 0,
                "restarts": r.restarts,
                "uptime_s": round(now - r.started_at, 1) if alive else None,
                "restart_in_s": round(max(0.0, r.next_start - now), 1) if not alive and r.next_start else None,
                "log": str(r.log_path),
            })
        ready = [row for row in rows if row["state"] == "ready"]
        return {
            "key": self.key,
            "desired": self.desired,
            "ready": len(ready),
            "pids": [row["pid"] for row in rows if row["pid"] is not None],
            "ports": [row["port"] for row in ready],
            "inflight": self.inflight,
            "restarts": self._restarts,
            "draining": len(self._draining),
            "nice": self.nice,
            "last_error": self.last_error,
            "failure": self.failure,
            "replicas": rows,
        }

    # ------------------------------------------------------------------ scaling
    async def scale(self, n: int, *, wait: bool = True) -> None:
        """Start or remove processes until ``n`` are wanted.  Removal takes the newest first and drains it (no new
        requests; stopped once its requests in flight finished, or after 30 s).  With ``wait`` (the default) this
        returns when the removed processes are gone; otherwise they stop in the background (:meth:`close`
        still waits for them)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_REPLICAS:
            raise InvalidInput(f"replica count must be an integer from 0 to {MAX_REPLICAS}, not {n!r}")
        if self._closed:
            raise MlportError(f"replica set {self.key} is closed")
        tasks = []
        async with self._lock:
            while len(self._replicas) < n:
                r = _Replica(self._next_index, self.log_dir / f"{self._stem}-r{self._next_index}.log")
                self._next_index += 1
                self._replicas.append(r)
                self._start(r)
            while len(self._replicas) > n:
                tasks.append(self._remove(self._replicas.pop(), drain=True))
        if wait and tasks:
            await asyncio.wait(tasks)

    def _remove(self, r: _Replica, *, drain: bool) -> asyncio.Task[None]:
        if r.endpoint is not None:
            r.endpoint.draining = True
        self._draining.append(r)
        task = asyncio.create_task(self._stop(r, drain), name=f"stop {self.key} r{r.index}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return task

    async def _stop(self, r: _Replica, drain: bool) -> None:
        try:
            ep = r.endpoint
            if drain and ep is not None and r.proc is not None:
                deadline = time.monotonic() + DRAIN_S
                while ep.inflight > 0 and not self._closed and time.monotonic() < deadline and r.proc.poll() is None:
                    await asyncio.sleep(0.05)
            if ep is not None:
                ep.healthy = False
            if r.proc is not None:
                code = await terminate(r.proc, STOP_GRACE_S)
                if code is None:
                    log.error("replica %s r%d (pid %d) did not stop", self.key, r.index, r.proc.pid)
        finally:
            with contextlib.suppress(ValueError):
                self._draining.remove(r)

    def _start(self, r: _Replica) -> None:
        """Spawn the slot's process on a fresh free port (or schedule a retry when that fails)."""
        r.next_start = None
        r.ready = False
        r.failures = 0
        r.load_failed_since = None
        endpoints = [ep for ep in (x.endpoint for x in (*self._replicas, *self._draining)) if ep is not None]
        used = frozenset(p for ep in endpoints for p in (ep.port, ep.grpc_port))
        try:
            port = free_port(self.host, used)
            grpc_port = free_port(self.host, used | {port})
            rotate_log(r.log_path)
            try:
                r.log_start = r.log_path.stat().st_size
            except OSError:
                r.log_start = 0
            proc = spawn(self._command(port, grpc_port), r.log_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except OSError as exc:
            self._error(f"cannot start a replica of {self.key}: {exc}")
            r.proc, r.endpoint = None, None
            self._schedule_restart(r, time.monotonic())
            return
        r.proc = proc
        r.started_at = time.monotonic()
        scheme = "https" if self.tls is not None else "http"
        r.endpoint = Endpoint(url=f"{scheme}://{_url_host(self.host)}:{port}", pid=proc.pid, port=port,
                              grpc_port=grpc_port)
        log.info("replica %s r%d started: pid %d, ports %d (HTTP) and %d (gRPC)", self.key, r.index, proc.pid, port,
                 grpc_port)

    def _command(self, port: int, grpc_port: int) -> list[str]:
        cmd = [sys.executable, "-m", "mlport.cli.main", "serve", str(self.path), "--host", self.host,
               "--http-port", str(port), "--grpc-port", str(grpc_port), "--name", self.name, "--poll-interval", "0",
               # one model per replica: ready means this model serves
               "--strict-readiness"]
        if self.trusted:
            cmd.append("--trusted")
        if self.tls is not None:
            cmd.extend(self.tls.replica_args())
        cmd.extend(self.extra_args)
        return cmd

    # ------------------------------------------------------------------ supervision
    async def wait_ready(self, timeout_s: float, *, fail_fast: bool = False) -> bool:
        """Supervise until at least one replica is ready (True) or ``timeout_s`` passed (False).  With
        ``fail_fast``, a failure recorded while waiting (the model did not load, the replica crashed) ends the
        wait too (False; :attr:`failure` says why)."""
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        since = time.time()
        while True:
            if self._closed:
                return False
            await self.supervise()
            if self.endpoints():
                return True
            if fail_fast and self.failure is not None and (self.last_error_at or 0.0) >= since:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(0.1, left))

    async def supervise(self) -> None:
        """One step: note exited processes (restarted with back-off), start those whose back-off passed, stop
        those not ready within ``ready_timeout_s``, and health-check the rest."""
        if self._closed:
            return
        async with self._check_lock:
            now = time.monotonic()
            for r in list(self._replicas):
                if r.proc is None:
                    if r.next_start is not None and now >= r.next_start:
                        self._restarts += 1
                        r.restarts += 1
                        self._start(r)
                    continue
                code = r.proc.poll()
                if code is not None:
                    self._exited(r, code, now)
                elif not r.ready and now - r.started_at > self.ready_timeout_s:
                    self._failed(r, f"replica of {self.key} not ready after {self.ready_timeout_s:g} s", now)
            live = [r for r in self._replicas if r.proc is not None and r.endpoint is not None]
            if live:
                results = await asyncio.gather(*(self._check(r) for r in live))
                for r, (ok, failure) in zip(live, results, strict=True):
                    self._checked(r, ok, failure)

    def _exited(self, r: _Replica, code: int, now: float) -> None:
        """The slot's process ended on its own: out of rotation, restarted later."""
        pid = r.proc.pid if r.proc is not None else 0
        was_ready = r.ready
        if r.endpoint is not None:
            r.endpoint.healthy = False
        r.proc, r.endpoint, r.ready = None, None, False
        tail = log_tail(r.log_path, r.log_start)
        if not was_ready and _BIND_ERROR.search(tail) and r.bind_retries < BIND_RETRIES:
            r.bind_retries += 1
            log.info("replica %s r%d lost its port; starting it on another one", self.key, r.index)
            r.next_start = now
            return
        how = f"was killed by {_signal_name(code)}" if code < 0 else f"exited with code {code}"
        self._error(f"replica of {self.key} (pid {pid}) {how}" + (f": {tail}" if tail else ""))
        self._schedule_restart(r, now)

    def _failed(self, r: _Replica, message: str, now: float, *, with_log: bool = True) -> None:
        """The slot's process runs but will not serve: stop it in the background and restart later."""
        tail = log_tail(r.log_path, r.log_start) if with_log else ""
        self._error(message + (f": {tail}" if tail else ""))
        proc = r.proc
        if r.endpoint is not None:
            r.endpoint.healthy = False
        r.proc, r.endpoint, r.ready = None, None, False
        if proc is not None:
            task = asyncio.create_task(self._reap(proc), name=f"stop {self.key} r{r.index}")
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        self._schedule_restart(r, now)

    async def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        await terminate(proc, STOP_GRACE_S)

    def _schedule_restart(self, r: _Replica, now: float) -> None:
        r.next_start = r.backoff.failed(now, up_since=r.started_at)

    async def _check(self, r: _Replica) -> tuple[bool, str | None]:
        """(ready?, load failure reason) from ``GET /v2/health/ready``; for a live server that is not ready,
        the model's state in its repository index tells a failed load from a slow one."""
        ep = r.endpoint
        assert ep is not None
        client = self._http()
        try:
            resp = await client.get(ep.url + "/v2/health/ready")
        except httpx.HTTPError:
            return False, None
        if resp.status_code == 200:
            return True, None
        if r.ready:
            return False, None
        try:
            index = await client.post(ep.url + "/v2/repository/index", json={})
            rows = index.json() if index.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            return False, None
        if not isinstance(rows, list) or not rows:
            return False, None
        states = [row for row in rows if isinstance(row, dict)]
        if states and all(row.get("state") == "UNAVAILABLE" and row.get("reason") for row in states):
            return False, "; ".join(str(row["reason"]) for row in states)[:1000]
        return False, None

    def _checked(self, r: _Replica, ok: bool, failure: str | None) -> None:
        ep = r.endpoint
        if ep is None or r.proc is None or r.proc.poll() is not None:
            return  # exited meanwhile: the next step handles it
        if ok:
            if not r.ready:
                if self.nice is not None:  # started at the hub's priority (a quick load), serves at its own
                    set_nice(ep.pid, self.nice)
                log.info("replica %s r%d ready: %s (pid %d)", self.key, r.index, ep.url, ep.pid)
                r.bind_retries = 0
                self.last_ready_at = time.time()
            r.ready, r.failures = True, 0
            ep.healthy = not ep.draining
            return
        now = time.monotonic()
        if failure is None:
            r.load_failed_since = None
        elif r.load_failed_since is None:
            r.load_failed_since = now
        elif now - r.load_failed_since >= LOAD_FAILURE_CONFIRM_S:
            self._failed(r, f"model of {self.key} failed to load: {failure}", now, with_log=False)
            return
        if r.ready:
            r.failures += 1
            if r.failures >= HEALTH_RESTART_FAILURES:
                self._failed(r, f"replica of {self.key} (pid {ep.pid}) failed {r.failures} health checks in a row",
                             time.monotonic())
            elif r.failures >= HEALTH_FAILURES and ep.healthy:
                ep.healthy = False
                self._error(f"replica of {self.key} (pid {ep.pid}) failed {r.failures} health checks")

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        self.last_error = message
        self.last_error_at = time.time()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            verify = self.tls.replica_verify() if self.tls is not None else True
            self._client = httpx.AsyncClient(timeout=HEALTH_TIMEOUT, trust_env=False, verify=verify)
        return self._client

    # ------------------------------------------------------------------ shutdown
    async def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 10 s) and wait until all are gone."""
        self._closed = True
        async with self._lock:
            removed, self._replicas = self._replicas, []
            for r in removed:
                self._remove(r, drain=False)
        # replicas already draining stop waiting for their requests (self._closed) and get SIGTERM too
        pending = list(self._stopping)
        if pending:
            await asyncio.wait(pending)
        for r in list(self._draining):  # a stop task cancelled from outside: make sure nothing is left
            if r.proc is not None:
                await terminate(r.proc, STOP_GRACE_S)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(-code)
