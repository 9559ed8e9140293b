"""Reading logged requests back from a folder or object-store sink (``mlport logs``, the hub's deployment logs)."""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterator
from typing import Any

import orjson

from mlport.core.logconfig import SinkConfig
from mlport.errors import InvalidInput
from mlport.observability.requestlog.files import parquet_rows
from mlport.observability.requestlog.stores import LogStore, open_store

__all__ = ["LogReader", "parse_since"]

#: Most records one read returns (the newest are kept).
MAX_RECORDS = 100_000

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``30s``/``15m``/``2h``/``7d`` ago, or an ISO 8601 time (UTC when it names no zone)."""
    now = now or dt.datetime.now(dt.UTC)
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in _UNITS:
        return now - dt.timedelta(seconds=int(value[:-1]) * _UNITS[value[-1]])
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"since {text!r}: give a duration (30s, 15m, 2h, 7d) or an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


class LogReader:
    """The records of one sink, oldest first; :meth:`poll` returns those written since the last call."""

    def __init__(self, sink: SinkConfig, *, model: str | None = None, since: dt.datetime | None = None,
                 store: LogStore | None = None) -> None:
        if sink.kind == "http":
            raise InvalidInput(f"{sink.url} is a CloudEvents receiver: its records are read where it keeps them")
        self.store = store or open_store(sink)
        self.model = model
        self.since = since
        #: bytes of each file already read (JSON Lines files grow; Parquet files are read once)
        self._read: dict[str, int] = {}

    @property
    def position(self) -> dict[str, int]:
        """How far each file has been read: give it back to a new reader to go on from there."""
        return dict(self._read)

    @position.setter
    def position(self, value: dict[str, int]) -> None:
        self._read = dict(value)

    def records(self, limit: int = MAX_RECORDS) -> list[dict[str, Any]]:
        """The newest ``limit`` records (at most :data:`MAX_RECORDS`) held now, oldest first.

        Files are read newest first until ``limit`` records are found; older files are then taken as read (a
        following :meth:`poll` does not return them)."""
        limit = max(1, min(limit, MAX_RECORDS))
        names = self.store.names()
        found: list[list[dict[str, Any]]] = []
        count = 0
        for index in range(len(names) - 1, -1, -1):
            name = names[index]
            if count >= limit:
                self._read.setdefault(name, self.store.size(name))
                continue
            rows = list(self._new_in(name))
            found.append(rows)
            count += len(rows)
        kept: deque[dict[str, Any]] = deque(maxlen=limit)
        for rows in reversed(found):
            kept.extend(rows)
        return list(kept)

    def poll(self) -> Iterator[dict[str, Any]]:
        """The records written since the previous call (everything on the first)."""
        names = self.store.names()
        present = set(names)
        for name in list(self._read):
            if name not in present:  # rotated away by the retention limit
                del self._read[name]
        for name in names:
            yield from self._new_in(name)

    def _new_in(self, name: str) -> Iterator[dict[str, Any]]:
        done = self._read.get(name, 0)
        if name.endswith(".parquet"):
            if name in self._read:
                return
            data = self.store.read(name)
            self._read[name] = len(data)
            rows = parquet_rows(data) if data else []
        else:
            data = self.store.read(name, done)
            end = data.rfind(b"\n") + 1  # a line being written is read once it is whole
            self._read[name] = done + end
            rows = [orjson.loads(line) for line in data[:end].splitlines() if line.strip()]
        for row in rows:
            if self._wanted(row):
                yield row

    def _wanted(self, row: dict[str, Any]) -> bool:
        if self.model is not None and row.get("model") != self.model:
            return False
        if self.since is not None:
            try:
                return dt.datetime.fromisoformat(str(row.get("time"))) >= self.since
            except ValueError:
                return False
        return True
