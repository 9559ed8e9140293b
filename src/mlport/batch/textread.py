"""CSV and JSON Lines inputs, read by byte ranges that start on line starts.

A part of a text input is a byte range ``[start, end)`` whose ends are line starts, so each worker reads
its own part without reading the others. Inside a part, chunks of exactly ``batch_size`` non-empty lines
are cut with one vectorised newline search per block read; each chunk comes with the byte position after
it (where a resumed run starts again). A CSV chunk is parsed by pyarrow with its numeric columns typed
(the fast path); a chunk that fails there is parsed again as text, with the rows that have the wrong number
of fields kept as bad rows, so each bad row is found with its row number. Compressed files are one part
(their positions are those of the decompressed bytes).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from mlport.batch.readers import BAD_LINE_COLUMN, Reader, Want
from mlport.batch.storage import Location
from mlport.errors import InvalidInput

__all__ = ["CsvReader", "JsonLinesReader", "line_chunks"]

#: Bytes read at a time.
READ_BYTES = 4 * 1024 * 1024
#: The longest line (or chunk of lines) held at once.
MAX_PENDING_BYTES = 256 * 1024 * 1024
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")


def _line_ends(buf: bytes) -> tuple[Any, Any]:
    """The position after each newline of ``buf``, and whether each of those lines has content."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10) + 1
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1]
    length = ends - starts
    content = (length > 1) & ~((length == 2) & (arr[np.minimum(starts, len(arr) - 1)] == 13))
    return ends, content


def line_chunks(stream: Any, start: int, end: int | None, lines: int) -> Iterator[tuple[bytes, int]]:
    """Chunks of ``lines`` non-empty lines read from ``stream`` (at byte ``start``) up to byte ``end`` (None:
    the end of the stream), each with the position after it; the last chunk may be shorter."""
    buf, pos, eof = b"", start, False
    while not eof:
        want = READ_BYTES if end is None else min(READ_BYTES, end - pos - len(buf))
        data = stream.read(want) if want > 0 else b""
        eof = not data
        buf += data
        ends, content = _line_ends(buf)
        counted = np.cumsum(content)
        if len(counted) and counted[-1] >= lines:
            cuts = ends[np.searchsorted(counted, np.arange(lines, counted[-1] + 1, lines))]
            prev = 0
            for cut in cuts.tolist():
                yield buf[prev:cut], pos + cut
                prev = cut
            buf, pos = buf[prev:], pos + prev
        if len(buf) > MAX_PENDING_BYTES:
            raise InvalidInput(f"a line (or {lines} lines) longer than {MAX_PENDING_BYTES} bytes: use a smaller "
                               "--batch-size, or check that the file is line-based")
    if buf.strip():
        yield buf, pos + len(buf)


class _TextReader(Reader):
    """A line-based input: ``data_start`` is where the first data line starts."""

    loc: Location
    data_start = 0

    @property
    def compressed(self) -> bool:
        return self.loc.path.lower().endswith(_COMPRESSED)

    def _size(self) -> int:
        return int(self.loc.fs.get_file_info(self.loc.path).size)

    def parts(self, n: int) -> list[tuple[int, int]]:
        if self.compressed:
            return [(self.data_start, -1)]
        size = self._size()
        if n <= 1 or size <= self.data_start:
            return [(self.data_start, size)]
        with self.loc.fs.open_input_file(self.loc.path) as f:
            cuts = [self.data_start]
            for i in range(1, n):
                cuts.append(max(cuts[-1], _next_line_start(f, self.data_start + (size - self.data_start) * i // n)))
        cuts.append(size)
        return [(a, b) for a, b in itertools.pairwise(cuts) if b > a] or [(self.data_start, size)]

    def chunks(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        for start, end in self.parts(1):
            for batch, _ in self.read(start, end, batch_size):
                yield batch

    def _lines(self, start: int, end: int, lines: int) -> Iterator[tuple[bytes, int]]:
        if self.compressed:
            with self.loc.fs.open_input_stream(self.loc.path) as f:
                _skip(f, start)
                yield from line_chunks(f, start, None, lines)
            return
        with self.loc.fs.open_input_file(self.loc.path) as f:
            f.seek(start)
            yield from line_chunks(f, start, end, lines)

    def rows_between(self, start: int, end: int) -> int:
        count = 0
        for chunk, _ in self._lines(start, end, 65_536):
            count += int(np.count_nonzero(_line_ends(chunk if chunk.endswith(b"\n") else chunk + b"\n")[1]))
        return count


def _next_line_start(f: Any, offset: int) -> int:
    """The first line start at or after ``offset``."""
    f.seek(offset - 1)
    pos = offset - 1
    while block := f.read(64 * 1024):
        i = block.find(b"\n")
        if i >= 0:
            return int(pos + i + 1)
        pos += len(block)
    return pos


def _skip(f: Any, count: int) -> None:
    while count > 0:
        data = f.read(min(count, READ_BYTES))
        if not data:
            return
        count -= len(data)


class CsvReader(_TextReader):
    def __init__(self, loc: Location) -> None:
        self.loc = loc
        with loc.fs.open_input_stream(loc.path) as f:
            head = f.read(1024 * 1024)
        line = head.split(b"\n", 1)[0]
        first = pacsv.read_csv(io.BytesIO(line + b"\n"),
                               read_options=pacsv.ReadOptions(autogenerate_column_names=False))
        self.columns = first.column_names
        if not self.columns:
            raise InvalidInput(f"{loc.uri}: no header row")
        self.data_start = len(line) + 1

    def read(self, start: int, end: int, batch_size: int, want: Want | None = None
             ) -> Iterator[tuple[pa.RecordBatch, int]]:
        want = want or Want()
        names = [c for c in self.columns if want.columns is None or c in want.columns]
        types = {c: pa.float64() if c in want.numeric else pa.string() for c in names}
        for chunk, after in self._lines(start, end, batch_size):
            yield self._parse(chunk, names, types), after

    def _parse(self, chunk: bytes, names: list[str], types: dict[str, pa.DataType]) -> pa.RecordBatch:
        read = pacsv.ReadOptions(column_names=self.columns, use_threads=False)
        convert = pacsv.ConvertOptions(column_types=types, include_columns=names, strings_can_be_null=True,
                                       null_values=[""], quoted_strings_can_be_null=False)
        try:  # the fast path: numbers parsed while reading
            table = pacsv.read_csv(io.BytesIO(chunk), read_options=read, convert_options=convert)
            return _one(table).append_column(BAD_LINE_COLUMN, pa.nulls(table.num_rows, pa.string()))
        except pa.ArrowInvalid:
            pass
        bad = _BadCsvRows(names)
        convert.column_types = {c: pa.string() for c in names}
        try:
            table = pacsv.read_csv(io.BytesIO(chunk), read_options=read, convert_options=convert,
                                   parse_options=pacsv.ParseOptions(invalid_row_handler=bad.handle))
        except pa.ArrowInvalid as exc:
            raise InvalidInput(f"{self.loc.uri} is not readable CSV: {exc}") from None
        return bad.merge(_one(table))


def _one(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


class _BadCsvRows:
    """Rows with the wrong number of fields, put back at their place as rows with a reason.

    pyarrow's CSV reader can only skip such a row; it reports its line number in the chunk (from 1), so the
    row comes back into the chunk as a row of nulls whose ``BAD_LINE_COLUMN`` says why.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.found: list[tuple[int, str]] = []  # (0-based row of the chunk, reason), in order

    def handle(self, row: Any) -> str:
        if row.number is None:
            return "error"
        self.found.append((row.number - 1, f"the line has {row.actual_columns} fields, the header has "
                                           f"{row.expected_columns}"))
        return "skip"

    def merge(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        total = batch.num_rows + len(self.found)
        if not self.found:
            return batch.append_column(BAD_LINE_COLUMN, pa.nulls(total, pa.string()))
        at = np.fromiter((pos for pos, _ in self.found), dtype=np.int64, count=len(self.found))
        is_good = np.ones(total, dtype=bool)
        is_good[at] = False
        rows = np.zeros(total, dtype=np.int64)
        rows[is_good] = np.arange(batch.num_rows)
        rows[at] = np.arange(len(self.found))
        merged = batch.take(pa.array(rows, mask=~is_good))
        reasons = pa.array([reason for _, reason in self.found], pa.string()).take(pa.array(rows, mask=is_good))
        return merged.append_column(BAD_LINE_COLUMN, reasons)


class JsonLinesReader(_TextReader):
    def __init__(self, loc: Location) -> None:
        self.loc = loc
        with loc.fs.open_input_stream(loc.path) as f:
            head = f.read(1024 * 1024)
        first = next((line for line in head.split(b"\n") if line.strip()), b"{}")
        try:
            row = orjson.loads(first)
        except orjson.JSONDecodeError:
            row = {}
        self.columns = list(row) if isinstance(row, dict) else []

    def read(self, start: int, end: int, batch_size: int, want: Want | None = None
             ) -> Iterator[tuple[pa.RecordBatch, int]]:
        for chunk, after in self._lines(start, end, batch_size):
            yield _json_chunk([line for line in chunk.split(b"\n") if line.strip()]), after


def _json_chunk(lines: list[bytes]) -> pa.RecordBatch:
    try:
        table = pajson.read_json(io.BytesIO(b"\n".join(lines)))
        return _one(table).append_column(BAD_LINE_COLUMN, pa.nulls(table.num_rows, pa.string()))
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
