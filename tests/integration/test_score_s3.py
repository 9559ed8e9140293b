"""``mlport score`` with its input and output in an object store (a real S3-protocol server)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from mlport.batch import ScoreJob, score
from mlport.errors import MlportError
from tests.s3server import S3Server, make_bucket, s3_client, s3_server
from tests.scoreutil import expected_iris, iris_model, iris_rows, iris_table, probabilities

__all__ = ["s3_server"]


@pytest.fixture
def s3env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    return s3_server


def test_s3_input_and_output(s3env: S3Server, tmp_path: Path) -> None:
    model = iris_model(tmp_path / "models")
    bucket = make_bucket(s3env)
    client = s3_client(s3env)
    buf = io.BytesIO()
    pq.write_table(iris_table(250), buf)
    client.put_object(Bucket=bucket, Key="data/in.parquet", Body=buf.getvalue())
    summary = score(ScoreJob(model, f"s3://{bucket}/data/in.parquet", f"s3://{bucket}/scored/out.csv", batch_size=40,
                             keep=["id"], endpoint_url=s3env.endpoint_url, work_dir=tmp_path / "work"))
    assert (summary.rows_read, summary.rows_scored) == (250, 250)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["data/in.parquet", "scored/out.csv"]  # the temporary name is gone
    body = client.get_object(Bucket=bucket, Key="scored/out.csv")["Body"].read()
    result = pacsv.read_csv(io.BytesIO(body))
    labels, probs = expected_iris(model, iris_rows(250))
    assert result.column("id").to_pylist() == list(range(250))
    assert result.column("label").to_pylist() == labels
    np.testing.assert_allclose(probabilities(result), probs, atol=1e-6)
    assert not (tmp_path / "work").exists()


def test_s3_image_prefix_and_missing_key(s3env: S3Server, tmp_path: Path) -> None:
    from PIL import Image

    from tests.integration.test_eval_media import sum_model

    model = sum_model(tmp_path / "total" / "1" / "model.onnx", ["N", 4, 4, 3]).parent.parent
    bucket = make_bucket(s3env)
    client = s3_client(s3env)
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(buf, format="PNG")
        client.put_object(Bucket=bucket, Key=f"imgs/{i}.png", Body=buf.getvalue())
    score(ScoreJob(model, f"s3://{bucket}/imgs/*.png", str(tmp_path / "out.jsonl"), keep=["path"],
                   endpoint_url=s3env.endpoint_url))
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert lines == ['{"path":"0.png","total":0.0}', '{"path":"1.png","total":48.0}', '{"path":"2.png","total":96.0}']
    with pytest.raises(MlportError, match="does not exist"):
        score(ScoreJob(model, f"s3://{bucket}/nothing.csv", str(tmp_path / "o.csv"), endpoint_url=s3env.endpoint_url))

