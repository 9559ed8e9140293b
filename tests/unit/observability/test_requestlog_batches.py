"""Request log records encoded many at a time: the same bytes as one by one, in batch order; the hand-over that
batches them and lets the records go once encoded (no server)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.logconfig import RequestLogConfig, SinkConfig
from mlport.observability.requestlog import LogReader, RequestLog, as_arrays
from mlport.observability.requestlog import writer as writer_module
from mlport.observability.requestlog.files import RotatingFiles
from mlport.observability.requestlog.jsonlines import json_lines
from mlport.observability.requestlog.records import Captured, to_json
from tests.waiting import wait_for


def _tensor(kind: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    if kind == 0:
        return rng.random((1, 4)).astype(np.float32)
    if kind == 1:
        return np.array([[np.nan, np.inf, -np.inf, -0.0]], dtype=">f4")
    if kind == 2:
        return rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (2, 3), dtype=np.int64)
    if kind == 3:
        return np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]  # not contiguous
    if kind == 4:
        return np.zeros((0, 3))
    if kind == 5:
        return np.array(3.5, dtype=np.float16)  # 0-d, 2 bytes: base64 padding
    if kind == 6:
        return np.array([True, False, True, True, False])
    text = np.empty(2, dtype=object)
    text[:] = [b"\x00\xffx", "h\u00e9"]
    return text


def _batch(n: int, ids: bool) -> list[Captured]:
    """Records of many layouts, interleaved: shapes, dtypes, byte orders, missing payloads, lineage, BYTES."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        k = i % 9
        inputs = {"x": _tensor(k % 8, rng), "y%s": _tensor((k + 1) % 7, rng)}
        if k == 8 or (k == 7 and i % 2):
            inputs = None if k == 8 else {}
        outputs = {"o": _tensor(i % 7, rng)} if i % 5 else None
        parameters = [None, {}, {"routed_to": ["a", "b"]}, {"answered_by": "z", "other": 1}][i % 4]
        rid = f"r{i}" if ids else [None, "", f"r{i}", 'q"\\' + "x" * 200][i % 4]
        out.append(Captured(time.time() - float(rng.random()) * 1e8, rid, ["m", "n%"][i % 2], "1", "v2",
                            ["ok", "invalid_argument"][i % 3 == 0], float(rng.random()) * [1, 1e-7, 100][i % 3],
                            inputs, outputs, parameters))
    return out


def test_json_lines_of_a_batch_are_the_records_one_by_one_byte_for_byte() -> None:
    batch = _batch(600, ids=True)
    lines = json_lines(batch).split(b"\n")
    assert lines.pop() == b""
    assert lines == [orjson.dumps(to_json(c)) for c in batch]


def test_records_without_an_id_get_a_new_uuid_each() -> None:
    batch = _batch(200, ids=False)
    records = [orjson.loads(line) for line in json_lines(batch).splitlines()]
    made = [r["id"] for r, c in zip(records, batch, strict=True) if not c.request_id]
    assert len(made) == 100 and len(set(made)) == 100
    assert all(len(i) == 32 and i[12] == "4" and i[16] in "89ab" for i in made)
    assert [r["id"] for r, c in zip(records, batch, strict=True) if c.request_id] == \
        [c.request_id[:128] for c in batch if c.request_id]
    for record, c in zip(records, batch, strict=True):
        want = orjson.loads(orjson.dumps(to_json(c)))
        record["id"] = want["id"]
        assert record == want


def test_parquet_rows_of_a_batch_are_the_json_records(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    batch = _batch(600, ids=True)
    sink = SinkConfig(url=str(tmp_path), format="parquet")
    files = RotatingFiles(sink)
    files.write([files.encode(batch[:1]), files.encode(batch[1:])])
    files.close()
    assert LogReader(sink).records(limit=1000) == [orjson.loads(orjson.dumps(to_json(c))) for c in batch]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_mlport_logs_gives_back_the_exact_tensors_of_a_batch(tmp_path: Path, fmt: str) -> None:
    batch = [c for c in _batch(90, ids=True) if c.model == "m"]
    files = RotatingFiles(SinkConfig(url=str(tmp_path), format=fmt))
    files.write([files.encode(batch)])
    files.close()
    out = subprocess.run([sys.executable, "-m", "mlport.cli.main", "logs", "m", "--request-log", str(tmp_path),
                          "--output", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    records = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in records] == [c.request_id for c in batch]
    for record, c in zip(records, batch, strict=True):
        for key, sent in (("inputs", c.inputs), ("outputs", c.outputs)):
            if sent is None:
                assert record[key] is None
                continue
            got = as_arrays(record[key])
            assert list(got) == list(sent)
            for name, arr in sent.items():
                back = got[name]
                assert back.shape == arr.shape
                if arr.dtype == object:
                    assert list(back.ravel()) == [e.encode() if isinstance(e, str) else e for e in arr.ravel()]
                else:
                    assert back.dtype == arr.dtype.newbyteorder("=")
                    assert back.tobytes() == np.ascontiguousarray(arr.astype(back.dtype)).tobytes()


class _Held:
    """A sink whose writes wait until released; it keeps what it was given to encode as the batches' sizes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.written = 0
        self.release = threading.Event()

    def encode(self, batch: list[Captured]) -> int:
        self.sizes.append(len(batch))
        return len(batch)

    def write(self, encoded: list[int]) -> None:
        self.release.wait(30)
        self.written += sum(encoded)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_records_are_encoded_in_batches_and_let_go_once_encoded() -> None:
    sink = _Held()
    rlog = RequestLog(RequestLogConfig(sink=SinkConfig(url="/unused", queue=10_000)), CollectorRegistry(),
                      opener=lambda _s: sink)
    refs: list[weakref.ref[np.ndarray[Any, Any]]] = []

    async def requests(n: int) -> None:
        for _ in range(n):
            pending = rlog.start("m", 1, None, "v2")
            assert pending is not None
            arr = np.ones((1, 4), np.float32)
            refs.append(weakref.ref(arr))
            pending.request = InferenceRequest(inputs={"x": arr})
            pending.finish("id", "ok", 0.001)
            del arr, pending
            await asyncio.sleep(0)
        deadline = time.monotonic() + 30
        while sum(sink.sizes) < n and time.monotonic() < deadline:  # the encoding delay passes
            await asyncio.sleep(0.01)

    try:
        asyncio.run(requests(100))
        # one turn of the loop per request: encoded a batch at a time, not one by one
        assert sum(sink.sizes) == 100 and len(sink.sizes) < 50
        assert all(r() is None for r in refs)  # not written yet, but no longer held
        before = len(sink.sizes)
        big = writer_module.ENCODE_BATCH
        asyncio.run(requests(big))
        assert big in sink.sizes[before:]  # a full batch is encoded at once
    finally:
        sink.release.set()
    wait_for(lambda: sink.written == 100 + big, timeout=30)
    rlog.close()


def test_a_record_that_cannot_be_encoded_is_dropped_alone(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    sink = SinkConfig(url=str(tmp_path))
    rlog = RequestLog(RequestLogConfig(sink=sink), registry)

    async def requests() -> None:
        for i, output in enumerate([np.ones(2), np.ones(2, dtype=np.complex128), np.zeros(2)]):
            pending = rlog.start("m", 1, None, "v2")
            assert pending is not None
            pending.response = InferenceResponse(model_name="m", model_version="1", outputs={"y": output})
            pending.finish(f"r{i}", "ok", 0.001)

    asyncio.run(requests())
    rlog.close()  # encodes what waits, as one batch
    assert [r["id"] for r in LogReader(sink).records()] == ["r0", "r2"]
    assert registry.get_sample_value("mlport_log_dropped_total", {"model": "m", "reason": "sink_error"}) == 1
    assert registry.get_sample_value("mlport_log_records_total", {"model": "m"}) == 2
