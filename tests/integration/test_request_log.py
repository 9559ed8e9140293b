"""Request logging against real servers: file sinks (JSON Lines, Parquet, S3), a CloudEvents receiver, a dead
sink under load, per-model settings in model.yaml, and ``mlport logs``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlport.core.logconfig import SinkConfig
from mlport.observability.requestlog import LogReader, as_arrays
from tests.builders import iris_onnx
from tests.builders_strings import string_concat_onnx
from tests.conftest import Server, free_port, start_server
from tests.s3server import S3Server, make_bucket, s3_server  # noqa: F401 - the session fixture
from tests.waiting import wait_for

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.4, 1.4], [0.1, 1e-7, 3.4028235e38, -0.0]], dtype=np.float32)
TEXTS = ["h\u00e9llo", "", "\U0001f600 ok"]


def _iris_body(rid: str) -> dict[str, Any]:
    return {"id": rid, "inputs": [{"name": "input", "datatype": "FP32", "shape": list(ROWS.shape),
                                   "data": ROWS.ravel().tolist()}]}


def _strings_body(rid: str) -> dict[str, Any]:
    return {"id": rid, "inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS},
                                  {"name": "n", "datatype": "INT64", "shape": [3], "data": [1, -2, 2**40]}]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    iris_onnx(root / "iris" / "1" / "model.onnx")
    (root / "strings" / "1").mkdir(parents=True)
    string_concat_onnx(root / "strings" / "1" / "model.onnx")
    return root


def _input_name(server: Server) -> str:
    meta = httpx.get(server.url + "/v2/models/iris").json()
    return str(meta["inputs"][0]["name"])


def _send_both(server: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    with server.client() as c:
        body = _iris_body("iris-1")
        body["inputs"][0]["name"] = _input_name(server)
        iris = c.post("/v2/models/iris/infer", json=body)
        strings = c.post("/v2/models/strings/infer", json=_strings_body("strings-1"))
    assert iris.status_code == 200 and strings.status_code == 200, (iris.text, strings.text)
    return iris.json(), strings.json()


def _check_exact(records: list[dict[str, Any]], iris: dict[str, Any], strings: dict[str, Any]) -> None:
    by_id = {r["id"]: r for r in records}
    assert set(by_id) == {"iris-1", "strings-1"}
    r = by_id["iris-1"]
    assert (r["model"], r["version"], r["protocol"], r["status"]) == ("iris", "1", "v2", "ok")
    assert r["latency_ms"] > 0
    sent = next(iter(as_arrays(r["inputs"]).values()))
    assert sent.dtype == np.float32 and sent.tobytes() == ROWS.tobytes()
    outs = as_arrays(r["outputs"])
    for out in iris["outputs"]:
        answered = np.array([np.nan if v is None else v for v in out["data"]], dtype=float)  # JSON's null is NaN
        np.testing.assert_allclose(outs[out["name"]].ravel().astype(float), answered, rtol=1e-6, equal_nan=True)
        assert list(outs[out["name"]].shape) == out["shape"]
    s = as_arrays(by_id["strings-1"]["inputs"])
    assert s["text"].dtype == object and s["text"].tolist() == [t.encode() for t in TEXTS]
    assert s["n"].dtype == np.int64 and s["n"].tolist() == [1, -2, 2**40]
    echo = as_arrays(by_id["strings-1"]["outputs"])["echo"]
    assert echo.tolist() == [(t + "!").encode() for t in TEXTS]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_file_sink_round_trips_tensors_exactly(serve: Callable[..., Server], repo: Path, tmp_path: Path,
                                               fmt: str) -> None:
    logs = tmp_path / "request-logs"
    server = serve(repo, "--grpc-port", "0", "--request-log", str(logs), "--request-log-format", fmt)
    iris, strings = _send_both(server)
    if fmt == "jsonl":  # a growing JSON Lines file is readable while the server runs
        wait_for(lambda: len(LogReader(SinkConfig(url=str(logs))).records()) == 2, timeout=30)
        _check_exact(LogReader(SinkConfig(url=str(logs))).records(), iris, strings)
    assert server.stop() == 0  # Parquet files are written whole when closed: at rotation or shutdown
    records = LogReader(SinkConfig(url=str(logs))).records()
    assert all(p.name.endswith("." + fmt) for p in logs.iterdir())
    _check_exact(records, iris, strings)


def test_object_store_sink(s3_server: S3Server, repo: Path, tmp_path: Path) -> None:  # noqa: F811
    bucket = make_bucket(s3_server)
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
           "AWS_DEFAULT_REGION": s3_server.region, "AWS_ENDPOINT_URL": s3_server.endpoint_url}
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    server = start_server(repo, "--grpc-port", "0", "--request-log", f"s3://{bucket}/requests/prod",
                          "--request-log-format", "parquet", log_dir=log_dir, env=env)
    try:
        iris, strings = _send_both(server)
    finally:
        assert server.stop() == 0
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        records = LogReader(SinkConfig(url=f"s3://{bucket}/requests/prod")).records()
    _check_exact(records, iris, strings)


class _Receiver:
    """A real HTTP server that keeps the CloudEvents posted to it."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.events.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    try:
        yield r
    finally:
        r.close()


def test_cloudevents_sink_in_kserve_logger_format(serve: Callable[..., Server], repo: Path,
                                                  receiver: _Receiver) -> None:
    server = serve(repo, "--grpc-port", "0", "--request-log", receiver.url)
    iris, strings = _send_both(server)
    wait_for(lambda: len(receiver.events) == 4, timeout=30)
    by = {(h["ce-id"], h["ce-type"]): (h, b) for h, b in receiver.events}
    head, req = by[("iris-1", "org.kubeflow.serving.inference.request")]
    assert head["ce-specversion"] == "1.0" and head["content-type"] == "application/json"
    assert head["ce-inferenceservicename"] == "iris" and head["ce-modelversion"] == "1"
    assert head["ce-source"] and head["ce-time"]
    assert np.array(req["inputs"][0]["data"], dtype=np.float32).tobytes() == ROWS.tobytes()
    _, resp = by[("iris-1", "org.kubeflow.serving.inference.response")]
    assert resp["model_name"] == "iris" and resp["model_version"] == "1"
    assert {o["name"] for o in resp["outputs"]} == {o["name"] for o in iris["outputs"]}
    _, sreq = by[("strings-1", "org.kubeflow.serving.inference.request")]
    assert sreq["inputs"][0]["data"] == TEXTS
    _, sresp = by[("strings-1", "org.kubeflow.serving.inference.response")]
    assert sresp["outputs"] == strings["outputs"]


def _dropped(server: Server) -> float:
    total = 0.0
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("mlport_log_dropped_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_a_dead_sink_loses_no_request_and_counts_the_drops(serve: Callable[..., Server], repo: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    server = serve(repo, "--grpc-port", "0", "--request-log", dead)
    body = _iris_body("x")
    body["inputs"][0]["name"] = _input_name(server)

    def burst(n: int) -> list[int]:
        with server.client() as c:
            return [c.post("/v2/models/iris/infer", json=body).status_code for _ in range(n)]

    with ThreadPoolExecutor(8) as pool:
        codes = [code for part in pool.map(burst, [125] * 8) for code in part]
    assert len(codes) == 1000 and set(codes) == {200}
    wait_for(lambda: _dropped(server) == 1000, timeout=60, what="1000 drops counted")
    assert 'mlport_log_records_total{model="iris"}' not in httpx.get(server.url + "/metrics").text
    assert server.log().count("request log:") <= 2  # the failure is logged once per interval


def test_model_yaml_decides_per_model(serve: Callable[..., Server], repo: Path, tmp_path: Path) -> None:
    logs = tmp_path / "iris-logs"
    (repo / "iris" / "model.yaml").write_text(f"logging:\n  payload: inputs\n  sink: {logs}\n")
    server = serve(repo, "--grpc-port", "0")
    _send_both(server)
    records = wait_for(lambda: LogReader(SinkConfig(url=str(logs))).records() or None, timeout=30)
    assert [r["model"] for r in records] == ["iris"]  # strings has no logging section and no server default
    assert records[0]["inputs"] is not None and records[0]["outputs"] is None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlport.cli.main", "logs", *args], capture_output=True, text=True,
                          timeout=60)


def test_mlport_logs_reads_and_follows(serve: Callable[..., Server], repo: Path, tmp_path: Path) -> None:
    logs = tmp_path / "request-logs"
    server = serve(repo, "--grpc-port", "0", "--request-log", str(logs))
    _send_both(server)
    wait_for(lambda: len(LogReader(SinkConfig(url=str(logs))).records()) == 2, timeout=30)
    out = _cli("strings", "--request-log", str(logs), "--output", "json", "--since", "10m")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in lines] == ["strings-1"]
    text = _cli("iris", "--request-log", str(logs))
    assert text.returncode == 0 and "iris v1 v2 ok" in text.stdout and "id=iris-1" in text.stdout
    assert _cli("iris", "--request-log", str(logs), "--since", "2099-01-01").stdout == ""
    bad = _cli("iris", "--request-log", str(logs), "--since", "soon")
    assert bad.returncode == 2 and "since 'soon'" in bad.stderr
    follow = subprocess.Popen([sys.executable, "-m", "mlport.cli.main", "logs", "strings", "--request-log",
                               str(logs), "--follow", "-o", "json"], stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        assert json.loads(follow.stdout.readline())["id"] == "strings-1"
        with server.client() as c:
            assert c.post("/v2/models/strings/infer", json=_strings_body("later")).status_code == 200
        assert json.loads(follow.stdout.readline())["id"] == "later"
    finally:
        follow.terminate()
        follow.wait(15)


def test_a_cascade_logs_which_stage_answered_each_row_over_http_and_grpc(serve: Callable[..., Server],
                                                                          tmp_path: Path) -> None:
    import tritonclient.grpc as triton_grpc

    from tests.integration.test_manifests import cascade_repo

    root = tmp_path / "repo"
    x, low, _weak, _strong = cascade_repo(root, 10)
    logs = tmp_path / "request-logs"
    server = serve(root, "--request-log", str(logs))
    with server.client() as c:
        r = c.post("/v2/models/cascade/infer", json={"id": "c-1", "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert r.status_code == 200, r.text
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        inp = triton_grpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        client.infer("cascade", [inp], request_id="g-1")
    finally:
        client.close()
    def both() -> list[dict[str, Any]] | None:
        found = LogReader(SinkConfig(url=str(logs)), model="cascade").records()
        return found if len(found) == 2 else None

    records = wait_for(both, timeout=30)
    by_id = {rec["id"]: rec for rec in records}
    assert by_id["c-1"]["protocol"] == "v2" and by_id["g-1"]["protocol"] == "grpc"
    for record in records:
        assert record["answered_by"] == ["strong" if v else "weak" for v in low]
        assert as_arrays(record["inputs"])["input"].tobytes() == x.tobytes()
    assert by_id["c-1"]["answered_by"] == r.json()["parameters"]["answered_by"]
