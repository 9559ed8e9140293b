"""``mlport profile``: a data file mapped to a real model's inputs, the model's outputs profiled too."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mlport.batch.profile import ProfileJob, profile_data
from mlport.cli.main import main
from mlport.errors import InvalidInput
from tests.scoreutil import IRIS_FIELDS, expected_iris, iris_model, iris_rows, iris_table, write_input


def test_inputs_outputs_and_missing_values_of_an_iris_file(tmp_path: Path) -> None:
    model = iris_model(tmp_path)
    table = iris_table(400, seed=3)
    width = table.column("petal_width").to_pylist()
    width[:10] = [None] * 10
    table = table.set_column(table.column_names.index("petal_width"), "petal_width", pa.array(width, pa.float64()))
    data = write_input(table, tmp_path / "train.parquet")
    profile = profile_data(ProfileJob(model=model, data=str(data), batch_size=64))
    by_name = {f.name: f for f in profile.features}
    assert [f.name for f in profile.features] == [*IRIS_FIELDS, "label", "probabilities[0]", "probabilities[1]",
                                                  "probabilities[2]"]
    assert profile.rows == 400 and profile.model == "iris" and profile.version == 1
    assert by_name["petal_width"].missing_rate == pytest.approx(10 / 400)
    assert by_name["sepal_length"].missing_rate == 0.0
    x = iris_rows(400, seed=3)[10:]
    assert by_name["sepal_length"].mean == pytest.approx(float(x[:, 0].astype(np.float32).mean()), rel=1e-6)
    labels, probs = expected_iris(model, x)
    label = by_name["label"]
    assert label.kind == "categorical" and label.role == "output"
    assert label.frequencies == pytest.approx({k: v / len(labels) for k, v in Counter(labels).items()})
    assert by_name["probabilities[2]"].mean == pytest.approx(float(probs[:, 2].mean()), rel=1e-5)
    assert profile.outliers is not None and profile.outliers.features == IRIS_FIELDS


def test_mapped_columns_name_their_features(tmp_path: Path) -> None:
    model = iris_model(tmp_path)
    table = iris_table(50).rename_columns(["id", "a", "b", "c", "d"])
    data = write_input(table, tmp_path / "train.csv")
    maps = ["a=input:0", "b=input:1", "c=input:2", "d=input:3"]
    profile = profile_data(ProfileJob(model=model, data=str(data), maps=maps, max_rows=20))
    assert [f.name for f in profile.features[:4]] == ["a", "b", "c", "d"] and profile.rows == 20


def test_a_file_that_cannot_feed_the_model_is_refused_by_name(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    model = iris_model(tmp_path)
    data = write_input(iris_table(5).drop_columns(["petal_width"]), tmp_path / "train.csv")
    with pytest.raises(InvalidInput, match="input 'input' has no column"):
        profile_data(ProfileJob(model=model, data=str(data)))
    assert main(["profile", str(data), "--model", str(model), "-o", str(tmp_path / "p.json")]) == 2
    assert "input 'input' has no column" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()
    with pytest.raises(InvalidInput, match="--max-rows"):
        profile_data(ProfileJob(model=model, data=str(data), max_rows=0))
