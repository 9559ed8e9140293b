"""Metric values shared by worker processes, written at the cost of a memory store.

In multiprocess mode (the workers of ``mlport serve --workers N``) prometheus_client keeps each value in a
file per process that the scraping worker reads and sums (``multiprocess.MultiProcessCollector``).  Its own
value class takes a lock, asks the kernel for the process id (a system call) and looks the value's key up in
the file's table on every update: close to a microsecond, and an inference request makes four updates.

:class:`SharedValue` keeps the same files in the same documented layout (the collector reads them unchanged)
but finds a value's place in its file once, when the value is made, so an update is an addition and one
16-byte store into the mapped file.  A process id is read once; a fork is noticed as it happens
(:func:`os.register_at_fork`) and the child then writes files of its own, as with prometheus_client.

File layout (``prometheus_client.mmap_dict``): a 4-byte count of the bytes used, 4 bytes of padding, then
entries of a 4-byte key length, the UTF-8 key padded to 8-byte alignment, and two doubles: the value and a
timestamp.  Call :func:`use_shared_values` in a worker before any metric is created.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.mmap_dict import mmap_key

__all__ = ["SharedValue", "use_shared_values"]

_INITIAL_BYTES = 1 << 16
_HEADER = 8
_USED = struct.Struct("i")
_PAIR = struct.Struct("dd")
_pack = _PAIR.pack

_lock = threading.Lock()
_pid = os.getpid()
#: Changes in a child process at a fork: values made before it move to the child's own files.
_generation = 0


def _forked() -> None:
    global _pid, _generation
    _pid = os.getpid()
    _generation += 1
    _File.opened.clear()


os.register_at_fork(after_in_child=_forked)


class _File:
    """One process's file of values of one kind (``counter``, ``histogram``, ``gauge_livesum``...), mapped."""

    #: The files this process has open, by kind.
    opened: dict[str, _File] = {}

    def __init__(self, path: str) -> None:
        self._f = open(path, "a+b")  # noqa: SIM115 (kept open while the process lives)
        size = os.fstat(self._f.fileno()).st_size
        if size == 0:
            self._f.truncate(_INITIAL_BYTES)
            size = _INITIAL_BYTES
        self.size = size
        self.m = mmap.mmap(self._f.fileno(), size)
        self.used = _USED.unpack_from(self.m, 0)[0] or _HEADER
        self.m[0:4] = _USED.pack(self.used)
        self.places: dict[str, int] = dict(self._scan())

    @classmethod
    def of(cls, kind: str) -> _File:
        found = cls.opened.get(kind)
        if found is None:
            folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
            found = cls.opened[kind] = cls(os.path.join(folder, f"{kind}_{_pid}.db"))
        return found

    def _scan(self) -> Iterator[tuple[str, int]]:
        pos = _HEADER
        while pos < self.used:
            length = _USED.unpack_from(self.m, pos)[0]
            key = bytes(self.m[pos + 4:pos + 4 + length]).decode("utf-8")
            pos += 4 + length + (8 - (length + 4) % 8)
            yield key, pos
            pos += _PAIR.size

    def place(self, key: str) -> int:
        """Where the value of ``key`` is in the file (an entry of zero is added when it is new)."""
        found = self.places.get(key)
        if found is not None:
            return found
        encoded = key.encode("utf-8")
        padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
        entry = _USED.pack(len(encoded)) + padded + _PAIR.pack(0.0, 0.0)
        if self.used + len(entry) > self.size:
            while self.used + len(entry) > self.size:
                self.size *= 2
            self._f.truncate(self.size)
            self.m = mmap.mmap(self._f.fileno(), self.size)
        self.m[self.used:self.used + len(entry)] = entry
        self.used += len(entry)
        self.m[0:4] = _USED.pack(self.used)  # the entry is complete before a reader may see it
        found = self.places[key] = self.used - _PAIR.size
        return found


class SharedValue:
    """A metric value in this process's file (prometheus_client's value interface)."""

    _multiprocess = True
    __slots__ = ("_file", "_generation", "_key", "_kind", "_place", "_timestamp", "_value")

    def __init__(self, typ: str, metric_name: str, name: str, labelnames: Any, labelvalues: Any, help_text: str,
                 multiprocess_mode: str = "", **kwargs: Any) -> None:
        self._kind = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
        self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
        with _lock:
            self._open()

    def _open(self) -> None:
        self._generation = _generation
        self._file = _File.of(self._kind)
        self._place = self._file.place(self._key)
        value, stamp = _PAIR.unpack_from(self._file.m, self._place)
        self._value: float = value
        self._timestamp: float = stamp

    def inc(self, amount: float) -> None:
        with _lock:
            if self._generation != _generation:  # a fork: this process writes files of its own from now on
                self._open()
            self._value = value = self._value + amount
            self._timestamp = 0.0
            place = self._place
            # one slice assignment: a reader never sees the value half written (pack_into writes in steps)
            self._file.m[place:place + 16] = _pack(value, 0.0)

    def set(self, value: float, timestamp: float | None = None) -> None:
        with _lock:
            if self._generation != _generation:
                self._open()
            self._value = value
            self._timestamp = stamp = timestamp or 0.0
            place = self._place
            self._file.m[place:place + 16] = _pack(value, stamp)

    def set_exemplar(self, exemplar: Any) -> None:
        """Exemplars are not kept in multiprocess mode (as in prometheus_client)."""

    def get(self) -> float:
        with _lock:
            return self._value

    def get_exemplar(self) -> None:
        return None


def use_shared_values() -> None:
    """Make the metrics created from now on keep their values in this process's shared files
    (``PROMETHEUS_MULTIPROC_DIR`` must be set)."""
    from prometheus_client import values

    values.ValueClass = SharedValue
