"""Readers: CSV, Parquet, JSON Lines and folders (or globs) of images, streamed in chunks of an exact size.

Every reader yields ``pyarrow.RecordBatch`` chunks of ``batch_size`` rows (the last one shorter), so that
chunk ``k`` always holds rows ``k * batch_size ...``: a resumed run finds the same chunks again. Memory stays
bounded by a few chunks whatever the input size. CSV columns are read as text and turned into numbers per
input (a value that is not a number is one bad row, not a failed file); JSON Lines chunks that pyarrow
cannot read are read line by line to find the bad lines.
"""

from __future__ import annotations

import fnmatch
import io
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mlport.batch.storage import Location
from mlport.errors import InvalidInput

__all__ = ["BAD_LINE_COLUMN", "IMAGE_SUFFIXES", "Reader", "open_reader"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Where a JSON Lines reader puts why a line could not be read (null for good lines).
BAD_LINE_COLUMN = "__mlport_bad_line__"
#: Most image files one run takes from a folder or glob.
MAX_IMAGE_FILES = 10_000_000
#: Bytes pyarrow's CSV reader parses at a time.
CSV_BLOCK_BYTES = 4 * 1024 * 1024


class Reader:
    """One input: its column names, its row count when known beforehand, and its chunks."""

    columns: list[str]
    total_rows: int | None = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def chunks(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """The rows in chunks of exactly ``batch_size`` (the last one may be shorter)."""
        pending: pa.Table | None = None  # slices of the batches read, not yet given out (no copies)
        for batch in self.batches():
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            pending = table if pending is None else pa.concat_tables([pending, table])
            while pending.num_rows >= batch_size:
                yield _one_batch(pending.slice(0, batch_size))
                pending = pending.slice(batch_size)
        if pending is not None and pending.num_rows:
            yield _one_batch(pending)


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    """The rows of ``table`` as one record batch (copied only when they span several batches)."""
    batches = table.to_batches()
    return batches[0] if len(batches) == 1 else table.combine_chunks().to_batches()[0]


class _Csv(Reader):
    def __init__(self, loc: Location) -> None:
        self.loc = loc
        with loc.fs.open_input_stream(loc.path) as f:
            head = f.read(1024 * 1024)
        first = pacsv.read_csv(io.BytesIO(head.split(b"\n", 1)[0] + b"\n"),
                               read_options=pacsv.ReadOptions(autogenerate_column_names=False))
        self.columns = first.column_names
        if not self.columns:
            raise InvalidInput(f"{loc.uri}: no header row")

    def batches(self) -> Iterator[pa.RecordBatch]:
        types = {c: pa.string() for c in self.columns}
        bad = _BadCsvRows(self.columns)
        with self.loc.fs.open_input_stream(self.loc.path) as f:
            # one thread: pyarrow then knows the line number of a row with the wrong number of fields
            reader = pacsv.open_csv(
                f, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
                parse_options=pacsv.ParseOptions(invalid_row_handler=bad.handle),
                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                                     null_values=[""], quoted_strings_can_be_null=False))
            try:
                for batch in reader:
                    yield bad.merge(batch)
            except pa.ArrowInvalid as exc:
                raise InvalidInput(f"{self.loc.uri} is not readable CSV: {exc}") from None
        if tail := bad.merge(None):
            yield tail


class _BadCsvRows:
    """Rows with the wrong number of fields, put back at their place as rows with a reason.

    pyarrow's CSV reader can only skip such a row; it reports its line number (the header is line 1), so the
    row comes back into the stream as a row of nulls whose ``BAD_LINE_COLUMN`` says why. Every other row
    keeps its number, and the run goes on.
    """

    MAX_PENDING = 1_000_000

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.pending: list[tuple[int, str]] = []  # (0-based data row, reason), in file order
        self.emitted = 0  # data rows given out so far, bad ones included

    def handle(self, row: Any) -> str:
        if row.number is None or len(self.pending) >= self.MAX_PENDING:
            return "error"
        self.pending.append((row.number - 2, f"the line has {row.actual_columns} fields, the header has "
                                             f"{row.expected_columns}"))
        return "skip"

    def merge(self, batch: pa.RecordBatch | None) -> pa.RecordBatch | None:
        """``batch`` with the pending bad rows that fall inside it (all of them when ``batch`` is None)."""
        good = 0 if batch is None else batch.num_rows
        placed: list[tuple[int, str]] = []
        for index, reason in self.pending:
            if batch is not None and index >= self.emitted + good + len(placed):
                break
            placed.append((index - self.emitted, reason))
        del self.pending[:len(placed)]
        if batch is None:
            if not placed:
                return None
            batch = pa.RecordBatch.from_arrays([pa.nulls(0, pa.string())] * len(self.names), names=self.names)
        total = good + len(placed)
        self.emitted += total
        if not placed:
            return batch.append_column(BAD_LINE_COLUMN, pa.nulls(total, pa.string()))
        at = np.fromiter((pos for pos, _ in placed), dtype=np.int64, count=len(placed))
        is_good = np.ones(total, dtype=bool)
        is_good[at] = False
        rows = np.zeros(total, dtype=np.int64)
        rows[is_good] = np.arange(good)
        rows[at] = np.arange(len(placed))
        merged = batch.take(pa.array(rows, mask=~is_good))
        reasons = pa.array([reason for _, reason in placed], pa.string()).take(pa.array(rows, mask=is_good))
        return merged.append_column(BAD_LINE_COLUMN, reasons)


class _Parquet(Reader):
    def __init__(self, loc: Location) -> None:
        self.loc = loc
        try:
            self._file = pq.ParquetFile(loc.fs.open_input_file(loc.path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput(f"{loc.uri} is not a readable Parquet file: {exc}") from None
        self.columns = self._file.schema_arrow.names
        self.total_rows = self._file.metadata.num_rows

    def batches(self) -> Iterator[pa.RecordBatch]:
        yield from self._file.iter_batches(batch_size=65_536)


class _JsonLines(Reader):
    LINES = 8192

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        with loc.fs.open_input_stream(loc.path) as f:
            first = next(iter(_lines(f)), b"{}")
        try:
            row = orjson.loads(first)
        except orjson.JSONDecodeError:
            row = {}
        self.columns = list(row) if isinstance(row, dict) else []

    def batches(self) -> Iterator[pa.RecordBatch]:
        with self.loc.fs.open_input_stream(self.loc.path) as f:
            lines = _lines(f)
            while chunk := list(itertools.islice(lines, self.LINES)):
                yield _json_chunk(chunk)


def _lines(f: Any) -> Iterator[bytes]:
    buf = io.BufferedReader(f, buffer_size=1024 * 1024)  # type: ignore[arg-type]
    for line in buf:
        if line.strip():
            yield line


def _json_chunk(lines: list[bytes]) -> pa.RecordBatch:
    try:
        table = pajson.read_json(io.BytesIO(b"".join(lines)))
        return table.append_column(BAD_LINE_COLUMN, pa.nulls(table.num_rows, pa.string())) \
            .combine_chunks().to_batches()[0]
    except pa.ArrowInvalid:
        pass
    rows: list[dict[str, Any]] = []
    for line in lines:  # a chunk pyarrow refused: find its bad lines (one parse per line)
        try:
            row = orjson.loads(line)
            rows.append(row if isinstance(row, dict) else {BAD_LINE_COLUMN: "the line is not a JSON object"})
        except orjson.JSONDecodeError as exc:
            rows.append({BAD_LINE_COLUMN: f"not JSON: {exc}"})
    for row in rows:
        row.setdefault(BAD_LINE_COLUMN, None)
    try:
        return pa.RecordBatch.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInput(f"the JSON lines disagree on the type of a field: {exc}") from None


class _Images(Reader):
    """Image files: a ``path`` column (the file name under the folder) and an ``image`` column (the bytes)."""

    FILES_PER_BATCH = 64

    def __init__(self, loc: Location, files: list[str], base: str) -> None:
        if not files:
            raise InvalidInput(f"{loc.uri}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        self.loc = loc
        self.files = files
        self.base = base
        self.columns = ["path", "image"]
        self.total_rows = len(files)

    def batches(self) -> Iterator[pa.RecordBatch]:
        for i in range(0, len(self.files), self.FILES_PER_BATCH):
            names = self.files[i:i + self.FILES_PER_BATCH]
            data = []
            for name in names:
                with self.loc.fs.open_input_stream(name) as f:
                    data.append(f.read())
            rel = [n[len(self.base):].lstrip("/") for n in names]
            yield pa.RecordBatch.from_arrays([pa.array(rel, pa.string()), pa.array(data, pa.binary())],
                                             names=self.columns)


def _image_files(loc: Location) -> tuple[list[str], str]:
    if loc.is_dir():
        base, pattern = loc.path, "*"
    else:
        base, _, pattern = loc.path.rpartition("/")
        if not any(ch in pattern for ch in "*?["):
            raise InvalidInput(f"{loc.uri} does not exist")
    infos = loc.fs.get_file_info(pafs.FileSelector(base, recursive=pattern == "*"))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File
                   and i.path.lower().endswith(IMAGE_SUFFIXES)
                   and fnmatch.fnmatch(i.path.rsplit("/", 1)[-1], pattern if pattern != "*" else "*"))
    if len(files) > MAX_IMAGE_FILES:
        raise InvalidInput(f"{loc.uri} has more than {MAX_IMAGE_FILES} image files")
    return files, base


def open_reader(loc: Location, fmt: str | None = None) -> Reader:
    """The reader for ``loc``: by ``fmt`` (csv, parquet, jsonl, images) or the name's extension."""
    kind = fmt or _kind(loc)
    if kind == "images":
        files, base = _image_files(loc)
        return _Images(loc, files, base)
    if not loc.exists():
        raise InvalidInput(f"{loc.uri} does not exist")
    readers = {"csv": _Csv, "parquet": _Parquet, "jsonl": _JsonLines}
    return readers[kind](loc)


def _kind(loc: Location) -> str:
    name = loc.name.lower()
    for suffix, kind in ((".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"), (".jsonl", "jsonl"),
                         (".ndjson", "jsonl"), (".json", "jsonl")):
        if name.endswith(suffix) or name.endswith(suffix + ".gz"):
            return kind
    if any(ch in name for ch in "*?[") or (loc.exists() and loc.is_dir()):
        return "images"
    raise InvalidInput(f"{loc.uri}: cannot tell the format from the name; use a .csv, .parquet or .jsonl name, "
                       "an image folder, or --input-format")
