"""Readers: CSV, Parquet, JSON Lines and folders (or globs) of images, read by parts, in chunks of an exact size.

A reader splits its input into parts (:meth:`Reader.parts`: byte ranges that start on line starts for text,
row ranges for Parquet, file ranges for images) that workers read on their own, and reads one part in
chunks of ``batch_size`` rows (the last one shorter), each with the position after it, so a resumed run
starts again where a part stopped. Memory stays bounded by a few chunks whatever the input size. CSV
columns that feed numeric inputs are parsed as numbers, the others as text (a value that is not a number
is one bad row, not a failed file); JSON Lines chunks that pyarrow cannot read are read line by line to
find the bad lines.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlport.batch.storage import Location
from mlport.errors import InvalidInput

__all__ = ["BAD_LINE_COLUMN", "IMAGE_SUFFIXES", "Reader", "Want", "open_reader"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Where a text reader puts why a line could not be read (null for good lines).
BAD_LINE_COLUMN = "__mlport_bad_line__"
#: Most image files one run takes from a folder or glob.
MAX_IMAGE_FILES = 10_000_000


@dataclass(frozen=True)
class Want:
    """The columns a run reads (None: all) and those it reads as numbers."""

    columns: frozenset[str] | None = None
    numeric: frozenset[str] = field(default_factory=frozenset)


class Reader:
    """One input: its column names, its row count when known beforehand, its parts and their chunks."""

    columns: list[str]
    total_rows: int | None = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def parts(self, n: int) -> list[tuple[int, int]]:
        """At most ``n`` parts ``(start, end)`` in the reader's own positions, in input order."""
        return [(0, -1)]

    def read(self, start: int, end: int, batch_size: int, want: Want | None = None
             ) -> Iterator[tuple[pa.RecordBatch, int]]:
        """The chunks of the part ``[start, end)``, each with the position after it."""
        if start != 0:
            raise InvalidInput("this input cannot be resumed part-way")
        for batch in self.chunks(batch_size):
            yield batch, 0

    def rows_between(self, start: int, end: int) -> int:
        """The rows from position ``start`` to ``end``."""
        return sum(b.num_rows for b, _ in self.read(start, end, 65_536))

    def chunks(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        """The rows in chunks of exactly ``batch_size`` (the last one may be shorter)."""
        return rebatch(self.batches(), batch_size)


def rebatch(batches: Iterator[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    """``batches`` cut and joined into chunks of exactly ``batch_size`` rows (the last one may be shorter)."""
    pending: pa.Table | None = None  # slices of the batches read, not yet given out (no copies)
    for batch in batches:
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

    def parts(self, n: int) -> list[tuple[int, int]]:
        return _row_parts(self.total_rows or 0, n)

    def rows_between(self, start: int, end: int) -> int:
        return end - start

    def read(self, start: int, end: int, batch_size: int, want: Want | None = None
             ) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Rows ``[start, end)``: from the row group holding ``start`` (the rows before it there are skipped)."""
        columns = None if want is None or want.columns is None else [c for c in self.columns if c in want.columns]
        meta = self._file.metadata
        groups: list[int] = []
        first = at = 0
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if at + rows > start and at < end:
                if not groups:
                    first = at
                groups.append(g)
            at += rows
        if not groups:
            return
        batches = self._file.iter_batches(batch_size=65_536, row_groups=groups, columns=columns)
        position = start
        for chunk in rebatch(_rows(batches, start - first, end - start), batch_size):
            position += chunk.num_rows
            yield chunk, position


def _rows(batches: Iterator[pa.RecordBatch], skip: int, count: int) -> Iterator[pa.RecordBatch]:
    """``count`` rows of ``batches`` after the first ``skip``."""
    for batch in batches:
        if count <= 0:
            return
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        batch = batch.slice(skip, count)
        skip = 0
        count -= batch.num_rows
        yield batch


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
        for batch, _ in self.read(0, len(self.files), self.FILES_PER_BATCH):
            yield batch

    def parts(self, n: int) -> list[tuple[int, int]]:
        return _row_parts(len(self.files), n)

    def rows_between(self, start: int, end: int) -> int:
        return end - start

    def read(self, start: int, end: int, batch_size: int, want: Want | None = None
             ) -> Iterator[tuple[pa.RecordBatch, int]]:
        for i in range(start, end, batch_size):
            names = self.files[i:min(i + batch_size, end)]
            data = []
            for name in names:
                with self.loc.fs.open_input_stream(name) as f:
                    data.append(f.read())
            rel = [n[len(self.base):].lstrip("/") for n in names]
            yield pa.RecordBatch.from_arrays([pa.array(rel, pa.string()), pa.array(data, pa.binary())],
                                             names=self.columns), i + len(names)


def _row_parts(total: int, n: int) -> list[tuple[int, int]]:
    """``total`` rows in at most ``n`` ranges of about the same size."""
    cuts = sorted({total * i // max(n, 1) for i in range(max(n, 1))} | {total})
    return [(a, b) for a, b in itertools.pairwise(cuts)] or [(0, 0)]


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
    if kind == "parquet":
        return _Parquet(loc)
    from mlport.batch.textread import CsvReader, JsonLinesReader

    return CsvReader(loc) if kind == "csv" else JsonLinesReader(loc)


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
