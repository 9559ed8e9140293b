"""What the model manager serves and reports: loaded versions, their states, and the hooks it calls."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mlport.core.types import Signature
from mlport.errors import ModelLoading
from mlport.formats.base import Evaluator
from mlport.formats.config import ModelConfig
from mlport.runtime.admission import Gate
from mlport.runtime.batching import Runner
from mlport.runtime.repository import ModelSource, VersionSource

__all__ = [
    "CacheObserver", "ColdModel", "Described", "LoadHook", "LoadedVersion", "ModelEntry", "ModelStatus",
    "ReadinessGroup", "VersionState", "VersionStatus",
]


class VersionState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"
    #: Lazy: loads on its first request.
    NOT_LOADED = "NOT_LOADED"
    #: Unloaded to make room under the memory budget: loads again on its next request.
    EVICTED = "EVICTED"


class ColdModel(ModelLoading):
    """The model is not loaded now and loads on a request: :meth:`ModelManager.acquire_cold` loads it."""


@dataclass(eq=False)
class LoadedVersion:
    """One loaded instance of a model version; requests hold it while they run."""

    model: str
    version: int
    source: VersionSource
    evaluator: Evaluator
    config: ModelConfig
    load_seconds: float
    #: Memory the load took (see :mod:`mlport.runtime.cache`), bytes.
    memory_bytes: int = 0
    inflight: int = 0
    retired: bool = False
    closed: bool = False
    #: How predictions of each signature run (made by the inference service on first use).
    runners: dict[str, Runner] = field(default_factory=dict)
    #: Admission: requests running at once, the queue, its timeout (``None``: no limit configured).
    gate: Gate | None = None

    @property
    def signature(self) -> Signature:
        return self.evaluator.signature

    @property
    def platform(self) -> str:
        return self.evaluator.platform or self.source.format


@dataclass(frozen=True, slots=True)
class Described:
    """What metadata calls show of a version: its signature, config and platform."""

    version: int
    signature: Signature
    config: ModelConfig
    platform: str


@dataclass
class ModelEntry:
    """What the manager knows of one model: its source, the versions serving, loading and failed."""

    name: str
    source: ModelSource
    serving: dict[int, LoadedVersion] = field(default_factory=dict)
    loading: set[int] = field(default_factory=set)
    failed: dict[int, tuple[tuple[tuple[str, int, int], ...], str]] = field(default_factory=dict)
    unloaded: bool = False
    #: Not loaded now, and loads on its next request (lazy, evicted, or refused for lack of memory).
    cold: bool = False
    evicted: bool = False
    #: Why the last load found no room under the memory budget.
    refused: str = ""
    #: When it last served a request (the manager's request counter).
    used: int = 0
    #: The load that requests for this cold model wait for.
    warming: asyncio.Task[None] | None = None
    #: Memory measured at the last load of each version, bytes (what its next load expects to need).
    sizes: dict[int, int] = field(default_factory=dict)
    #: What the last load of each version read (with the files' fingerprint): metadata of an evicted version.
    described: dict[int, tuple[tuple[tuple[str, int, int], ...], Described]] = field(default_factory=dict)

    def wanted(self) -> list[int]:
        return self.source.config.version_policy.select(list(self.source.versions))


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: int
    state: VersionState
    reason: str = ""
    #: Memory of the loaded version, bytes (0 when not loaded).
    memory_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    versions: tuple[VersionStatus, ...]

    @property
    def ready(self) -> bool:
        return any(v.state is VersionState.READY for v in self.versions)

    @property
    def requestable(self) -> list[str]:
        """The versions a request may name now: those loaded, and those that load on their request."""
        return [str(v.version) for v in self.versions if v.state in _REQUESTABLE]


_REQUESTABLE = frozenset({VersionState.READY, VersionState.NOT_LOADED, VersionState.EVICTED})


LoadHook = Callable[[str, int, float, bool], None]


class CacheObserver(Protocol):
    """What the manager tells the metrics about loads on demand and the memory budget."""

    def hit(self) -> None:
        """A request found its model loaded."""

    def miss(self, model: str) -> None:
        """A request found its model not loaded and waits for a load."""

    def loaded(self, model: str) -> None:
        """A version of a model loaded."""

    def cold_loaded(self, model: str, seconds: float) -> None:
        """A model that requests waited for loaded (``seconds``: from the first request to serving)."""

    def evicted(self, model: str, versions: tuple[int, ...]) -> None:
        """A model (these versions of it) was unloaded to make room."""

    def usage(self, models: int, memory_bytes: int) -> None:
        """Models loaded now and the memory they hold."""


class ReadinessGroup(Protocol):
    """The server processes that share one address (``--workers``): the server is ready only once every
    one of them has finished its first load."""

    def mark_loaded(self) -> None:
        """This process has finished its first scan and load."""

    def all_loaded(self) -> bool:
        """Every process of the group has."""
