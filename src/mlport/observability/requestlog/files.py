"""Log files rotated by size and age, JSON Lines or Parquet, with a limit on how many are kept."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from mlport.core.logconfig import SinkConfig
from mlport.errors import InvalidInput
from mlport.observability.requestlog.records import (
    Captured,
    datatype_of,
    element_bytes,
    json_line,
    lineage,
    raw_bytes,
    record_id,
)
from mlport.observability.requestlog.stores import FolderStore, LogStore, open_store

__all__ = ["RotatingFiles", "parquet_rows", "parquet_schema"]

#: Parquet rows buffered before they are written as one row group (also written at rotation and close).
ROW_GROUP = 1024


def _tensor_type() -> Any:
    import pyarrow as pa

    return pa.struct([("name", pa.string()), ("datatype", pa.string()), ("shape", pa.list_(pa.int64())),
                      ("data", pa.binary()), ("elements", pa.list_(pa.binary()))])


def parquet_schema() -> Any:
    import pyarrow as pa

    tensor = _tensor_type()
    return pa.schema([
        ("id", pa.string()), ("time", pa.timestamp("us", tz="UTC")), ("model", pa.string()),
        ("version", pa.string()), ("protocol", pa.string()), ("status", pa.string()), ("latency_ms", pa.float64()),
        ("routed_to", pa.list_(pa.string())), ("answered_by", pa.list_(pa.string())),
        ("inputs", pa.list_(tensor)), ("outputs", pa.list_(tensor)),
    ])


def parquet_rows(data: bytes) -> list[dict[str, Any]]:
    """The records of one Parquet log file, in the JSON form (time as ISO 8601 text, tensors base64)."""
    import pyarrow.parquet as pq

    from mlport.observability.requestlog.records import encode_tensor

    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    for row in rows:
        row["time"] = row["time"].isoformat(timespec="microseconds")
        for key in ("inputs", "outputs"):
            if row[key] is not None:
                row[key] = [_text_tensor(t, encode_tensor) for t in row[key]]
    return rows


def _text_tensor(t: dict[str, Any], encode: Any) -> dict[str, Any]:
    import base64

    out = {"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}
    if t.get("elements") is not None:
        out["elements"] = [base64.b64encode(e).decode("ascii") for e in t["elements"]]
    else:
        out["data"] = base64.b64encode(t["data"] or b"").decode("ascii")
    return out


class RotatingFiles:
    """Writes records to the current file of a folder or object-store sink (from the writer thread only)."""

    def __init__(self, sink: SinkConfig, store: LogStore | None = None) -> None:
        self.sink = sink
        if sink.format == "parquet":
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError:
                raise InvalidInput("Parquet request logs need pyarrow: pip install 'mlport[batch]'") from None
        self.store: LogStore = store or open_store(sink)
        if isinstance(self.store, FolderStore):
            self.store.folder.mkdir(parents=True, exist_ok=True)
            self._work = self.store.folder
        else:
            self._work = Path(tempfile.mkdtemp(prefix="mlport-requestlog-"))
        self._seq = 0
        self._path: Path | None = None
        self._final = ""
        self._opened = 0.0
        self._file: IO[bytes] | None = None
        self._parquet: Any = None
        self._tables: list[Any] = []
        self._rows = 0

    # ------------------------------------------------------------------ writing
    def encode(self, batch: list[Captured]) -> Any:
        """The batch as JSON Lines bytes or an Arrow table (on the event loop: see :mod:`.writer`)."""
        if self.sink.format == "parquet":
            return parquet_table(batch)
        return b"".join([json_line(c) for c in batch])

    def write(self, encoded: list[Any]) -> None:
        """Write what :meth:`encode` made, oldest first (on the writer thread)."""
        if self._path is None:
            self._open()
        if self.sink.format == "parquet":
            self._tables.extend(encoded)
            self._rows += sum(t.num_rows for t in encoded)
            if self._rows >= ROW_GROUP:
                self._write_rows()
        else:
            assert self._file is not None
            self._file.write(b"".join(encoded))
            self._file.flush()
        if self._size() >= self.sink.rotate_bytes or time.monotonic() - self._opened >= self.sink.rotate_s:
            self.rotate()

    def tick(self) -> None:
        """Called when the writer is idle: rotate a file that has grown old, write buffered Parquet rows."""
        if self._path is None:
            return
        if time.monotonic() - self._opened >= self.sink.rotate_s:
            self.rotate()
        elif self._rows:
            self._write_rows()

    def rotate(self) -> None:
        """Close the current file, hand it to the store, and apply the retention limit."""
        if self._path is None:
            return
        path, self._path = self._path, None
        try:
            if self._rows:
                self._write_rows()
            if self._parquet is not None:
                self._parquet.close()
            if self._file is not None:
                self._file.close()
        finally:
            self._parquet, self._file, self._tables, self._rows = None, None, [], 0
        final = path.with_name(self._final)
        if path != final:
            os.replace(path, final)
        self.store.publish(final)
        self._prune()

    def close(self) -> None:
        self.rotate()
        if not isinstance(self.store, FolderStore):
            with contextlib.suppress(OSError):
                self._work.rmdir()

    # ------------------------------------------------------------------ helpers
    def _open(self) -> None:
        self._seq += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        self._final = f"requests-{stamp}-{os.getpid()}-{self._seq}.{self.sink.format}"
        # a growing JSON Lines file in a folder can be followed; others get their name once closed
        visible = self.sink.format == "jsonl" and isinstance(self.store, FolderStore)
        self._path = self._work / (self._final if visible else f".part-{self._final}")
        self._opened = time.monotonic()
        if self.sink.format == "parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(str(self._path), parquet_schema(), compression="zstd")
        else:
            self._file = open(self._path, "ab")  # noqa: SIM115 - held open until rotation

    def _write_rows(self) -> None:
        import pyarrow as pa

        table = pa.concat_tables(self._tables)
        self._tables, self._rows = [], 0
        self._parquet.write_table(table)

    def _size(self) -> int:
        try:
            return os.stat(self._path).st_size if self._path is not None else 0
        except OSError:
            return 0

    def _prune(self) -> None:
        names = self.store.names()
        for name in names[: max(0, len(names) - self.sink.keep)]:
            self.store.delete(name)


def _tensors_column(batch: list[Captured], outputs: bool) -> Any:
    """The ``inputs`` (or ``outputs``) column of a batch, built as flat Arrow arrays (no per-row dicts)."""
    import pyarrow as pa

    offsets, missing = [0], []
    names: list[str] = []
    datatypes: list[str] = []
    shape_offsets, dims = [0], []
    data: list[bytes | None] = []
    element_offsets, elements, no_elements = [0], [], []
    for c in batch:
        arrays = c.outputs if outputs else c.inputs
        missing.append(arrays is None)
        for name, arr in (arrays or {}).items():
            datatype = datatype_of(arr)
            names.append(name)
            datatypes.append(datatype)
            dims.extend(arr.shape)
            shape_offsets.append(len(dims))
            bytes_tensor = datatype == "BYTES"
            data.append(None if bytes_tensor else raw_bytes(arr))
            if bytes_tensor:
                elements.extend(element_bytes(arr))
            no_elements.append(not bytes_tensor)
            element_offsets.append(len(elements))
        offsets.append(len(names))
    tensor = _tensor_type()
    struct = pa.StructArray.from_arrays([
        pa.array(names, pa.string()), pa.array(datatypes, pa.string()),
        pa.ListArray.from_arrays(pa.array(shape_offsets, pa.int32()), pa.array(dims, pa.int64())),
        pa.array(data, pa.binary()),
        pa.ListArray.from_arrays(pa.array(element_offsets, pa.int32()), pa.array(elements, pa.binary()),
                                 mask=pa.array(no_elements, pa.bool_())),
    ], fields=list(tensor))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), struct, mask=pa.array(missing, pa.bool_()))


def parquet_table(batch: list[Captured]) -> Any:
    """A batch of captured requests as one Arrow table of :func:`parquet_schema`."""
    import pyarrow as pa

    schema = parquet_schema()
    columns = [
        pa.array([record_id(c) for c in batch], pa.string()),
        pa.array([round(c.time * 1e6) for c in batch], pa.int64()).cast(schema.field("time").type),
        pa.array([c.model for c in batch], pa.string()),
        pa.array([c.version for c in batch], pa.string()),
        pa.array([c.protocol for c in batch], pa.string()),
        pa.array([c.status for c in batch], pa.string()),
        pa.array([round(c.seconds * 1000.0, 3) for c in batch], pa.float64()),
        pa.array([lineage(c, "routed_to") for c in batch], pa.list_(pa.string())),
        pa.array([lineage(c, "answered_by") for c in batch], pa.list_(pa.string())),
        _tensors_column(batch, outputs=False),
        _tensors_column(batch, outputs=True),
    ]
    return pa.Table.from_arrays(columns, schema=schema)
