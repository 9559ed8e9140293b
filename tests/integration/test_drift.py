"""Drift and outliers against a real ``mlport serve``: a shifted stream drifts on exactly the shifted features,
an unshifted one stays ok, the figures equal scipy's on the same window, the webhook (a real receiver) gets one
alert per change, outlier scores come back in the answer, and ``mlport drift`` shows it all."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from scipy import stats as sps

from mlport.observability.drift import read_profile
from mlport.observability.drift.stats import EPSILON
from tests.conftest import Server
from tests.integration.drift_util import Receiver, profiled_model, receiver, send
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

INFER = "/v2/models/m/infer"


@pytest.fixture
def hook() -> Iterator[Receiver]:
    yield from receiver(fail_first=1)


def _drift(server: Server) -> dict[str, Any]:
    r = httpx.get(server.url + "/models/m/drift", timeout=30)
    assert r.status_code == 200, r.text
    versions = r.json()["versions"]
    return dict(versions[0]) if versions else {}


def _seen(server: Server, rows: int) -> dict[str, Any]:
    """The figures once computed over a window that holds the first ``rows`` rows sent."""
    return wait_for(lambda: (d := _drift(server)).get("rows_seen") == rows and d, what=f"figures over {rows} rows")


def _alerts(server: Server) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith('mlport_drift_alerts_total{model="m",outcome="delivered"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_shifted_stream_drifts_on_exactly_the_shifted_features(
        serve: Callable[..., Server], tmp_path: Path, hook: Receiver) -> None:
    model = profiled_model(tmp_path / "m", "drift: {window_rows: 500, min_rows: 100, interval_s: 0.1, "
                                            f"webhook: '{hook.url}'}}\n")
    server = serve(model)
    client = httpx.Client(base_url=server.url, timeout=30)
    assert _drift(server) == {}  # watched from the first request
    rng = np.random.default_rng(11)

    # each phase in one request: the window changes at once, so no figures are computed over a mix of two
    # phases (such a mix may have its own status, and an alert of its own, when requests come slowly)
    send(client, INFER, rng.normal(size=(500, 3)), per_request=500)
    calm = _seen(server, 500)
    assert calm["status"] == "ok", calm
    names = ["a", "b", "c", "y[0]", "y[1]", "y[2]"]
    assert {f["name"]: f["status"] for f in calm["features"]} == dict.fromkeys(names, "ok")

    shifted = rng.normal(size=(500, 3))
    shifted[:, 1] += 1.0
    send(client, INFER, shifted, per_request=500)
    result = _seen(server, 1000)
    assert result["status"] == "drift" and result["rows"] == 500
    status = {f["name"]: f["status"] for f in result["features"]}
    assert status == {"a": "ok", "b": "drift", "c": "ok", "y[0]": "ok", "y[1]": "drift", "y[2]": "ok"}

    # the figures equal scipy's on the same window (the model's inputs are FP32, as the server saw them)
    profile = {f.name: f for f in read_profile(model / "profile.json").features}
    for name, column in (("a", 0), ("b", 1), ("c", 2)):
        window = shifted[:, column].astype(np.float32).astype(np.float64)
        ref = profile[name]
        assert ref.sample is not None and ref.histogram is not None
        got = next(f for f in result["features"] if f["name"] == name)["methods"]
        want = sps.ks_2samp(np.asarray(ref.sample), window)
        assert got["ks"]["value"] == pytest.approx(want.statistic, abs=1e-15)
        assert got["ks"]["pvalue"] == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
        counts = np.histogram(window, np.concatenate([[-np.inf], ref.histogram.edges, [np.inf]]))[0]
        actual = np.maximum(counts / len(window), EPSILON)
        expected = np.maximum(np.asarray(ref.histogram.fractions), EPSILON)
        actual, expected = actual / actual.sum(), expected / expected.sum()
        psi = float(sps.entropy(actual, expected) + sps.entropy(expected, actual))
        assert got["psi"]["value"] == pytest.approx(psi, rel=1e-9)

    # one alert for the change to drift (its first delivery answered 500: retried), none while it stays
    wait_for(lambda: _alerts(server) == 1.0, what="the alert delivered")
    assert len(hook.bodies) == 2 and hook.bodies[0] == hook.bodies[1]
    alert = hook.bodies[0]
    assert (alert["model"], alert["version"], alert["status"], alert["previous"]) == ("m", 1, "drift", "ok")
    assert alert["drifting"] == ["b", "y[1]"]
    more = rng.normal(size=(200, 3))
    more[:, 1] += 1.0
    send(client, INFER, more, per_request=500)
    assert _seen(server, 1200)["status"] == "drift"
    assert len(hook.bodies) == 2

    # back to the reference: ok again, one more alert
    send(client, INFER, rng.normal(size=(500, 3)), per_request=500)
    assert _seen(server, 1700)["status"] == "ok"
    wait_for(lambda: _alerts(server) == 2.0, what="the second alert delivered")
    assert [(b["status"], b["previous"]) for b in hook.bodies[2:]] == [("ok", "drift")]

    metrics = httpx.get(server.url + "/metrics").text
    assert 'mlport_drift{feature="b",method="psi",model="m",version="1"}' in metrics
    assert 'mlport_drift_status{model="m",version="1"} 0.0' in metrics

    # the CLI against the runtime
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "drift", "m", "--url", server.url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("m: ok") and "input  b " in done.stdout
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "drift", "m", "--url", server.url, "-o", "json"],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["versions"][0]["rows_seen"] == 1700


def test_outlier_scores_come_back_and_are_counted(serve: Callable[..., Server], tmp_path: Path) -> None:
    model = profiled_model(tmp_path / "m", "outliers: true\ndrift: {enabled: false}\n")
    server = serve(model)
    client = httpx.Client(base_url=server.url, timeout=30)
    params = send(client, INFER, np.array([[0.0, 0.0, 0.0], [0.5, -0.5, 1.0], [6.0, -6.0, 6.0]]), per_request=3)[0]
    scores = params["outlier_scores"]
    assert len(scores) == 3 and scores[0] < scores[1] < params["outlier_threshold"] < scores[2]
    profile = read_profile(model / "profile.json")
    assert profile.outliers is not None and params["outlier_threshold"] == profile.outliers.threshold
    # over gRPC the scores travel as a string parameter holding the JSON list
    import grpc

    from mlport.protocols.grpc.proto import inference_pb2 as pb
    from mlport.protocols.grpc.proto import inference_pb2_grpc

    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend([6.0, -6.0, 6.0])
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        answer = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    assert json.loads(answer.parameters["outlier_scores"].string_param) == [pytest.approx(scores[2])]
    # drift off: not watched
    assert httpx.get(server.url + "/models/m/drift").json()["status"] == "unwatched"
    assert httpx.get(server.url + "/models/nope/drift").status_code == 404
    metrics = httpx.get(server.url + "/metrics").text
    assert 'mlport_outlier_rows_total{model="m",version="1"} 4.0' in metrics
    assert 'mlport_outliers_total{model="m",version="1"} 2.0' in metrics


def test_a_categorical_output_drifts_by_chi_square_as_scipy_computes_it(
        serve: Callable[..., Server], tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    from tests.builders import ort_run
    from tests.scoreutil import IRIS_FIELDS, IRIS_LABELS, iris_model

    model = iris_model(tmp_path)
    with (model / "model.yaml").open("a") as f:
        f.write("drift: {window_rows: 300, interval_s: 0.1}\n")
    x = load_iris().data
    data = tmp_path / "iris.csv"
    data.write_text(",".join(IRIS_FIELDS) + "\n" + "\n".join(",".join(map(str, r)) for r in x.tolist()) + "\n")
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "profile", str(data), "--model", str(model),
                           "-o", str(model / "profile.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    server = serve(model)
    client = httpx.Client(base_url=server.url, timeout=30)
    rows = x[np.random.default_rng(2).integers(0, 150, 300)]
    rows[:, 2] += 1.5  # longer petals: more virginica
    for start in range(0, 300, 30):
        chunk = rows[start:start + 30].astype(np.float32)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(chunk.shape),
                            "data": chunk.ravel().tolist()}]}
        assert client.post("/v2/models/iris/infer", json=body).status_code == 200
    result = wait_for(lambda: (d := httpx.get(server.url + "/models/iris/drift").json()["versions"])
                      and d[0]["rows_seen"] == 300 and d[0], what="figures over 300 rows")
    label = next(f for f in result["features"] if f["name"] == "label")
    assert label["kind"] == "categorical" and label["status"] == "drift"
    # the window's labels, as onnxruntime gives them, against the profile's frequencies
    indices = ort_run(model / "1" / "model.onnx", {"input": rows.astype(np.float32)})["label"]
    predicted = np.asarray(IRIS_LABELS)[indices]
    freq = read_profile(model / "profile.json").features[4].frequencies
    assert freq is not None
    names = [k for k in freq if k != "__other__"]
    observed = np.array([np.sum(predicted == k) for k in names] + [np.sum(~np.isin(predicted, names))], dtype=float)
    expected = np.maximum(np.array([freq[k] for k in names] + [0.0]), EPSILON)
    want = sps.chisquare(observed, expected / expected.sum() * observed.sum())
    assert label["methods"]["chi2"]["value"] == pytest.approx(want.statistic, rel=1e-12)
    assert label["methods"]["chi2"]["pvalue"] == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
