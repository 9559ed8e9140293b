"""Loads, serves, swaps and unloads model versions.

A new version (or a changed file of a serving version) is loaded beside what serves now and
takes traffic only once it is ready.  Versions leaving service stop taking new requests at once
and are closed after their in-flight requests finish, so no request fails during a swap.  A
version that fails to load leaves the serving versions untouched; its error stays visible in
:meth:`ModelManager.status` until its files change or a load is asked for explicitly.

A lazy model (``--lazy`` or ``lazy: true``) is found by the scan but loaded by its first request; the
requests that come while it loads wait for that one load.  Under a memory budget, a load first unloads
the least recently used models it needs room from (see :mod:`mlport.runtime.cache` for the rules); an
unloaded ("evicted") model loads again on its next request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from mlport.errors import MlportError, ModelLoading, ModelNotFound, ModelNotReady
from mlport.formats.adapt import load_adapted
from mlport.formats.config import ModelConfig
from mlport.formats.registry import FormatRegistry
from mlport.limits import Limits
from mlport.runtime.admission import AdmissionPolicy, QueueOrder
from mlport.runtime.budget import MemoryBudget, file_bytes
from mlport.runtime.cache import format_bytes, release_free_memory, resident_bytes
from mlport.runtime.describing import from_files, remembered, requested_version
from mlport.runtime.reporting import model_status, reason
from mlport.runtime.repository import ModelSource, Repository, VersionSource
from mlport.runtime.states import (
    CacheObserver,
    ColdModel,
    Described,
    LoadedVersion,
    LoadHook,
    ModelEntry,
    ModelStatus,
    ReadinessGroup,
    VersionState,
    VersionStatus,
)

__all__ = [
    "CacheObserver", "ColdModel", "LoadedVersion", "ModelManager", "ModelStatus", "ReadinessGroup", "VersionState",
    "VersionStatus",
]

log = logging.getLogger(__name__)

#: Longest time a load under a memory budget waits for the unloads that made its room to finish, seconds.
CLOSE_WAIT_S = 10.0


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
        *,
        lazy: bool = False,
        memory_budget: int | None = None,
        max_concurrent_loads: int = 2,
        load_wait_s: float = 30.0,
        observer: CacheObserver | None = None,
        admission: AdmissionPolicy | None = None,
    ) -> None:
        self.repository = repository
        self.formats = formats
        self.limits = limits or Limits()
        self.intra_op_threads = intra_op_threads
        self._models: dict[str, ModelEntry] = {}
        # loads, scans and closes share these threads: one more than the loads that may run at once
        workers = max(load_workers, max_concurrent_loads + 1)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlport-load")
        self._load_slots = asyncio.Semaphore(max(1, max_concurrent_loads))
        self.lazy = lazy
        self.memory_budget = memory_budget
        self.load_wait_s = load_wait_s
        self._observer = observer
        self._count_hits = observer is not None and (lazy or memory_budget is not None)
        #: Requests served so far: the clock of "least recently used".
        self._tick = 0
        self._budget = MemoryBudget(memory_budget, self._models, self._evict, observer)
        #: The server-wide defaults of each version's admission limits (queue, concurrency).
        self.admission = admission or AdmissionPolicy()
        #: Formats loaded once in this process (their libraries are in memory).
        self._formats_used: set[str] = set()
        self._sync_lock = asyncio.Lock()
        self._close_lock = threading.Lock()
        #: Closes running or queued: a load under a memory budget waits for them (their memory is free then).
        self._closing: set[Future[None]] = set()
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
        model, lv = self._find(name, version)
        lv.inflight += 1
        self._tick += 1
        model.used = self._tick
        if self._count_hits:
            self._observer.hit()  # type: ignore[union-attr]
        return lv

    def peek(self, name: str, version: str | int | None = None) -> LoadedVersion | None:
        """The loaded version :meth:`acquire` would give now, not held and its use not counted; ``None`` for
        none (unknown, not ready, not loaded)."""
        try:
            return self._find(name, version)[1]
        except MlportError:
            return None

    def _find(self, name: str, version: str | int | None) -> tuple[ModelEntry, LoadedVersion]:
        model = self._models.get(name)
        if model is None:
            raise self._unknown(name, "is not served here")
        if version in (None, "", "latest"):
            if not model.serving:
                if model.cold:
                    raise ColdModel(f"model '{name}' is not loaded now: it loads on its next inference request")
                raise ModelNotReady(f"model '{name}' is not ready: {reason(model)}")
            lv = model.serving[max(model.serving)]
        else:
            try:
                v = int(version)  # type: ignore[arg-type]
            except ValueError:
                raise ModelNotFound(f"model '{name}' has no version '{version}'") from None
            lv_or_none = model.serving.get(v)
            if lv_or_none is None:
                if model.cold and v in model.wanted():
                    raise ColdModel(f"version {v} of model '{name}' is not loaded now: it loads on its next "
                                    "inference request")
                if v in model.loading or v in model.failed or v in model.source.versions:
                    raise ModelNotReady(f"version {v} of model '{name}' is not ready: {reason(model, v)}")
                raise ModelNotFound(f"model '{name}' has no version {v}")
            lv = lv_or_none
        return model, lv

    async def acquire_cold(self, name: str, version: str | int | None = None) -> LoadedVersion:
        """Like :meth:`acquire` for a model that is not loaded now: load it (one load, however many requests
        wait for it), waiting up to the load wait; then :class:`ModelLoading` (503 with Retry-After)."""
        for _ in range(3):  # a model evicted again between its load and this request's turn loads again
            model = self._models.get(name)
            if model is None:
                raise ModelNotFound(f"model '{name}' is not served here")
            task = model.warming
            if task is None:
                task = model.warming = asyncio.create_task(self._warm(model), name=f"mlport-load-{name}")
                task.add_done_callback(_retrieve)
            if self._observer is not None:
                self._observer.miss(name)
            try:
                await asyncio.wait_for(asyncio.shield(task), self.load_wait_s)
            except TimeoutError:
                raise ModelLoading(f"model '{name}' is still loading after {self.load_wait_s:g} s; try again "
                                   "shortly", retry_after_s=max(1.0, self.load_wait_s / 2)) from None
            try:
                model, lv = self._find(name, version)
            except ColdModel:
                continue
            lv.inflight += 1
            self._tick += 1
            model.used = self._tick
            return lv
        raise ModelLoading(f"model '{name}' was unloaded again before it could serve (the memory budget is too "
                           "tight for the models in use); try again shortly")

    def release(self, lv: LoadedVersion) -> None:
        lv.inflight -= 1
        if lv.retired and lv.inflight == 0:
            self._schedule_close(lv)

    # ------------------------------------------------------------------- status
    def names(self) -> list[str]:
        return sorted(self._models)

    def status(self, name: str) -> ModelStatus:
        model = self._models.get(name)
        if model is None:
            raise self._unknown(name, "is not served here")
        return model_status(model)

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
            ok = all(m.serving or m.unloaded or m.cold for m in self._models.values())
        else:
            ok = not any(m.loading and not m.serving for m in self._models.values())
        return ok and (self._group is None or self._group.all_loaded())

    def mark_scanned(self) -> None:
        """The first scan and load are over (whether or not they succeeded)."""
        if not self.scanned.is_set():
            self.scanned.set()
            if self._group is not None:
                self._group.mark_loaded()

    def model_config(self, name: str) -> ModelConfig:
        """The model's config as scanned (known whether or not the model is loaded)."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"model '{name}' is not served here")
        return model.source.config

    def serving_version(self, name: str, version: str | int | None = None) -> LoadedVersion:
        """Like :meth:`acquire` without holding the version (for metadata): not a use of the model."""
        return self._find(name, version)[1]

    def describe_version(self, name: str, version: str | int | None = None) -> Described:
        """The signature, config and platform of the version that would serve: the loaded one's, or for a model
        not loaded now what its files said when last read (see :mod:`mlport.runtime.describing`).  A version
        never described yet raises :class:`ColdModel` (503): :meth:`describe` reads its files."""
        try:
            lv = self._find(name, version)[1]
        except ColdModel:
            model = self._models[name]
            v = requested_version(model, version)
            known = remembered(model, v) if v is not None else None
            if known is None:
                raise
            return known
        return Described(lv.version, lv.signature, lv.config, lv.platform)

    async def describe(self, name: str, version: str | int | None = None) -> Described:
        """:meth:`describe_version`, reading the files of a version not loaded yet where its format can tell
        the signature without loading it (in a worker thread; the model stays unloaded)."""
        try:
            return self.describe_version(name, version)
        except ColdModel:
            model = self._models[name]
            v = requested_version(model, version)
            src = model.source.versions.get(v) if v is not None else None
            if src is None:
                raise
            loop = asyncio.get_running_loop()
            known = await loop.run_in_executor(self._executor, from_files, self.formats, model.source.config, src)
            if known is None:
                raise
            if model.source.versions.get(src.version) is src:  # the files did not change meanwhile
                model.described[src.version] = (src.fingerprint, known)
            return known

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
                    model = self._models[name] = ModelEntry(name, src, cold=self._is_lazy(src))
                else:
                    if src.config != model.source.config:
                        # a changed config (options, trust, fields) reloads every version
                        for v in model.serving.values():
                            v.source = VersionSource(v.version, v.source.path, v.source.format, ())
                    model.source = src
                if not model.unloaded and not model.cold:
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
                model = self._models[name] = ModelEntry(name, src)
            model.source = src
            model.unloaded = model.cold = model.evicted = False
            model.refused = ""
            model.failed.clear()
            await self._sync_model(model, force=True)
        status = self.status(name)
        if not status.ready:
            raise MlportError(f"model '{name}' failed to load: {reason(model)}")
        return status

    async def unload_model(self, name: str) -> None:
        async with self._sync_lock:
            model = self._models.get(name)
            if model is None:
                raise ModelNotFound(f"model '{name}' is not served here")
            model.unloaded = True
            self._retire_model(model)
            self._budget.report_usage()

    async def _sync_model(self, model: ModelEntry, force: bool) -> None:
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

    def _is_lazy(self, src: ModelSource) -> bool:
        return self.lazy if src.config.lazy is None else src.config.lazy

    async def _warm(self, model: ModelEntry) -> None:
        """Load a cold model for the requests waiting on it."""
        started = time.perf_counter()
        model.refused = ""
        try:
            await self._sync_model(model, force=True)
        finally:
            model.warming = None
        if model.serving:
            model.cold = model.evicted = False
            if self._observer is not None:
                self._observer.cold_loaded(model.name, time.perf_counter() - started)
            return
        if model.refused:
            raise ModelLoading(model.refused, retry_after_s=5.0)
        model.cold = False  # a broken model is not tried again by every request: its files must change first
        raise ModelNotReady(f"model '{model.name}' failed to load: {reason(model)}")

    async def _load_version(self, model: ModelEntry, src: VersionSource) -> None:
        model.loading.add(src.version)
        try:
            async with self._load_slots:
                await self._load_in_slot(model, src)
        finally:
            model.loading.discard(src.version)

    async def _load_in_slot(self, model: ModelEntry, src: VersionSource) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        cfg = model.source.config
        need = self._budget.make_room(model, src)
        if need < 0:
            return
        try:
            await self._closes_done()
            fmt = self.formats.get(src.format)
            load = functools.partial(load_adapted, fmt, src.path, cfg, intra_op_threads=self.intra_op_threads)
            # the first loads of a format (those begun before one ended) also load its library: not measured
            measured = src.format in self._formats_used
            before = resident_bytes()
            evaluator = await asyncio.wait_for(loop.run_in_executor(self._executor, load), self.limits.load_timeout_s)
            memory = file_bytes(src)
            if measured:
                memory = max(resident_bytes() - before, memory)
                self._budget.learn(src, memory)
            self._formats_used.add(src.format)
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
            self._budget.reserved -= need
        seconds = time.perf_counter() - started
        model.failed.pop(src.version, None)
        model.sizes[src.version] = memory
        model.described[src.version] = (src.fingerprint, Described(src.version, evaluator.signature, cfg,
                                                                   evaluator.platform or src.format))
        batch = cfg.batching.max_batch_size if cfg.batching.enabled else 0
        gate = self.admission.gate(model.name, src.version, cfg.max_concurrency, cfg.max_queue, cfg.queue_timeout_s,
                                   batch, QueueOrder.of(*cfg.queue_order()))
        lv = LoadedVersion(model.name, src.version, src, evaluator, cfg, seconds, memory, gate=gate)
        if model.unloaded or self._models.get(model.name) is not model or not self._budget.fits_after_load(model, lv):
            self._retire(lv)
            return
        old = model.serving.get(src.version)
        model.serving[src.version] = lv
        if old is not None:
            self._retire(old)
        log.info("model %s version %d ready (%s, %.2f s, %s)", model.name, src.version, src.format, seconds,
                 format_bytes(memory))
        if self._on_load:
            self._on_load(model.name, src.version, seconds, True)
        if self._observer is not None:
            self._observer.loaded(model.name)
        self._budget.report_usage()

    # ------------------------------------------------------------ memory budget
    def _evict(self, model: ModelEntry) -> None:
        log.info("model %s unloaded to make room under the memory budget", model.name)
        versions = tuple(model.serving)
        self._retire_model(model)
        model.cold = model.evicted = True
        if self._observer is not None:
            self._observer.evicted(model.name, versions)
        self._budget.report_usage()

    # ---------------------------------------------------------------- unloading
    def _retire_model(self, model: ModelEntry) -> None:
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
        closing = self._executor.submit(self._close, lv)
        with self._close_lock:
            self._closing.add(closing)
        closing.add_done_callback(self._closed)

    async def _closes_done(self) -> None:
        """Under a memory budget, wait for the unloads under way (those that made room for a load): their memory
        is given back before the load takes its own."""
        with self._close_lock:
            closing = [asyncio.wrap_future(f) for f in self._closing] if self.memory_budget is not None else []
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_WAIT_S)

    def _closed(self, closing: Future[None]) -> None:
        with self._close_lock:
            self._closing.discard(closing)

    def _close(self, lv: LoadedVersion) -> None:
        try:
            lv.evaluator.close()
        except Exception as exc:
            log.warning("closing model %s version %d failed: %s", lv.model, lv.version, exc)
        if self.memory_budget is not None:
            release_free_memory()

    async def close(self) -> None:
        async with self._sync_lock:
            for model in self._models.values():
                if model.warming is not None:
                    model.warming.cancel()
                self._retire_model(model)
            self._models.clear()
        self._executor.shutdown(wait=True)
        self.formats.close()  # what the formats hold for the closed models (a Java runtime...)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Take a load's failure even when every request waiting on it has given up (no "never retrieved")."""
    if not task.cancelled():
        task.exception()
