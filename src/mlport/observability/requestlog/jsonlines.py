"""A batch of records as JSON Lines, the same bytes as ``orjson.dumps(to_json(c)) + b"\\n"`` for each record.

The records of one layout (see :mod:`.batches`) share a line template, a bytes ``%``-format with a hole for the
id, time, latency, lineage and each tensor's data; the holes are filled from columns made for the whole group
(base64 of a whole tensor slot in one call, ids and times by numpy), so a record costs one format and a few
list items. Records with BYTES tensors are encoded one by one.
"""

from __future__ import annotations

import re
import time
from binascii import b2a_base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from mlport.observability.requestlog.batches import (
    Group,
    epoch_micros,
    given_ids,
    groups,
    new_ids,
    quoted,
    raw_rows,
)
from mlport.observability.requestlog.records import Captured, datatype_of, iso_time, lineage, to_json

__all__ = ["json_lines"]

#: Most line templates kept (one per layout).
MAX_TEMPLATES = 1024
_templates: dict[tuple[Any, ...], bytes | None] = {}
_HOLE = "\x01"
_HOLE_JSON = re.compile(rb'"\\u0001"')
_DIGITS = 10 ** np.arange(5, -1, -1, dtype=np.int64)
_EQUALS = ord("=")


def json_lines(batch: Sequence[Captured]) -> bytes:
    """The batch's records as JSON Lines, in batch order."""
    found = groups(batch)
    if len(found) == 1:
        return b"".join(_lines(found[0]))
    lines: list[bytes] = [b""] * len(batch)
    for group in found:
        for i, line in zip(group.index, _lines(group), strict=True):
            lines[i] = line
    return b"".join(lines)


def _lines(group: Group) -> list[bytes]:
    template = _template_of(group) if group.numeric else None
    records = group.records
    if template is None:
        return [orjson.dumps(to_json(c)) + b"\n" for c in records]
    columns = [_ids(records), _times(records), _latencies(records), _lineage(records, "routed_to"),
               _lineage(records, "answered_by")]
    first = group.first
    if first.inputs is not None:
        columns.extend(_base64(raw_rows([c.inputs[n] for c in records])) for n in first.inputs)  # type: ignore[index]
    if first.outputs is not None:
        columns.extend(_base64(raw_rows([c.outputs[n] for c in records])) for n in first.outputs)  # type: ignore[index]
    return [template % row for row in zip(*columns, strict=True)]


def _template_of(group: Group) -> bytes | None:
    try:
        return _templates[group.key]
    except KeyError:
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        found = _templates[group.key] = _template(group.first)
        return found


def _template(c: Captured) -> bytes | None:
    """The record's line with a ``%s`` for each value that differs between the records of its layout."""

    def holes(arrays: Mapping[str, np.ndarray[Any, Any]] | None) -> list[dict[str, Any]] | None:
        if arrays is None:
            return None
        return [{"name": n, "datatype": datatype_of(a), "shape": list(a.shape), "data": _HOLE}
                for n, a in arrays.items()]

    text = orjson.dumps({
        "id": _HOLE, "time": _HOLE, "model": c.model, "version": c.version, "protocol": c.protocol,
        "status": c.status, "latency_ms": _HOLE, "routed_to": _HOLE, "answered_by": _HOLE,
        "inputs": holes(c.inputs), "outputs": holes(c.outputs),
    })
    parts = _HOLE_JSON.split(text)
    if len(parts) != 6 + len(c.inputs or ()) + len(c.outputs or ()):
        return None  # a name with the hole in it: no template
    return b"%s".join([p.replace(b"%", b"%%") for p in parts]) + b"\n"


def _ids(records: list[Captured]) -> list[bytes]:
    given = given_ids(records)
    if all(given):
        return [orjson.dumps(r) for r in given]
    made = quoted(new_ids(len(records)))
    return [orjson.dumps(r) if r else m for r, m in zip(given, made, strict=True)]


def _times(records: list[Captured]) -> list[bytes]:
    """``iso_time`` of each record: the date and time of day formatted once per distinct second, the
    microseconds as digits by numpy."""
    seconds, micros = np.divmod(epoch_micros(records), 1_000_000)
    distinct, which = np.unique(seconds, return_inverse=True)
    days = [time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(int(s))).encode("ascii") for s in distinct]
    if any(len(d) != 20 for d in days):  # a year outside 1000..9999: one by one
        return [orjson.dumps(iso_time(c.time)) for c in records]
    rows = np.empty((len(records), 32), np.uint8)
    rows[:, :20] = np.frombuffer(b"".join(days), np.uint8).reshape(len(days), 20)[which]
    rows[:, 20:26] = micros[:, None] // _DIGITS % 10 + ord("0")
    rows[:, 26:] = np.frombuffer(b"+00:00", np.uint8)
    return quoted(rows)


def _latencies(records: list[Captured]) -> list[bytes]:
    return orjson.dumps([round(c.seconds * 1000.0, 3) for c in records])[1:-1].split(b",")


def _lineage(records: list[Captured], key: str) -> list[bytes]:
    if not any(c.parameters for c in records):
        return [b"null"] * len(records)
    return [orjson.dumps(lineage(c, key)) for c in records]


def _base64(rows: np.ndarray[Any, Any]) -> list[bytes]:
    """Each row's bytes as a base64 JSON string: all rows encoded by one call, each padded to whole 3-byte groups
    with zeros whose characters then become ``=``, as base64 of the row alone ends."""
    n, width = rows.shape
    if width == 0:
        return [b'""'] * n
    pad = -width % 3
    if pad:
        rows = np.concatenate([rows, np.zeros((n, pad), np.uint8)], axis=1)
    chars = (width + pad) // 3 * 4
    text = np.frombuffer(b2a_base64(rows.tobytes(), newline=False), np.uint8).reshape(n, chars)
    if pad:
        text = text.copy()
        text[:, chars - pad:] = _EQUALS
    return quoted(text)
