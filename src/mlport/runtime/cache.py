"""Which loaded models to unload to make room under a memory budget: a pure function of a snapshot.

The manager (:mod:`mlport.runtime.manager`) takes a snapshot of what is loaded (:class:`Resident`), asks
:func:`plan_evictions` which models to unload before a load, and unloads them.  The rules:

- least recently used first;
- never a model with requests in flight, never a ``pinned: true`` one, never one with a version
  still loading (its serving version is the only one it has until the new one is ready);
- when the models that may go do not free enough, nothing is unloaded and the answer names the models
  that hold the memory.

A model's memory is measured at its load (see :func:`resident_bytes`): the growth of the process's
resident set across the load, or the size of its files when that is larger (memory that an unloaded
model gave back to the allocator is reused without growing the resident set).  The first load of a format
in the process also loads the format's library (onnxruntime...): that growth belongs to the runtime, so
that load counts the size of the files, and the model's next load measures it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

__all__ = ["EvictionPlan", "Resident", "format_bytes", "holders", "plan_evictions", "release_free_memory",
           "resident_bytes"]


@dataclass(frozen=True, slots=True)
class Resident:
    """One loaded model as the policy sees it."""

    name: str
    #: Memory of its loaded versions, bytes.
    bytes: int
    #: When it last served a request (any increasing clock; larger is more recent).
    last_used: float
    #: Requests holding one of its versions now.
    inflight: int = 0
    pinned: bool = False
    #: A version of it is loading now.
    loading: bool = False

    @property
    def evictable(self) -> bool:
        return self.inflight == 0 and not self.pinned and not self.loading


@dataclass(frozen=True, slots=True)
class EvictionPlan:
    """What to unload (least recently used first); ``fits`` is false when even that is not enough."""

    evict: tuple[str, ...]
    fits: bool
    #: Bytes that would be in use after the plan, the new model included.
    used_after: int


def plan_evictions(residents: list[Resident], need: int, budget: int, reserved: int = 0,
                   keep: frozenset[str] = frozenset()) -> EvictionPlan:
    """The models to unload so that ``need`` more bytes fit in ``budget``.

    ``reserved``: bytes promised to loads running now (not in ``residents``); ``keep``: models that
    must stay (the one being loaded).  When nothing (or not enough) can go, the plan evicts nothing.
    """
    used = sum(r.bytes for r in residents) + reserved
    if used + need <= budget:
        return EvictionPlan((), True, used + need)
    chosen: list[str] = []
    for r in sorted(residents, key=lambda r: (r.last_used, r.name)):
        if r.name in keep or not r.evictable:
            continue
        chosen.append(r.name)
        used -= r.bytes
        if used + need <= budget:
            return EvictionPlan(tuple(chosen), True, used + need)
    return EvictionPlan((), False, sum(r.bytes for r in residents) + reserved + need)


def holders(residents: list[Resident], keep: frozenset[str] = frozenset(), limit: int = 10) -> str:
    """The models holding the memory, largest first, with why each could not go (for a 503 message)."""
    rows = []
    for r in sorted(residents, key=lambda r: -r.bytes):
        if r.name in keep:
            continue
        why = "pinned" if r.pinned else "requests in flight" if r.inflight else "loading" if r.loading else ""
        rows.append(f"{r.name} ({format_bytes(r.bytes)}{', ' + why if why else ''})")
    if not rows:
        return "no other model is loaded"
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return "held by " + ", ".join(rows[:limit]) + more


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size, bytes (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _libc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _libc_trim()


def release_free_memory() -> None:
    """Give the memory the allocator holds free back to the system (glibc's ``malloc_trim``), so that the
    resident set shrinks after an unload and the growth at the next load measures that model."""
    if _TRIM is not None:
        _TRIM(0)
