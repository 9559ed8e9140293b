"""Text inputs cut into parts on line starts and into chunks of whole lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mlport.batch.readers import open_reader
from mlport.batch.storage import locate
from mlport.batch.textread import CsvReader, line_chunks


@pytest.mark.parametrize("lines", [1, 3, 7, 1000])
def test_line_chunks_cut_whole_lines_and_skip_empty_ones_in_the_count(lines: int) -> None:
    data = b"a\n\nbb\r\n\r\nccc\nd\ne\nf\ng\nlast"
    chunks = list(line_chunks(io.BytesIO(data), 0, None, lines))
    assert b"".join(c for c, _ in chunks) == data
    assert [after for _, after in chunks][-1] == len(data)
    counts = [sum(1 for line in c.split(b"\n") if line.strip()) for c, _ in chunks]
    assert all(n == lines for n in counts[:-1]) and 1 <= counts[-1] <= lines


@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_csv_parts_start_on_lines_and_cover_every_row_once(tmp_path: Path, parts: int) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,x\n" + "".join(f"{i},{i * 10}\n" for i in range(101)))
    reader = open_reader(locate(str(path)))
    assert isinstance(reader, CsvReader)
    plan = reader.parts(parts)
    assert len(plan) == parts and plan[0][0] == len(b"id,x\n") and plan[-1][1] == path.stat().st_size
    ids: list[str] = []
    for start, end in plan:
        assert reader.rows_between(plan[0][0], start) == len(ids)
        for batch, _ in reader.read(start, end, 7):
            ids += batch.column("id").to_pylist()
    assert ids == [str(i) for i in range(101)]
