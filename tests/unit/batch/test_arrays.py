"""Arrow <-> numpy conversions of the batch path: the same values as pyarrow's own, without importing pandas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlport.batch.arrays import from_numpy, to_numpy


@pytest.mark.parametrize("column", [
    pa.array(np.arange(10, dtype=np.int32)).slice(3, 5),
    pa.array(np.linspace(0, 1, 7)).slice(2),
    pa.array(np.arange(4, dtype=np.float32)),
    pa.array(["a", "bé", "", "c"]).slice(1),
    pa.array(["a", None, "c"]),
    pa.array([1.5, None]),
    pa.array([True, False]),
    pa.chunked_array([[1.0, 2.0], [3.0]]),
])
def test_to_numpy_gives_pyarrows_values(column: pa.Array | pa.ChunkedArray) -> None:
    got, want = to_numpy(column), column.to_numpy(zero_copy_only=False)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("values", [
    np.arange(5, dtype=np.int64),
    np.arange(6, dtype=np.float32)[::2],
    np.array(["setosa", "", "virginica"], dtype=object),
    np.array(["é", "a"], dtype=object),
    np.array([b"x", b"y"], dtype=object),
    np.array(["a", None], dtype=object),
    np.array([True, False]),
    np.zeros(0, dtype=object),
])
def test_from_numpy_gives_pyarrows_array(values: np.ndarray) -> None:  # type: ignore[type-arg]
    got, want = from_numpy(values), pa.array(values)
    assert got.type == want.type
    assert got.equals(want)
    got.validate(full=True)


def test_numbers_and_text_do_not_import_pandas(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1.0, 2.0], "s": ["a", "b"]}), tmp_path / "t.parquet")
    code = ("import sys, numpy as np, pyarrow.parquet as pq\n"
            "from mlport.batch.arrays import from_numpy, to_numpy\n"
            f"batch = next(pq.ParquetFile({str(tmp_path / 't.parquet')!r}).iter_batches())\n"
            "to_numpy(batch.column(0)); to_numpy(batch.column(1))\n"
            "from_numpy(np.arange(3.0)); from_numpy(np.array(['a'], dtype=object))\n"
            "assert 'pandas' not in sys.modules, 'pandas was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
