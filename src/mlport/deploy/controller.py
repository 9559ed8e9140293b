"""The reconcile loop: makes the running replica sets match the deployments' targets and scale policies.

Every ``interval_s`` the controller reads all deployments, fetches the artifacts of the versions their targets
name (in a thread: it is blocking I/O), keeps one :class:`~mlport.deploy.replicas.ReplicaSet` per deployment
version (key ``"{deployment}/v{version}"``), samples each set's load, scales it with
:func:`~mlport.deploy.autoscale.desired_replicas`, supervises it, and closes sets no target names any more.
A failure of one deployment (the fetch fails, the model does not load, the record is invalid) is recorded in
its :meth:`Controller.status` and never stops the loop for the others.  A shadow version's replicas run at
niceness :data:`SHADOW_NICE` (set again when the version's role changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlport.core.backoff import Backoff
from mlport.deploy.autoscale import LoadSample, ScalePolicy, desired_replicas
from mlport.deploy.deployments import Deployment, DeploymentSource
from mlport.deploy.layout import versioned_layout
from mlport.deploy.replicas import ReplicaSet
from mlport.errors import MlportError, ModelNotReady, valid_name
from mlport.protocols.tls import ServerTls

__all__ = ["SHADOW_NICE", "Controller"]

log = logging.getLogger("mlport.deploy")

#: Fetch retries: after 2 s, doubling up to 60 s.
FETCH_RETRY_START_S = 2.0
FETCH_RETRY_MAX_S = 60.0
#: Niceness of a shadow version's replicas: the kernel gives the cores to the live versions' replicas (and the
#: hub) first, so a shadow version never slows the live path down by competing for CPU.
SHADOW_NICE = 19
#: Longest wait accepted by :meth:`Controller.ensure_ready`.
MAX_READY_WAIT_S = 600.0
#: Most load samples kept per version (at one per interval this is far more than any policy window needs).
MAX_SAMPLES = 4096


@dataclass(eq=False)
class _Version:
    """The controller's state for one deployment version."""

    deployment: str
    version: int
    model: str
    trusted: bool
    role: str = "primary"
    #: Extra ``mlport serve`` arguments of its replicas (the deployment's request log).
    args: tuple[str, ...] = ()
    policy: ScalePolicy = field(default_factory=ScalePolicy)
    path: Path | None = None
    replicas: ReplicaSet | None = None
    fetch: asyncio.Task[Path] | None = None
    fetch_backoff: Backoff = field(default_factory=lambda: Backoff(FETCH_RETRY_START_S, FETCH_RETRY_MAX_S))
    next_fetch: float = 0.0
    last_error: str | None = None
    samples: deque[LoadSample] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    @property
    def key(self) -> str:
        return f"{self.deployment}/v{self.version}"


class Controller:
    """Runs the replicas of every deployment (see the module documentation).

    ``fetch(model, version)`` returns the local path of a version's artifact (the registry's fetch);
    ``trusted(model, version)`` says whether a version may run code when loaded (a deployment record's own
    ``trusted`` flag also allows it).  Replicas serve the model under the deployment's name, with the registry's
    version number (see :mod:`mlport.deploy.layout`).  ``replica_args(deployment)`` gives extra ``mlport serve``
    arguments of a deployment's replicas; when they change, its replicas are started again with the new ones.
    ``queued(deployment, version)`` counts the requests waiting for a version in the gateway's queue (load);
    ``forget(gated)`` is told, each pass, the deployments that have such a queue.
    """

    def __init__(self, *, state: DeploymentSource, fetch: Callable[[str, int], Path], run_dir: Path,
                 interval_s: float = 1.0, trusted: Callable[[str, int], bool] = lambda m, v: False,
                 ready_timeout_s: float = 120.0, host: str = "127.0.0.1", tls: ServerTls | None = None,
                 replica_args: Callable[[str], Sequence[str]] = lambda name: (),
                 queued: Callable[[str, int], int] = lambda name, version: 0,
                 forget: Callable[[Sequence[str]], None] = lambda gated: None) -> None:
        self._state = state
        self._fetch = fetch
        self.run_dir = Path(run_dir)
        self.interval_s = max(0.05, float(interval_s))
        self._trusted = trusted
        self._replica_args = replica_args
        self._queued = queued
        self._forget = forget
        self.ready_timeout_s = float(ready_timeout_s)
        self.host = host
        #: TLS of the replicas (the hub's certificate), or None for plain HTTP
        self.tls = tls
        self._versions: dict[str, _Version] = {}
        self._order: dict[str, list[int]] = {}
        self._errors: dict[str, str] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._pass = asyncio.Lock()
        self._stopped = False
        self.loop_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the background loop (one :meth:`reconcile` every ``interval_s``)."""
        if self._task is None or self._task.done():
            self._stopped = False
            self._task = asyncio.create_task(self._run(), name="mlport deploy controller")

    async def stop(self) -> None:
        """Stop the loop and every replica set (waits until their processes are gone)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._pass:
            entries, self._versions = list(self._versions.values()), {}
            for entry in entries:
                self._close(entry)
        if self._closing:
            await asyncio.wait(list(self._closing))

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.reconcile()
                self.loop_error = None
            except Exception as exc:  # a broken state read must not end the loop
                log.exception("reconcile failed")
                self.loop_error = _describe(exc)
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    # ------------------------------------------------------------------ one pass
    async def reconcile(self) -> None:
        """One pass over all deployments (see the module documentation)."""
        if self._stopped:
            return
        async with self._pass:
            records = self._state.deployments()
            wanted: dict[str, _Version] = {}
            names: set[str] = set()
            for record in records:
                name = getattr(record, "name", None)
                if not isinstance(name, str) or name in names:
                    continue
                names.add(name)
                try:
                    self._plan(record, wanted)
                    self._errors.pop(name, None)
                except Exception as exc:
                    # keep whatever this deployment runs now rather than stopping it over a bad record
                    self._errors[name] = _describe(exc)
                    log.warning("deployment %s: %s", name, self._errors[name])
                    for key, entry in self._versions.items():
                        if entry.deployment == name:
                            wanted[key] = entry
            self._forget([r.name for r in records if r.name in names and r.policy.gated])
            for name in set(self._errors) - names:
                del self._errors[name]
            for name in set(self._order) - names:
                del self._order[name]
            for key in [k for k in self._versions if k not in wanted]:
                self._close(self._versions.pop(key))
            self._versions.update(wanted)
            await asyncio.gather(*(self._step(entry) for entry in wanted.values()))

    def _plan(self, record: Deployment, wanted: dict[str, _Version]) -> None:
        """Mark the versions ``record`` needs as wanted (creating their entries)."""
        name = valid_name(record.name, "deployment")
        target = record.target.validate()
        policy = record.policy.validate()
        versions = target.versions()
        args = tuple(self._replica_args(name))
        self._order[name] = versions
        for version in versions:
            key = f"{name}/v{version}"
            trusted = bool(record.trusted) or bool(self._trusted(target.model, version))
            entry = self._versions.get(key)
            if entry is not None and (entry.model != target.model or entry.trusted != trusted or entry.args != args):
                self._close(self._versions.pop(key))  # another artifact under the same key: start over
                entry = None
            if entry is None:
                entry = _Version(name, version, target.model, trusted, args=args)
                self._versions[key] = entry
            entry.role = "primary" if version == target.primary else (
                "shadow" if target.strategy == "shadow" else "candidate")
            self._prioritize(entry)
            entry.policy = policy
            wanted[key] = entry

    @staticmethod
    def _prioritize(entry: _Version) -> None:
        """A shadow version's replicas run at niceness :data:`SHADOW_NICE` (the live versions' get the cores
        first); another role's at the hub's own."""
        nice = SHADOW_NICE if entry.role == "shadow" else None
        rs = entry.replicas
        if rs is not None and rs.nice != nice and not rs.set_nice(nice):
            log.warning("deployment %s version %d: the CPU priority of its replicas could not be raised back "
                        "(needs CAP_SYS_NICE); they keep the lower one until restarted", entry.deployment,
                        entry.version)

    async def _step(self, entry: _Version) -> None:
        """Fetch, create, sample, scale and supervise one version; errors end up in its status."""
        try:
            if entry.replicas is None:
                await self._prepare(entry)
            rs = entry.replicas
            if rs is None or rs.closed:
                return
            now = time.monotonic()
            # the requests waiting in the gateway's queue are load too: replicas come before refusals
            load = rs.inflight + self._queued(entry.deployment, entry.version)
            entry.samples.append(LoadSample(now, load, rs.ready_count))
            self._prune(entry, now)
            want = desired_replicas(entry.policy, entry.samples, rs.desired, now)
            if want != rs.desired:
                log.info("deployment %s version %d: %d -> %d replicas", entry.deployment, entry.version,
                         rs.desired, want)
                await rs.scale(want, wait=False)
                self._restart_window(entry)
            await rs.supervise()
            if rs.last_error is not None:
                entry.last_error = rs.last_error
        except Exception as exc:
            entry.last_error = _describe(exc)
            log.warning("deployment %s version %d: %s", entry.deployment, entry.version, entry.last_error)

    async def _prepare(self, entry: _Version) -> None:
        """Fetch the artifact (in a thread, retried with back-off) and create the replica set once it is here."""
        if entry.path is None:
            if entry.fetch is None:
                if time.monotonic() < entry.next_fetch:
                    return
                entry.fetch = asyncio.create_task(
                    asyncio.to_thread(self._fetch_laid_out, entry.deployment, entry.model, entry.version),
                    name=f"fetch {entry.key}")
            await asyncio.wait([entry.fetch], timeout=min(self.interval_s, 0.5))
            if not entry.fetch.done():
                return
            task, entry.fetch = entry.fetch, None
            exc = task.exception()
            if exc is None:
                path = Path(task.result())
                if not path.exists():
                    exc = MlportError(f"fetched artifact {path} does not exist")
                else:
                    entry.path = path
            if exc is not None:
                entry.last_error = f"fetching {entry.model} version {entry.version} failed: {_describe(exc)}"
                log.warning("deployment %s: %s", entry.deployment, entry.last_error)
                entry.next_fetch = entry.fetch_backoff.failed(time.monotonic())
                return
            entry.last_error = None
        assert entry.path is not None
        entry.replicas = ReplicaSet(
            entry.key, entry.path, name=entry.deployment, trusted=entry.trusted, log_dir=self.run_dir / "logs",
            host=self.host, ready_timeout_s=self.ready_timeout_s, tls=self.tls, extra_args=entry.args,
            nice=SHADOW_NICE if entry.role == "shadow" else None,
        )
        entry.samples.clear()

    def _fetch_laid_out(self, deployment: str, model: str, version: int) -> Path:
        """The fetched artifact laid out as version ``version`` of one model, so replicas name the hub's version
        number (runs in a thread)."""
        artifact = Path(self._fetch(model, version))
        if not artifact.exists():
            return artifact  # reported by the caller
        return versioned_layout(artifact, self.run_dir / "models" / deployment / f"v{version}", version)

    def _prune(self, entry: _Version, now: float) -> None:
        """Keep the samples the policy windows need (plus the one describing each window's start)."""
        keep = max(entry.policy.scale_up_after_s, entry.policy.scale_down_after_s) + 3 * self.interval_s
        while len(entry.samples) > 2 and entry.samples[1].at < now - keep:
            entry.samples.popleft()

    @staticmethod
    def _restart_window(entry: _Version) -> None:
        """After a change of the replica count the next decision waits for a full window of new samples."""
        latest = entry.samples[-1] if entry.samples else None
        entry.samples.clear()
        if latest is not None:
            entry.samples.append(latest)

    def _close(self, entry: _Version) -> None:
        if entry.fetch is not None:
            entry.fetch.cancel()
            entry.fetch = None
        rs, entry.replicas = entry.replicas, None
        if rs is not None:
            log.info("closing the replicas of %s", entry.key)
            task = asyncio.create_task(rs.close(), name=f"close {entry.key}")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------ queries
    def replicas(self, deployment: str, version: int) -> ReplicaSet | None:
        """The replica set serving ``version`` of ``deployment`` (None when not running, e.g. still fetching)."""
        entry = self._versions.get(f"{deployment}/v{version}")
        return entry.replicas if entry is not None else None

    async def ensure_ready(self, deployment: str, version: int, timeout_s: float) -> ReplicaSet:
        """A replica set of ``deployment`` ``version`` with at least one ready replica, starting one when the
        version was scaled to zero.  Raises :class:`~mlport.errors.ModelNotReady` (503) after ``timeout_s``."""
        timeout_s = min(max(0.0, float(timeout_s)), MAX_READY_WAIT_S)
        deadline = time.monotonic() + timeout_s
        key = f"{deployment}/v{version}"
        rs = self.replicas(deployment, version)
        while rs is None or rs.closed:
            entry = self._versions.get(key)
            failed = entry is not None and entry.path is None and entry.fetch is None and entry.last_error
            if failed or time.monotonic() >= deadline:
                why = f": {entry.last_error}" if entry is not None and entry.last_error else ""
                raise ModelNotReady(f"deployment '{deployment}' version {version} is not running{why}")
            await asyncio.sleep(0.05)
            rs = self.replicas(deployment, version)
        if rs.endpoints():
            return rs
        if rs.desired > 0 and rs.failure is not None:  # a known failure: say so now rather than wait for it again
            raise ModelNotReady(f"deployment '{deployment}' version {version} has no ready replica: {rs.failure}")
        with rs.waiting():  # shows as load, so the autoscaler keeps the replica while this request waits
            if rs.desired == 0:
                await rs.scale(1, wait=False)
                entry = self._versions.get(key)
                if entry is not None:
                    self._restart_window(entry)
            ok = await rs.wait_ready(max(0.0, deadline - time.monotonic()), fail_fast=True)
        if not ok:
            if rs.failure is not None:
                raise ModelNotReady(f"deployment '{deployment}' version {version} has no ready replica: "
                                    f"{rs.failure}")
            why = f": {rs.last_error}" if rs.last_error else ""
            raise ModelNotReady(f"deployment '{deployment}' version {version} has no ready replica after "
                                f"{timeout_s:g} s{why}")
        return rs

    def status(self, deployment: str) -> dict[str, Any]:
        """The running state of a deployment: per version its replicas (desired, ready, pids, ports, inflight,
        restarts) and the last error; ``error`` is a problem with the deployment record itself."""
        order = self._order.get(deployment, [])
        entries = [e for e in self._versions.values() if e.deployment == deployment]
        entries.sort(key=lambda e: (order.index(e.version) if e.version in order else len(order), e.version))
        versions = []
        for e in entries:
            rs = e.replicas
            row: dict[str, Any] = {
                "version": e.version,
                "model": e.model,
                "role": e.role,
                "state": "fetching" if e.path is None else "running" if rs is not None else "stopped",
                "desired": 0, "ready": 0, "pids": [], "ports": [], "inflight": 0, "restarts": 0,
                "replicas": [], "failure": None,
            }
            if rs is not None:
                row.update({k: v for k, v in rs.status().items() if k != "last_error"})
            elif e.path is None and e.fetch is None and e.last_error:
                row["failure"] = e.last_error  # the fetch failed; it is retried with back-off
            row["last_error"] = e.last_error
            versions.append(row)
        return {"deployment": deployment, "error": self._errors.get(deployment), "versions": versions}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MlportError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
