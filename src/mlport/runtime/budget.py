"""The memory budget's part of the model manager: room for a load, what to unload for it, refusals.

:class:`MemoryBudget` decides with :func:`mlport.runtime.cache.plan_evictions` (a pure policy) over what the
manager serves now; the manager does the unloading it asks for (``evict``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from mlport.runtime.cache import Resident, format_bytes, holders, plan_evictions
from mlport.runtime.repository import VersionSource
from mlport.runtime.states import CacheObserver, LoadedVersion, ModelEntry

__all__ = ["MemoryBudget", "file_bytes"]

log = logging.getLogger("mlport.runtime.manager")

#: Measured loads of each format remembered to expect the memory of a model not loaded before.
RATIO_SAMPLES = 32


def file_bytes(src: VersionSource) -> int:
    """The size of a version's files (what the scan recorded)."""
    return sum(size for _, size, _ in src.fingerprint)


class MemoryBudget:
    """Memory the loaded models may use (``budget`` bytes; ``None``: no budget, every load fits)."""

    def __init__(self, budget: int | None, models: dict[str, ModelEntry], evict: Callable[[ModelEntry], None],
                 observer: CacheObserver | None) -> None:
        self.budget = budget
        self._models = models
        self._evict = evict
        self._observer = observer
        #: Memory promised to the loads running now, bytes.
        self.reserved = 0
        #: Measured memory / size of the files, of the last loads of each format.
        self._ratios: dict[str, deque[float]] = {}

    def expected(self, model: ModelEntry, src: VersionSource) -> int:
        """The memory a load of ``src`` should need: what its last load measured; before its first load, the size
        of its files times the largest ratio of measured memory to file size among the last loads of its format
        (a model in memory takes more than its file: the library's own structures, copies of the weights)."""
        known = model.sizes.get(src.version)
        if known:
            return known
        files = file_bytes(src)
        ratios = self._ratios.get(src.format)
        return int(files * max(ratios)) if ratios else files

    def learn(self, src: VersionSource, memory: int) -> None:
        """A load of ``src`` measured ``memory`` bytes."""
        files = file_bytes(src)
        if files > 0 and memory > 0:
            self._ratios.setdefault(src.format, deque(maxlen=RATIO_SAMPLES)).append(memory / files)

    def residents(self) -> list[Resident]:
        return [
            Resident(m.name, sum(lv.memory_bytes for lv in m.serving.values()), m.used,
                     sum(lv.inflight for lv in m.serving.values()), m.source.config.pinned, bool(m.loading))
            for m in self._models.values() if m.serving
        ]

    def make_room(self, model: ModelEntry, src: VersionSource) -> int:
        """Unload what the policy says to make room for loading ``src``; the bytes reserved for the load,
        or -1 when there is no room (the refusal is recorded on the model)."""
        if self.budget is None:
            return 0
        need = self.expected(model, src)
        residents = self.residents()
        plan = plan_evictions(residents, need, self.budget, self.reserved, keep=frozenset({model.name}))
        if not plan.fits:
            self._refuse(model, src, need, residents)
            return -1
        for name in plan.evict:
            self._evict(self._models[name])
        self.reserved += need
        return need

    def fits_after_load(self, model: ModelEntry, lv: LoadedVersion) -> bool:
        """With what the load measured: unload more models if need be; false (refused) when that is not enough."""
        if self.budget is None:
            return True
        residents = [r for r in self.residents() if r.name != model.name]
        own = sum(v.memory_bytes for n, v in model.serving.items() if n != lv.version)
        need = own + lv.memory_bytes
        plan = plan_evictions(residents, need, self.budget, self.reserved, keep=frozenset({model.name}))
        if not plan.fits:
            self._refuse(model, lv.source, need, residents, measured=True)
            return False
        for name in plan.evict:
            self._evict(self._models[name])
        return True

    def _refuse(self, model: ModelEntry, src: VersionSource, need: int, residents: list[Resident],
                measured: bool = False) -> None:
        budget = self.budget or 0
        how = "measured at its load" if measured else "expected"
        if need > budget:
            why = f"more than the whole memory budget of {format_bytes(budget)}"
        else:
            used = sum(r.bytes for r in residents if r.name != model.name) + self.reserved
            why = (f"and {format_bytes(used)} of the memory budget of {format_bytes(budget)} is "
                   f"{holders(residents, frozenset({model.name}))}, which cannot be unloaded now")
        model.refused = f"no memory to load model '{model.name}': it needs {format_bytes(need)} ({how}), {why}"
        model.failed[src.version] = (src.fingerprint, model.refused)
        model.cold = True
        log.warning("%s", model.refused)

    def report_usage(self) -> None:
        if self._observer is not None:
            residents = self.residents()
            self._observer.usage(len(residents), sum(r.bytes for r in residents))


def cold_reason(model: ModelEntry) -> str:
    """Why a model that loads on demand is not loaded now."""
    if model.refused:
        return model.refused
    if model.evicted:
        return "unloaded (evicted) to make room under the memory budget; it loads again on its next request"
    return "not loaded yet (lazy): it loads on its first request"
