"""``mlport serve s3://bucket/prefix`` against a real S3-protocol server: the models are copied, verified against
the sha256 the hub records, and served."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.builders import ort_run, scale_onnx
from tests.conftest import Server, start_server
from tests.s3server import S3Server, make_bucket, s3_client, s3_server  # noqa: F401 - the session fixture

X = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)


def s3_env(s3: S3Server) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": s3.region}


def upload(s3: S3Server, bucket: str, files: dict[str, Path]) -> None:
    client = s3_client(s3)
    for key, path in files.items():
        client.upload_file(str(path), bucket, key)


def infer(server: Server, model: str) -> np.ndarray:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": X.ravel().tolist()}]}
    with server.client() as c:
        answer = c.post(f"/v2/models/{model}/infer", json=body)
    assert answer.status_code == 200, answer.text
    return np.array(answer.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, 3)


def test_serve_a_repository_and_a_single_object_from_s3(s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    bucket = make_bucket(s3_server)
    two = scale_onnx(tmp_path / "two.onnx", 2.0)
    three = scale_onnx(tmp_path / "three.onnx", 3.0)
    upload(s3_server, bucket, {"repo/double/1/model.onnx": two, "repo/triple.onnx": three,
                               "files/triple.onnx": three})
    env = s3_env(s3_server)
    logs = tmp_path / "logs"
    logs.mkdir()
    server = start_server(f"s3://{bucket}/repo", "--s3-endpoint-url", s3_server.endpoint_url,  # type: ignore[arg-type]
                          log_dir=logs, env=env)
    try:
        np.testing.assert_allclose(infer(server, "double"), ort_run(two, {"x": X})["y"])
        np.testing.assert_allclose(infer(server, "triple"), X * 3.0)
    finally:
        server.stop()
    sha = hashlib.sha256(three.read_bytes()).hexdigest()
    server = start_server(f"s3://{bucket}/files/triple.onnx", "--expect-sha256", sha,  # type: ignore[arg-type]
                          log_dir=logs, env={**env, "AWS_ENDPOINT_URL": s3_server.endpoint_url})
    try:
        np.testing.assert_allclose(infer(server, "triple"), X * 3.0)
    finally:
        server.stop()


@pytest.mark.parametrize(("uri_suffix", "extra", "message"), [
    ("files/triple.onnx", ["--expect-sha256", "0" * 64], "expected 0000"),
    ("nothing-here", [], "holds no objects"),
])
def test_a_wrong_sha256_or_an_empty_prefix_serves_nothing(s3_server: S3Server, tmp_path: Path,  # noqa: F811
                                                          uri_suffix: str, extra: list[str], message: str) -> None:
    bucket = make_bucket(s3_server)
    upload(s3_server, bucket, {"files/triple.onnx": scale_onnx(tmp_path / "three.onnx", 3.0)})
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "serve", f"s3://{bucket}/{uri_suffix}",
                           "--s3-endpoint-url", s3_server.endpoint_url, "--http-port", "0", "--grpc-port", "0", *extra],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **s3_env(s3_server)})
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
