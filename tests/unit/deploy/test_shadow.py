"""Shadow comparison: which answers agree, and what the recorder counts and keeps."""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from mlport.core.sqlitedb import Database
from mlport.deploy.shadow import MAX_RECENT, RESERVOIR, SHOWN_CHARS, Reply, ShadowRecorder, compare_replies


def js(doc: Any, status: int = 200, latency_s: float = 0.01, content_type: str = "application/json") -> Reply:
    return Reply(status, json.dumps(doc).encode(), content_type, latency_s)


def oip(outputs: list[dict[str, Any]], version: str = "1", rid: str = "a") -> dict[str, Any]:
    return {"model_name": "dep", "model_version": version, "id": rid, "outputs": outputs}


LABEL = {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 2]}
PROBS = {"name": "probabilities", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 0.5, 0.25, 0.75]}


# -- comparison ------------------------------------------------------------------------------------------

def test_oip_outputs_compared_by_name_within_tolerance() -> None:
    live = js(oip([LABEL, PROBS]))
    # other order, other id/version/parameters, numbers within rtol 1e-5
    close = dict(PROBS, data=[0.5 * (1 + 4e-6), 0.5, 0.25, 0.75 - 1e-7], parameters={"x": 1})
    assert compare_replies(live, js(oip([close, LABEL], version="2", rid="b"))).agree
    # beyond the tolerance
    far = dict(PROBS, data=[0.5001, 0.5, 0.25, 0.75])
    verdict = compare_replies(live, js(oip([LABEL, far])))
    assert not verdict.agree and "outputs[probabilities].data[0]" in verdict.reason
    # a different label
    assert not compare_replies(live, js(oip([dict(LABEL, data=[1, 0]), PROBS]))).agree
    # an output missing, or one more
    assert "outputs" in compare_replies(live, js(oip([LABEL]))).reason
    assert not compare_replies(live, js(oip([LABEL, PROBS, dict(LABEL, name="extra")]))).agree
    # shape and datatype count
    assert not compare_replies(live, js(oip([dict(LABEL, shape=[2, 1]), PROBS]))).agree
    assert not compare_replies(live, js(oip([dict(LABEL, datatype="INT32"), PROBS]))).agree
    # booleans are not numbers: true is not 1
    flags = {"name": "f", "datatype": "BOOL", "shape": [1], "data": [True]}
    assert not compare_replies(js(oip([flags])), js(oip([dict(flags, data=[1])]))).agree


def test_long_vectors_within_and_beyond_tolerance() -> None:
    data = [i / 7 for i in range(1000)]
    out = {"name": "y", "datatype": "FP64", "shape": [1000], "data": data}
    noisy = dict(out, data=[v * (1 + 3e-6) for v in data])
    assert compare_replies(js(oip([out])), js(oip([noisy]))).agree
    wrong = list(data)
    wrong[617] += 0.01
    verdict = compare_replies(js(oip([out])), js(oip([dict(out, data=wrong)])))
    assert not verdict.agree and "data[617]" in verdict.reason
    # absolute tolerance near zero
    zeros = dict(out, data=[0.0] * 1000)
    assert compare_replies(js(oip([zeros])), js(oip([dict(out, data=[5e-7] * 1000)]))).agree
    assert not compare_replies(js(oip([zeros])), js(oip([dict(out, data=[5e-6] * 1000)]))).agree


def test_tf_serving_predictions() -> None:
    live = js({"predictions": [[0.1, 0.9], [0.3, 0.7]]})
    assert compare_replies(live, js({"predictions": [[0.1 + 1e-7, 0.9], [0.3, 0.7]]})).agree
    verdict = compare_replies(live, js({"predictions": [[0.1, 0.9], [0.4, 0.6]]}))
    assert not verdict.agree and verdict.reason.startswith("predictions[1][0]")
    assert not compare_replies(live, js({"predictions": [[0.1, 0.9]]})).agree
    # rows of named outputs, and the columnar form
    rows = js({"predictions": [{"label": 1, "p": [0.2, 0.8]}]})
    assert compare_replies(rows, js({"predictions": [{"p": [0.2, 0.8], "label": 1}]})).agree
    assert not compare_replies(rows, js({"predictions": [{"p": [0.2, 0.8], "label": 2}]})).agree
    columnar = js({"outputs": {"label": [1, 2], "p": [[0.2, 0.8], [0.6, 0.4]]}})
    assert compare_replies(columnar, js({"outputs": {"label": [1, 2], "p": [[0.2, 0.8], [0.6, 0.4]]}})).agree
    assert not compare_replies(columnar, js({"outputs": {"label": [1, 1], "p": [[0.2, 0.8], [0.6, 0.4]]}})).agree


def test_other_json_compared_whole() -> None:
    live = js({"label": [1, 0], "probabilities": [[0.1, 0.9], [0.8, 0.2]]})
    assert compare_replies(live, js({"probabilities": [[0.1, 0.9 + 1e-6], [0.8, 0.2]], "label": [1, 0]})).agree
    assert not compare_replies(live, js({"label": [1, 0]})).agree
    assert not compare_replies(live, js({"label": [1, 0], "probabilities": [[0.1, 0.9], [0.8, 0.3]]})).agree
    assert compare_replies(js("text"), js("text")).agree
    assert not compare_replies(js(["a", None]), js(["a", 0])).agree


def test_non_2xx_never_agree() -> None:
    ok = js(oip([LABEL]))
    verdict = compare_replies(ok, js({"error": "boom"}, status=500))
    assert not verdict.agree and "500" in verdict.reason
    assert not compare_replies(js({"error": "bad"}, status=400), js({"error": "bad"}, status=400)).agree
    assert not compare_replies(js({"error": "x"}, status=503), ok).agree


def test_binary_and_non_json_bodies_compared_as_bytes() -> None:
    header = json.dumps(oip([{"name": "y", "datatype": "FP32", "shape": [2],
                              "parameters": {"binary_data_size": 8}}])).encode()
    body = header + struct.pack("<2f", 1.0, 2.0)
    octets = "application/octet-stream"
    assert compare_replies(Reply(200, body, octets, 0.1), Reply(200, bytes(body), octets, 0.2)).agree
    # one float a hair different: the bytes differ, so the answers do
    other = header + struct.pack("<2f", 1.0, 2.0000002)
    assert not compare_replies(Reply(200, body, octets, 0.1), Reply(200, other, octets, 0.1)).agree
    # the content types must match
    assert not compare_replies(Reply(200, body, octets, 0.1), Reply(200, body, "application/json", 0.1)).agree
    # text, and "JSON" that does not parse
    text = Reply(200, b"abc", "text/plain", 0)
    assert compare_replies(text, Reply(200, b"abc", "text/plain; charset=utf-8", 0)).agree
    assert not compare_replies(Reply(200, b"abc", "text/plain", 0), Reply(200, b"abd", "text/plain", 0)).agree
    assert compare_replies(js_raw(b"{nope"), js_raw(b"{nope")).agree
    assert not compare_replies(js_raw(b"{nope"), js_raw(b"{nope ")).agree


def js_raw(body: bytes) -> Reply:
    return Reply(200, body, "application/json", 0.0)


# -- recording ---------------------------------------------------------------------------------------------

@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "hub.db")


def test_counts_latencies_and_disagreements(db: Database) -> None:
    rec = ShadowRecorder(db)
    assert db.one("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'deploy_shadow'") is not None
    empty = rec.summary("dep")
    assert empty["requests"] == 0 and empty["agreement_rate"] is None and empty["recent_disagreements"] == []
    for i in range(7):
        rec.record("dep", 1, 2, js(oip([LABEL]), latency_s=0.001 * (i + 1)), js(oip([LABEL]), latency_s=0.002))
    rec.record("dep", 1, 2, js(oip([LABEL]), latency_s=0.008), js(oip([dict(LABEL, data=[2, 2])]), latency_s=0.002))
    rec.record("dep", 1, 2, js(oip([LABEL]), latency_s=0.009), js({"error": "down"}, status=503, latency_s=0.002))
    big = {"name": "label", "datatype": "INT64", "shape": [5000], "data": [1] * 5000}
    rec.record("dep", 1, 2, js(oip([LABEL]), latency_s=0.010), js(oip([big]), latency_s=0.002))
    for _ in range(5):
        rec.record_dropped("dep", 1, 2)
    s = rec.summary("dep")
    assert (s["primary"], s["shadow"], s["requests"], s["agreed"], s["errors"], s["dropped"]) == (1, 2, 10, 7, 1, 5)
    assert s["agreement_rate"] == pytest.approx(0.7)
    assert s["live_latency_ms"]["mean"] == pytest.approx(5.5)  # 1..10 ms
    assert s["live_latency_ms"]["p50"] == pytest.approx(5.0)
    assert s["live_latency_ms"]["p95"] == pytest.approx(10.0)
    assert s["shadow_latency_ms"] == pytest.approx({"mean": 2.0, "p50": 2.0, "p95": 2.0})
    recent = s["recent_disagreements"]
    assert [d["shadow_status"] for d in recent] == [200, 503, 200]  # newest first
    assert recent[1]["live_status"] == 200 and "503" in recent[1]["reason"]
    assert "outputs[label].data[0]" in recent[2]["reason"]
    assert len(recent[0]["shadow_body"]) <= SHOWN_CHARS + 3 and recent[0]["shadow_body"].endswith("...")
    assert json.loads(recent[2]["live_body"]) == oip([LABEL])


def test_counts_persist_percentiles_do_not(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    rec = ShadowRecorder(Database(path))
    for i in range(4):
        rec.record("dep", 3, 4, js({"y": i}, latency_s=0.004), js({"y": i if i % 2 else -1}, latency_s=0.006))
    rec.record_dropped("dep", 3, 4)
    rec.flush()  # as at shutdown: counts are written behind
    again = ShadowRecorder(Database(path)).summary("dep")
    assert (again["requests"], again["agreed"], again["dropped"]) == (4, 2, 1)
    latency = again["live_latency_ms"]
    assert latency["mean"] == pytest.approx(4.0) and latency["p50"] is None and latency["p95"] is None
    assert len(again["recent_disagreements"]) == 2


def test_only_the_newest_disagreements_are_kept(db: Database) -> None:
    rec = ShadowRecorder(db)
    for i in range(MAX_RECENT + 5):
        rec.record("dep", 1, 2, js({"y": i}), js({"y": -i - 1}))
    recent = rec.summary("dep")["recent_disagreements"]
    assert len(recent) == MAX_RECENT
    assert [json.loads(d["live_body"])["y"] for d in recent] == list(range(MAX_RECENT + 4, 4, -1))


def test_reservoir_is_bounded(db: Database) -> None:
    rec = ShadowRecorder(db)
    for i in range(RESERVOIR + 500):
        rec.record("dep", 1, 2, js({}, latency_s=1.0 if i < 500 else 0.001), js({}, latency_s=0.001))
    s = rec.summary("dep")
    assert s["requests"] == RESERVOIR + 500
    assert s["live_latency_ms"]["p95"] == pytest.approx(1.0)  # the 500 slow ones left the reservoir
    assert s["live_latency_ms"]["mean"] > 300  # the mean counts them all


def test_another_pair_of_versions_starts_afresh_and_reset_forgets(db: Database) -> None:
    rec = ShadowRecorder(db)
    rec.record("dep", 1, 2, js({"y": 1}), js({"y": 1}))
    rec.record("dep", 1, 2, js({"y": 1}), js({"y": 2}))
    rec.record("other", 5, 6, js({"y": 1}), js({"y": 1}))
    rec.record("dep", 1, 3, js({"y": 1}), js({"y": 1}))
    s = rec.summary("dep")
    assert (s["primary"], s["shadow"], s["requests"], s["agreed"], s["recent_disagreements"]) == (1, 3, 1, 1, [])
    rec.reset("dep")
    assert rec.summary("dep")["requests"] == 0 and rec.summary("dep")["primary"] is None
    assert rec.summary("other")["requests"] == 1


def test_records_from_threads(db: Database) -> None:
    rec = ShadowRecorder(db)

    def work(n: int) -> None:
        for i in range(50):
            rec.record("dep", 1, 2, js({"y": i}), js({"y": i if n % 2 else -1}))
            rec.record_dropped("dep", 1, 2)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = rec.summary("dep")
    assert (s["requests"], s["agreed"], s["dropped"]) == (200, 100, 200)
