"""Column mapping, chunking and per-row checks, without a server."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mlport.batch.columns import ColumnPlan, parse_maps
from mlport.batch.model import load_model
from mlport.batch.progress import make_progress
from mlport.batch.readers import Reader
from mlport.errors import InvalidInput
from tests.builders import scale_onnx


def test_parse_maps() -> None:
    assert parse_maps(["a=x:1", "b=x:0", "t=text"]) == {"x": [("a", 1), ("b", 0)], "text": [("t", None)]}
    for bad in ["a", "=x", "a=", "a=x:one"]:
        with pytest.raises(InvalidInput, match="--map"):
            parse_maps([bad])


class _Batches(Reader):
    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.columns = ["v"]

    def batches(self):  # type: ignore[no-untyped-def]
        start = 0
        for n in self.sizes:
            yield pa.RecordBatch.from_arrays([pa.array(range(start, start + n), pa.int64())], names=["v"])
            start += n


@pytest.mark.parametrize("sizes", [[7, 3, 10, 1], [25], [1] * 23, [0, 5, 0, 18]])
def test_chunks_have_the_exact_size_whatever_the_reader_gives(sizes: list[int]) -> None:
    chunks = list(_Batches(sizes).chunks(5))
    total = sum(sizes)
    assert [c.num_rows for c in chunks] == [5] * (total // 5) + ([total % 5] if total % 5 else [])
    assert [v for c in chunks for v in c.column(0).to_pylist()] == list(range(total))


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scale_onnx(tmp_path_factory.mktemp("m") / "scale.onnx", 2.0)  # x [-1, 3] FP32


def test_plan_parses_text_and_reports_each_bad_row(scale: Path) -> None:
    model = load_model(scale)
    plan = ColumnPlan(model, ["a", "b", "c"], parse_maps(["a=x:0", "b=x:1", "c=x:2"]))
    batch = pa.RecordBatch.from_pydict({"a": ["1", "2", "x", "4", " 5 "], "b": ["1", None, "3", "4", "5"],
                                        "c": ["1", "2", "3", "nan", "1e400"]})
    prepared = plan.prepare(batch)
    assert prepared.bad == {1: "column 'b' is empty", 2: "column 'a': 'x' is not a number"}
    assert prepared.good.tolist() == [0, 3, 4]
    x = prepared.feed["x"]
    assert x.dtype == np.float32 and x.shape == (3, 3)
    assert x[0].tolist() == [1.0, 1.0, 1.0] and np.isnan(x[1, 2]) and x[2, 0] == 5.0 and np.isinf(x[2, 2])
    model.close()


def test_plan_checks_list_lengths(scale: Path) -> None:
    model = load_model(scale)
    plan = ColumnPlan(model, ["v"], parse_maps(["v=x"]))
    batch = pa.RecordBatch.from_pydict({"v": [[1.0, 2.0, 3.0], [1.0], None, [4.0, 5.0, 6.0]]})
    prepared = plan.prepare(batch)
    assert prepared.bad == {1: "column 'v' has 1 values; input 'x' expects 3", 2: "column 'v' is empty"}
    assert prepared.feed["x"].tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    model.close()


def test_progress_lines() -> None:
    out = io.StringIO()
    progress = make_progress("lines", out, interval=0)
    progress.start(100)
    progress.advance(40, 2)
    progress.close()
    assert out.getvalue().startswith("scored 40/100 rows (2 failed), ") and "ETA" in out.getvalue()
