"""Many captured requests at once: grouped by layout, each tensor slot of a group turned into bytes by one numpy
call, ids and times made for the whole group.

A *layout* is what a record's encoding depends on beyond its own values: model, version, protocol, status and,
per tensor, its name, dtype and shape. The records of one layout differ only in their id, time, latency, lineage
and tensor bytes, so their tensors of one name stack into one ``(records, bytes)`` matrix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlport.observability.requestlog.records import MAX_ID, Captured

__all__ = ["Group", "epoch_micros", "given_ids", "groups", "new_ids", "quoted", "raw_rows"]

Arrays = Mapping[str, np.ndarray[Any, Any]] | None
_QUOTE = ord('"')


def _layout(arrays: Arrays) -> tuple[Any, ...] | None:
    # the names, then each tensor's dtype number and shape (hashing a dtype is slow; byte order is evened out by
    # raw_rows)
    return None if arrays is None else (*arrays, *[(a.dtype.num, a.shape) for a in arrays.values()])


@dataclass(slots=True)
class Group:
    """The records of one layout: their positions in the batch, and whether their tensors stack (none BYTES)."""

    key: tuple[Any, ...]
    first: Captured
    index: list[int] = field(default_factory=list)
    records: list[Captured] = field(default_factory=list)

    @property
    def numeric(self) -> bool:
        c = self.first
        return not any(a.dtype.kind in "OUSV" for arrays in (c.inputs, c.outputs) for a in (arrays or {}).values())


def groups(batch: Sequence[Captured]) -> list[Group]:
    """The batch's records by layout, in order of first appearance."""
    found: dict[tuple[Any, ...], Group] = {}
    for i, c in enumerate(batch):
        key = (c.model, c.version, c.protocol, c.status, _layout(c.inputs), _layout(c.outputs))
        group = found.get(key)
        if group is None:
            group = found[key] = Group(key, c)
        group.index.append(i)
        group.records.append(c)
    return list(found.values())


def raw_rows(arrays: list[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """Arrays of one dtype and shape as a ``(len(arrays), bytes)`` uint8 matrix: each row one array's elements as
    little-endian bytes in row-major order (what :func:`~.records.raw_bytes` gives for one)."""
    flat = np.concatenate(arrays, axis=None)
    if flat.size == 0:
        return np.empty((len(arrays), 0), np.uint8)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    return flat.view(np.uint8).reshape(len(arrays), -1)


def quoted(rows: np.ndarray[Any, Any]) -> list[bytes]:
    """Each row of an ASCII uint8 matrix as a JSON string (its text between double quotes; no escaping)."""
    n = rows.shape[0]
    out = np.empty((n, rows.shape[1] + 2), np.uint8)
    out[:, 0] = out[:, -1] = _QUOTE
    out[:, 1:-1] = rows
    return out.view(f"S{out.shape[1]}").ravel().tolist()  # type: ignore[no-any-return]


def new_ids(n: int) -> np.ndarray[Any, Any]:
    """``n`` random ids as an ``(n, 32)`` ASCII matrix: the hex of version 4 UUIDs, as ``uuid4().hex`` gives."""
    raw = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return np.frombuffer(raw.tobytes().hex().encode("ascii"), np.uint8).reshape(n, 32)


def given_ids(records: list[Captured]) -> list[str | None]:
    """The records' own ids (cut to :data:`~.records.MAX_ID`), ``None`` where a new one is needed."""
    return [c.request_id[:MAX_ID] if c.request_id else None for c in records]


def epoch_micros(records: list[Captured]) -> np.ndarray[Any, Any]:
    """The records' times as whole microseconds since the epoch (rounded as ``round(t * 1e6)``)."""
    return np.rint(np.array([c.time for c in records], dtype=np.float64) * 1e6).astype(np.int64)
