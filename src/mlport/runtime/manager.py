"""Loads, serves, swaps and unloads model versions.

A new version (or a changed file of a serving version) is loaded beside what serves now and
takes traffic only once it is ready.  Versions leaving service stop taking new requests at once
and are closed after their in-flight requests finish, so no request fails during a swap.  A
version that fails to load leaves the serving versions untouched; its error stays visible in
:meth:`ModelManager.status` until its files change or a load is asked for explicitly.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from mlport.core.types import Signature
from mlport.errors import MlportError, ModelNotFound, ModelNotReady
from mlport.formats.adapt import load_adapted
from mlport.formats.base import Evaluator
from mlport.formats.config import ModelConfig
from mlport.formats.registry import FormatRegistry
from mlport.limits import Limits
from mlport.runtime.batching import Runner
from mlport.runtime.repository import ModelSource, Repository, VersionSource

__all__ = ["LoadedVersion", "ModelManager", "ModelStatus", "ReadinessGroup", "VersionState", "VersionStatus"]

log = logging.getLogger(__name__)


class VersionState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(eq=False)
class LoadedVersion:
    """One loaded instance of a model version; requests hold it while they run."""

    model: str
    version: int
    source: VersionSource
    evaluator: Evaluator
    config: ModelConfig
    load_seconds: float
    inflight: int = 0
    retired: bool = False
    closed: bool = False
    #: How predictions of each signature run (made by the inference service on first use).
    runners: dict[str, Runner] = field(default_factory=dict)

    @property
    def signature(self) -> Signature:
        return self.evaluator.signature

    @property
    def platform(self) -> str:
        return self.evaluator.platform or self.source.format


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: int
    state: VersionState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    versions: tuple[VersionStatus, ...]

    @property
    def ready(self) -> bool:
        return any(v.state is VersionState.READY for v in self.versions)


@dataclass
class _Model:
    name: str
    source: ModelSource
    serving: dict[int, LoadedVersion] = field(default_factory=dict)
    loading: set[int] = field(default_factory=set)
    failed: dict[int, tuple[tuple[tuple[str, int, int], ...], str]] = field(default_factory=dict)
    unloaded: bool = False

    def wanted(self) -> list[int]:
        return self.source.config.version_policy.select(list(self.source.versions))


LoadHook = Callable[[str, int, float, bool], None]


class ReadinessGroup(Protocol):
    """The server processes that share one address (``--workers``): the server is ready only once every
    one of them has finished its first load."""

    def mark_loaded(self) -> None:
        """This process has finished its first scan and load."""

    def all_loaded(self) -> bool:
        """Every process of the group has."""


class ModelManager:
    """Owns every loaded model; all methods run on the event loop thread except loads and closes."""

    def __init__(
        self,
        repository: Repository,
        formats: FormatRegistry,
        limits: Limits | None = None,
        load_workers: int = 2,
        intra_op_threads: int = 0,
        on_load: LoadHook | None = None,
        group: ReadinessGroup | None = None,
    ) -> None:
        self.repository = repository
        self.formats = formats
        self.limits = limits or Limits()
        self.intra_op_threads = intra_op_threads
        self._models: dict[str, _Model] = {}
        self._executor = ThreadPoolExecutor(max_workers=max(1, load_workers), thread_name_prefix="mlport-load")
        self._sync_lock = asyncio.Lock()
        self._close_lock = threading.Lock()
        self._on_load = on_load
        self._group = group
        self.scanned = asyncio.Event()

    # ----------------------------------------------------------------- requests
    def _unknown(self, name: str, what: str) -> ModelNotFound:
        """404 for a model not served; one past the repository's model limit says so."""
        repo = self.repository
        if name in repo.over_limit:
            return ModelNotFound(f"model '{name}' is not served: the repository holds more than max_models "
                                 f"({repo.max_models}) models (raise it with --max-models)")
        return ModelNotFound(f"model '{name}' {what}")

    def acquire(self, name: str, version: str | int | None = None) -> LoadedVersion:
        """The loaded version that serves a request; call :meth:`release` when done."""
        model = self._models.get(name)
        if model is None:
            raise self._unknown(name, "is not served here")
        if version in (None, "", "latest"):
            if not model.serving:
                raise ModelNotReady(f"model '{name}' is not ready: {self._reason(model)}")
            lv = model.serving[max(model.serving)]
        else:
            try:
                v = int(version)  # type: ignore[arg-type]
            except ValueError:
                raise ModelNotFound(f"model '{name}' has no version '{version}'") from None
            lv_or_none = model.serving.get(v)
            if lv_or_none is None:
                if v in model.loading or v in model.failed or v in model.source.versions:
                    raise ModelNotReady(f"version {v} of model '{name}' is not ready: {self._reason(model, v)}")
                raise ModelNotFound(f"model '{name}' has no version {v}")
            lv = lv_or_none
        lv.inflight += 1
        return lv

    def release(self, lv: LoadedVersion) -> None:
        lv.inflight -= 1
        if lv.retired and lv.inflight == 0:
            self._schedule_close(lv)

    def _reason(self, model: _Model, version: int | None = None) -> str:
        if model.unloaded:
            return "unloaded"
        if model.source.error:
            return model.source.error
        versions = [version] if version is not None else model.wanted() or list(model.source.errors)
        for v in versions:
            if v in model.loading:
                return f"version {v} is loading"
            if v in model.failed:
                return model.failed[v][1]
            if v in model.source.errors:
                return model.source.errors[v]
        return "no version is loaded"

    # ------------------------------------------------------------------- status
    def names(self) -> list[str]:
        return sorted(self._models)

    def status(self, name: str) -> ModelStatus:
        model = self._models.get(name)
        if model is None:
            raise self._unknown(name, "is not served here")
        rows: dict[int, VersionStatus] = {}
        for v, err in model.source.errors.items():
            rows[v] = VersionStatus(v, VersionState.UNAVAILABLE, err)
        for v in model.wanted():
            rows[v] = VersionStatus(v, VersionState.UNAVAILABLE, self._reason(model, v))
        for v in model.loading:
            rows[v] = VersionStatus(v, VersionState.LOADING, "")
        for v, (_, err) in model.failed.items():
            if v not in model.serving:
                rows[v] = VersionStatus(v, VersionState.UNAVAILABLE, err)
        for v in model.serving:
            rows[v] = VersionStatus(v, VersionState.READY, "")
        if model.unloaded:
            rows = {v: VersionStatus(v, VersionState.UNAVAILABLE, "unloaded") for v in rows or [0]}
        if model.source.error and not rows:
            rows = {0: VersionStatus(0, VersionState.UNAVAILABLE, model.source.error)}
        return ModelStatus(name, tuple(rows[v] for v in sorted(rows, reverse=True)))

    def all_status(self) -> list[ModelStatus]:
        return [self.status(n) for n in self.names()]

    def ready(self, strict: bool = False) -> bool:
        """True once the first scan has loaded what it could.

        A model whose load failed does not hold the server back (its own ready call says no);
        with ``strict`` every model must serve.
        """
        if not self.scanned.is_set():
            return False
        if strict:
            ok = all(m.serving or m.unloaded for m in self._models.values())
        else:
            ok = not any(m.loading and not m.serving for m in self._models.values())
        return ok and (self._group is None or self._group.all_loaded())

    def mark_scanned(self) -> None:
        """The first scan and load are over (whether or not they succeeded)."""
        if not self.scanned.is_set():
            self.scanned.set()
            if self._group is not None:
                self._group.mark_loaded()

    def serving_version(self, name: str, version: str | int | None = None) -> LoadedVersion:
        """Like :meth:`acquire` without holding the version (for metadata)."""
        lv = self.acquire(name, version)
        self.release(lv)
        return lv

    # ------------------------------------------------------------------ loading
    async def sync(self, sources: dict[str, ModelSource] | None = None, force: bool = False) -> None:
        """Bring loaded versions in line with the repository (scanned now unless given)."""
        async with self._sync_lock:
            loop = asyncio.get_running_loop()
            if sources is None:
                sources = await loop.run_in_executor(self._executor, self.repository.scan)
            for name in list(self._models):
                if name not in sources:
                    self._retire_model(self._models.pop(name))
            tasks = []
            for name, src in sources.items():
                model = self._models.get(name)
                if model is None:
                    model = self._models[name] = _Model(name, src)
                else:
                    if src.config != model.source.config:
                        # a changed config (options, trust, fields) reloads every version
                        for v in model.serving.values():
                            v.source = VersionSource(v.version, v.source.path, v.source.format, ())
                    model.source = src
                if not model.unloaded:
                    tasks.append(self._sync_model(model, force))
            await asyncio.gather(*tasks)
            self.mark_scanned()

    async def load_model(self, name: str) -> ModelStatus:
        """Explicit load (OIP repository API): rescan the model and load it, retrying failed versions."""
        loop = asyncio.get_running_loop()
        src = await loop.run_in_executor(self._executor, self.repository.scan_model, name)
        if src is None:
            raise self._unknown(name, "is not in the repository")
        async with self._sync_lock:
            model = self._models.get(name)
            if model is None:
                model = self._models[name] = _Model(name, src)
            model.source = src
            model.unloaded = False
            model.failed.clear()
            await self._sync_model(model, force=True)
        status = self.status(name)
        if not status.ready:
            raise MlportError(f"model '{name}' failed to load: {self._reason(model)}")
        return status

    async def unload_model(self, name: str) -> None:
        async with self._sync_lock:
            model = self._models.get(name)
            if model is None:
                raise ModelNotFound(f"model '{name}' is not served here")
            model.unloaded = True
            self._retire_model(model)

    async def _sync_model(self, model: _Model, force: bool) -> None:
        wanted = model.wanted()
        to_load: list[VersionSource] = []
        for v in wanted:
            src = model.source.versions[v]
            current = model.serving.get(v)
            if current is not None and current.source.fingerprint == src.fingerprint:
                continue
            failed = model.failed.get(v)
            if not force and failed is not None and failed[0] == src.fingerprint:
                continue
            if v in model.loading:
                continue
            to_load.append(src)
        if to_load:
            await asyncio.gather(*(self._load_version(model, src) for src in to_load))
        if any(v in model.serving for v in wanted):
            for v in [v for v in model.serving if v not in wanted]:
                self._retire(model.serving.pop(v))

    async def _load_version(self, model: _Model, src: VersionSource) -> None:
        loop = asyncio.get_running_loop()
        model.loading.add(src.version)
        started = time.perf_counter()
        cfg = model.source.config
        try:
            fmt = self.formats.get(src.format)
            load = functools.partial(load_adapted, fmt, src.path, cfg, intra_op_threads=self.intra_op_threads)
            evaluator = await asyncio.wait_for(loop.run_in_executor(self._executor, load), self.limits.load_timeout_s)
        except Exception as exc:
            seconds = time.perf_counter() - started
            reason = str(exc) if isinstance(exc, MlportError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                reason = f"loading took longer than {self.limits.load_timeout_s:g} s"
            model.failed[src.version] = (src.fingerprint, reason)
            log.error("model %s version %d failed to load: %s", model.name, src.version, reason)
            if self._on_load:
                self._on_load(model.name, src.version, seconds, False)
            return
        finally:
            model.loading.discard(src.version)
        seconds = time.perf_counter() - started
        model.failed.pop(src.version, None)
        lv = LoadedVersion(model.name, src.version, src, evaluator, cfg, seconds)
        if model.unloaded or self._models.get(model.name) is not model:
            self._retire(lv)
            return
        old = model.serving.get(src.version)
        model.serving[src.version] = lv
        if old is not None:
            self._retire(old)
        log.info("model %s version %d ready (%s, %.2f s)", model.name, src.version, src.format, seconds)
        if self._on_load:
            self._on_load(model.name, src.version, seconds, True)

    # ---------------------------------------------------------------- unloading
    def _retire_model(self, model: _Model) -> None:
        for v in list(model.serving):
            self._retire(model.serving.pop(v))

    def _retire(self, lv: LoadedVersion) -> None:
        lv.retired = True
        if lv.inflight == 0:
            self._schedule_close(lv)

    def _schedule_close(self, lv: LoadedVersion) -> None:
        with self._close_lock:
            if lv.closed:
                return
            lv.closed = True
        log.info("model %s version %d unloaded", lv.model, lv.version)
        self._executor.submit(self._close, lv)

    @staticmethod
    def _close(lv: LoadedVersion) -> None:
        try:
            lv.evaluator.close()
        except Exception as exc:
            log.warning("closing model %s version %d failed: %s", lv.model, lv.version, exc)

    async def close(self) -> None:
        async with self._sync_lock:
            for model in self._models.values():
                self._retire_model(model)
            self._models.clear()
        self._executor.shutdown(wait=True)
        self.formats.close()  # what the formats hold for the closed models (a Java runtime...)
