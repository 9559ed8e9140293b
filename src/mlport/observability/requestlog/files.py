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
from mlport.observability.requestlog.jsonlines import json_lines
from mlport.observability.requestlog.records import Captured
from mlport.observability.requestlog.stores import FolderStore, LogStore, open_store

__all__ = ["RotatingFiles", "parquet_rows"]

#: Parquet rows buffered before they are written as one row group (also written at rotation and close).
ROW_GROUP = 16384
#: Bytes of Arrow data buffered at most before they are written as one row group (large tensors).
ROW_GROUP_BYTES = 64 * 1024 * 1024


def parquet_rows(data: bytes) -> list[dict[str, Any]]:
    """The records of one Parquet log file, in the JSON form (time as ISO 8601 text, tensors base64)."""
    import pyarrow.parquet as pq

    from mlport.observability.requestlog.records import encode_tensor

    # ParquetFile, not read_table: read_table scans through pyarrow's dataset threads, which can abort the
    # process as the interpreter exits (pyarrow 26: "terminate called without an active exception").
    rows: list[dict[str, Any]] = pq.ParquetFile(io.BytesIO(data)).read().to_pylist()
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
        self._buffered = 0

    # ------------------------------------------------------------------ writing
    def encode(self, batch: list[Captured]) -> Any:
        """The batch as JSON Lines bytes or an Arrow table (on the event loop: see :mod:`.writer`)."""
        if self.sink.format == "parquet":
            from mlport.observability.requestlog.arrowtable import parquet_table

            return parquet_table(batch)
        return json_lines(batch)

    def write(self, encoded: list[Any]) -> None:
        """Write what :meth:`encode` made, oldest first (on the writer thread)."""
        if self._path is None:
            self._open()
        if self.sink.format == "parquet":
            self._tables.extend(encoded)
            self._rows += sum(t.num_rows for t in encoded)
            self._buffered += sum(t.nbytes for t in encoded)
            if self._rows >= ROW_GROUP or self._buffered >= ROW_GROUP_BYTES:
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
            self._parquet, self._file, self._tables, self._rows, self._buffered = None, None, [], 0, 0
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
            from mlport.observability.requestlog.arrowtable import parquet_writer

            self._parquet = parquet_writer(str(self._path))
        else:
            self._file = open(self._path, "ab")  # noqa: SIM115 - held open until rotation

    def _write_rows(self) -> None:
        import pyarrow as pa

        table = pa.concat_tables(self._tables)
        self._tables, self._rows, self._buffered = [], 0, 0
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
