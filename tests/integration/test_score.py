"""``mlport score``: every input and output format, mapping, passthrough, bad rows, images, workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from PIL import Image

from mlport.batch import ScoreJob, score
from mlport.errors import MlportError
from tests.integration.test_eval_media import sum_model, text_model
from tests.scoreutil import (
    IRIS_FIELDS,
    expected_iris,
    iris_model,
    iris_rows,
    iris_table,
    probabilities,
    read_output,
    write_input,
)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_model(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize("src", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("dst", ["parquet", "csv", "jsonl"])
def test_every_input_and_output_format(iris: Path, tmp_path: Path, src: str, dst: str) -> None:
    table = iris_table(57)
    inp = write_input(table, tmp_path / f"in.{src}")
    out = tmp_path / f"out.{dst}"
    summary = score(ScoreJob(iris, str(inp), str(out), batch_size=10, keep=["id"]))
    assert (summary.rows_read, summary.rows_scored, summary.rows_failed) == (57, 57, 0)
    result = read_output(out)
    labels, probs = expected_iris(iris, iris_rows(57))
    assert result.column("label").to_pylist() == labels
    np.testing.assert_allclose(probabilities(result), probs, atol=1e-6)
    assert [int(v) for v in result.column("id").to_pylist()] == list(range(57))
    assert not (tmp_path / f"out.{dst}.parts").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([inp.name, out.name])


def test_parquet_output_has_list_columns_and_csv_one_column_per_element(iris: Path, tmp_path: Path) -> None:
    inp = write_input(iris_table(5), tmp_path / "in.parquet")
    score(ScoreJob(iris, str(inp), str(tmp_path / "out.parquet")))
    schema = read_output(tmp_path / "out.parquet").schema
    assert pa.types.is_fixed_size_list(schema.field("probabilities").type)
    assert schema.field("label").type == pa.string()
    score(ScoreJob(iris, str(inp), str(tmp_path / "out.csv")))
    assert read_output(tmp_path / "out.csv").column_names == ["label", "probabilities_0", "probabilities_1",
                                                              "probabilities_2"]


def test_map_columns_to_input_positions(iris: Path, tmp_path: Path) -> None:
    x = iris_rows(20)
    table = pa.table({"key": [f"k{i}" for i in range(20)], **{f"c{i}": x[:, i] for i in range(4)}})
    inp = write_input(table, tmp_path / "in.parquet")
    # the columns in another order than the input's positions
    maps = ["c3=input:3", "c0=input:0", "c2=input:2", "c1=input:1"]
    score(ScoreJob(iris, str(inp), str(tmp_path / "out.parquet"), maps=maps, keep=["key"]))
    result = read_output(tmp_path / "out.parquet")
    labels, probs = expected_iris(iris, x)
    assert result.column("label").to_pylist() == labels
    assert result.column("key").to_pylist() == [f"k{i}" for i in range(20)]
    np.testing.assert_allclose(probabilities(result), probs, atol=1e-6)


def test_a_list_column_feeds_a_whole_input(iris: Path, tmp_path: Path) -> None:
    x = iris_rows(12)
    inp = write_input(pa.table({"features": [list(r) for r in x]}), tmp_path / "in.jsonl")
    score(ScoreJob(iris, str(inp), str(tmp_path / "out.parquet"), maps=["features=input"]))
    labels, _ = expected_iris(iris, x)
    assert read_output(tmp_path / "out.parquet").column("label").to_pylist() == labels


def test_mapping_errors_name_the_value(iris: Path, tmp_path: Path) -> None:
    inp = write_input(pa.table({"a": [1.0], "b": [2.0]}), tmp_path / "in.parquet")
    out = str(tmp_path / "out.parquet")
    with pytest.raises(MlportError, match=r"input .input. has no column.*sepal_length"):
        score(ScoreJob(iris, str(inp), out))
    with pytest.raises(MlportError, match="--map names input 'nope'"):
        score(ScoreJob(iris, str(inp), out, maps=["a=nope"]))
    with pytest.raises(MlportError, match=r"the indexes must be 0\.\.1"):
        score(ScoreJob(iris, str(inp), out, maps=["a=input:0", "b=input:2"]))
    with pytest.raises(MlportError, match="--keep names column 'zz'"):
        score(ScoreJob(iris, str(inp), out, maps=["a=input"], keep=["zz"]))
    assert not Path(out).exists()


def _bad_rows_csv(path: Path) -> Path:
    table = iris_table(30)
    lines = ["id," + ",".join(IRIS_FIELDS)]
    for r in table.to_pylist():
        lines.append(",".join(str(r[c]) for c in ["id", *IRIS_FIELDS]))
    lines[5] = "4,abc,1,2,3"  # row 5: not a number
    lines[12] = "11,,1,2,3"  # row 12: empty
    lines[27] = "26,1,2,3,x7"  # row 27
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_go_to_the_error_file_and_the_rest_is_scored(iris: Path, tmp_path: Path) -> None:
    inp = _bad_rows_csv(tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    summary = score(ScoreJob(iris, str(inp), str(out), batch_size=8, keep=["id"]))
    assert (summary.rows_read, summary.rows_scored, summary.rows_failed) == (30, 27, 3)
    errors = pacsv.read_csv(tmp_path / "out.parquet.errors.csv").to_pylist()
    assert errors == [
        {"row": 5, "reason": "column 'sepal_length': 'abc' is not a number"},
        {"row": 12, "reason": "column 'sepal_length' is empty"},
        {"row": 27, "reason": "column 'petal_width': 'x7' is not a number"},
    ]
    ids = [int(v) for v in read_output(out).column("id").to_pylist()]
    assert ids == [i for i in range(30) if i not in (4, 11, 26)]
    with pytest.raises(MlportError, match=r"row 5: column 'sepal_length': 'abc' is not a number \(stopped by"):
        score(ScoreJob(iris, str(inp), str(tmp_path / "ff.parquet"), batch_size=8, fail_fast=True))
    assert not (tmp_path / "ff.parquet").exists()


def test_bad_json_lines_are_reported(iris: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4}\n'
                   '{"sepal_length": 1, oops\n'
                   '{"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 0.2}\n')
    summary = score(ScoreJob(iris, str(inp), str(tmp_path / "out.jsonl"), errors=str(tmp_path / "bad.csv")))
    assert (summary.rows_scored, summary.rows_failed) == (2, 1)
    errors = pacsv.read_csv(tmp_path / "bad.csv").to_pylist()
    assert errors[0]["row"] == 2 and "not JSON" in errors[0]["reason"]


def test_csv_lines_with_the_wrong_number_of_fields_are_bad_rows(iris: Path, tmp_path: Path) -> None:
    rows = iris_rows(40)
    lines = ["id," + ",".join(IRIS_FIELDS)] + [f"{i}," + ",".join(str(v) for v in r) for i, r in enumerate(rows)]
    lines[3] = "2,5.1,3.5"  # row 3: too few fields
    lines[21] = lines[21] + ",9,9"  # row 21: too many
    lines.append("99")  # row 41, the last line
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.parquet"
    summary = score(ScoreJob(iris, str(tmp_path / "in.csv"), str(out), batch_size=8, keep=["id"]))
    assert (summary.rows_read, summary.rows_scored, summary.rows_failed) == (41, 38, 3)
    errors = pacsv.read_csv(tmp_path / "out.parquet.errors.csv").to_pylist()
    assert errors == [
        {"row": 3, "reason": "the line has 3 fields, the header has 5"},
        {"row": 21, "reason": "the line has 7 fields, the header has 5"},
        {"row": 41, "reason": "the line has 1 fields, the header has 5"},
    ]
    ids = [int(v) for v in read_output(out).column("id").to_pylist()]
    assert ids == [i for i in range(40) if i not in (2, 20)]
    labels, _ = expected_iris(iris, np.delete(rows, [2, 20], axis=0))
    assert read_output(out).column("label").to_pylist() == labels


def test_strings_and_fields(tmp_path: Path) -> None:
    model = text_model(tmp_path / "text" / "1" / "model.onnx").parent.parent
    (model / "model.yaml").write_text("fields:\n  x: {first: 0, second: 1}\n")
    inp = write_input(pa.table({"label": ["a", "b", None, "d"], "first": [1.0, 2.0, 3.0, 4.0],
                                "second": [0.5, 1.5, 2.5, 3.5]}), tmp_path / "in.parquet")
    summary = score(ScoreJob(model, str(inp), str(tmp_path / "out.parquet")))
    assert summary.rows_failed == 1
    result = read_output(tmp_path / "out.parquet").to_pylist()
    assert result == [{"echo": "a", "y": [2.0, 1.0]}, {"echo": "b", "y": [4.0, 3.0]}, {"echo": "d", "y": [8.0, 7.0]}]


def _images(folder: Path) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    pixels = []
    for i in range(7):
        arr = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
        pixels.append(arr)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "small.png")  # the wrong size
    (folder / "notes.txt").write_text("not an image")
    return pixels


def test_image_folder_and_glob(tmp_path: Path) -> None:
    model = sum_model(tmp_path / "total" / "1" / "model.onnx", ["N", 8, 8, 3]).parent.parent
    pixels = _images(tmp_path / "images")
    summary = score(ScoreJob(model, str(tmp_path / "images"), str(tmp_path / "out.parquet"), batch_size=3,
                             keep=["path"]))
    assert (summary.rows_read, summary.rows_scored, summary.rows_failed) == (9, 7, 2)
    result = read_output(tmp_path / "out.parquet")
    assert result.column("path").to_pylist() == [f"img{i}.png" for i in range(7)]
    np.testing.assert_allclose(result.column("total").to_numpy(), [p.astype(np.float32).sum() for p in pixels])
    errors = pacsv.read_csv(tmp_path / "out.parquet.errors.csv").to_pylist()
    assert [e["row"] for e in errors] == [1, 9]  # broken.png, small.png (sorted by name)
    assert "8x8" in errors[1]["reason"]
    score(ScoreJob(model, str(tmp_path / "images" / "img[0-2].png"), str(tmp_path / "glob.csv"), keep=["path"]))
    assert read_output(tmp_path / "glob.csv").column("path").to_pylist() == ["img0.png", "img1.png", "img2.png"]


def test_cli_with_workers_writes_the_same_rows(iris: Path, tmp_path: Path) -> None:
    inp = write_input(iris_table(1000), tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    proc = subprocess.run([sys.executable, "-m", "mlport.cli.main", "score", str(iris), str(inp), "-o", str(out),
                           "--workers", "2", "--batch-size", "64", "--keep", "id", "--progress", "lines",
                           "--progress-interval", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "read 1000 rows, scored 1000, failed 0" in proc.stderr
    assert "scored 1000 rows (0 failed)" in proc.stderr
    result = read_output(out)
    labels, probs = expected_iris(iris, iris_rows(1000))
    assert [int(v) for v in result.column("id").to_pylist()] == list(range(1000))
    assert result.column("label").to_pylist() == labels
    np.testing.assert_allclose(probabilities(result), probs, atol=1e-6)


def test_cli_refuses_bad_arguments_cleanly(iris: Path, tmp_path: Path) -> None:
    inp = write_input(iris_table(3), tmp_path / "in.csv")
    for args, message in [
        (["--batch-size", "0"], "--batch-size must be 1 to"),
        (["--map", "nonsense"], "expected COLUMN=INPUT"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "mlport.cli.main", "score", str(iris), str(inp), "-o",
                               str(tmp_path / "o.csv"), *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "mlport.cli.main", "score", str(tmp_path / "none.onnx"), str(inp),
                           "-o", str(tmp_path / "o.csv")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def _with_bad_rows(n: int) -> pa.Table:
    """Iris rows with empty values spread over the whole input (in every worker's part)."""
    table = iris_table(n, seed=3)
    width = table.column("sepal_width").to_pylist()
    for i in range(7, n, n // 9):
        width[i] = None
    return table.set_column(2, "sepal_width", pa.array(width, pa.float64()))


@pytest.mark.parametrize("src", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("dst", ["parquet", "csv", "jsonl"])
def test_several_workers_write_what_one_writes_row_for_row(iris: Path, tmp_path: Path, src: str, dst: str) -> None:
    inp = write_input(_with_bad_rows(3001), tmp_path / f"in.{src}")
    if src == "csv":  # also a line with the wrong number of fields, and a value that is not a number, late
        lines = inp.read_text().splitlines()
        lines[2500] = "2499,1,2"
        lines[2900] = lines[2900].replace(",", ",x", 1)
        inp.write_text("\n".join(lines) + "\n")
    results = []
    for workers in (1, 2, 3):
        out = tmp_path / f"out{workers}.{dst}"
        summary = score(ScoreJob(iris, str(inp), str(out), batch_size=100, keep=["id"], workers=workers))
        errors = pacsv.read_csv(tmp_path / f"out{workers}.{dst}.errors.csv")
        results.append((summary.rows_read, summary.rows_failed, read_output(out), errors))
    one = results[0]
    assert one[0] == 3001 and one[1] == (11 if src == "csv" else 9)
    expected = sorted([i + 1 for i in range(7, 3001, 3001 // 9)] + ([2500, 2900] if src == "csv" else []))
    assert one[3].column("row").to_pylist() == expected
    for other in results[1:]:  # labels and ids exactly; floats to 1e-6 (the batches differ, so may the rounding)
        assert other[:2] == one[:2]
        assert other[3].equals(one[3])
        assert other[2].column_names == one[2].column_names and other[2].num_rows == one[2].num_rows
        np.testing.assert_allclose(probabilities(other[2]), probabilities(one[2]), atol=1e-6)
        for name in ("id", "label"):
            assert other[2].column(name).equals(one[2].column(name)), name
