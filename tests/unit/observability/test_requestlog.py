"""Request log records, rotating files, the reader and the writer's drop accounting (no server)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from mlport.core.logconfig import RequestLogConfig, SinkConfig
from mlport.errors import InvalidInput
from mlport.formats.config import load_model_config
from mlport.observability.requestlog import LogReader, RequestLog, as_arrays, parse_since
from mlport.observability.requestlog.files import RotatingFiles
from mlport.observability.requestlog.records import Captured, to_json
from tests.waiting import wait_for


def _arrays() -> dict[str, np.ndarray[Any, Any]]:
    text = np.empty((2, 2), dtype=object)
    text[:] = [[b"\x00\xffraw", "h\u00e9llo"], [b"", b"x"]]
    return {
        "f32": np.array([[1.5, np.nan], [np.inf, -0.0]], dtype=np.float32),
        "f16": np.array([0.1, 65504], dtype=np.float16),
        "f64": np.array([np.pi, 1e-310]),
        "i64": np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max]),
        "u64": np.array([np.iinfo(np.uint64).max], dtype=np.uint64),
        "i8": np.array([[-128, 127]], dtype=np.int8),
        "b": np.array([True, False]),
        "big_endian": np.array([1.25, -2.0], dtype=">f8"),
        "strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],
        "text": text,
    }


def _captured(model: str = "m", inputs: Any = None, at: float | None = None) -> Captured:
    return Captured(time=at or time.time(), request_id="r1", model=model, version="3", protocol="v2", status="ok",
                    seconds=0.0012, inputs=inputs, outputs={"y": np.array([1, 2], dtype=np.int64)},
                    parameters={"routed_to": ["a", "b"]})


def _put(files: RotatingFiles, batch: list[Captured]) -> None:
    files.write([files.encode(batch)])


def _same(got: dict[str, np.ndarray[Any, Any]], sent: dict[str, np.ndarray[Any, Any]]) -> None:
    assert list(got) == list(sent)
    for name, arr in sent.items():
        back = got[name]
        assert back.shape == arr.shape, name
        if arr.dtype == object:
            want = [e.encode() if isinstance(e, str) else e for e in arr.ravel()]
            assert back.dtype == object and list(back.ravel()) == want, name
        else:
            assert back.dtype == arr.dtype.newbyteorder("="), name
            assert back.tobytes() == np.ascontiguousarray(arr.astype(back.dtype)).tobytes(), name


def test_json_record_round_trips_every_datatype_exactly() -> None:
    sent = _arrays()
    record = orjson.loads(orjson.dumps(to_json(_captured(inputs=sent))))
    _same(as_arrays(record["inputs"]), sent)
    assert record["routed_to"] == ["a", "b"] and record["answered_by"] is None
    assert record["latency_ms"] == 1.2 and record["version"] == "3" and record["id"] == "r1"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_files_round_trip_and_reader_filters(tmp_path: Path, fmt: str) -> None:
    sink = SinkConfig(url=str(tmp_path), format=fmt)
    files = RotatingFiles(sink)
    old = time.time() - 3600
    _put(files, [_captured("m", _arrays(), at=old), _captured("other", _arrays())])
    _put(files, [_captured("m", _arrays())])
    files.close()
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].endswith("." + fmt)
    records = LogReader(sink, model="m").records()
    assert len(records) == 2 and all(r["model"] == "m" for r in records)
    _same(as_arrays(records[0]["inputs"]), _arrays())
    _same(as_arrays(records[0]["outputs"]), {"y": np.array([1, 2], dtype=np.int64)})
    recent = LogReader(sink, since=parse_since("10m")).records()
    assert [r["model"] for r in recent] == ["other", "m"]


def test_files_rotate_by_size_and_age_and_keep_the_newest(tmp_path: Path) -> None:
    sink = SinkConfig(url=str(tmp_path), rotate_bytes=4096, rotate_s=0.2, keep=3)
    files = RotatingFiles(sink)
    payload = {"x": np.zeros(1000, dtype=np.float32)}  # ~5.4 kB a record: one record a file
    for _ in range(6):
        _put(files, [_captured(inputs=payload)])
    assert len(list(tmp_path.iterdir())) == 3  # the oldest deleted beyond keep
    _put(files, [Captured(time.time(), "small", "m", "1", "v2", "ok", 0.0, None, None, None)])
    before = sorted(p.name for p in tmp_path.iterdir())
    time.sleep(0.25)  # the file's age passes rotate_s (a limit, not a wait for a condition)
    files.tick()
    _put(files, [Captured(time.time(), "next", "m", "1", "v2", "ok", 0.0, None, None, None)])
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after != before and len(before) == len(after) == 4  # 3 closed files kept, and the one being written
    assert after[:3] == before[1:]
    assert [r["id"] for r in LogReader(sink).records()][-2:] == ["small", "next"]
    files.close()


def test_reader_follows_a_growing_file(tmp_path: Path) -> None:
    sink = SinkConfig(url=str(tmp_path))
    files = RotatingFiles(sink)
    reader = LogReader(sink)
    _put(files, [_captured()])
    assert len(list(reader.poll())) == 1
    assert list(reader.poll()) == []
    _put(files, [_captured(), _captured()])
    assert len(list(reader.poll())) == 2
    files.close()


class _Failing:
    def __init__(self) -> None:
        self.calls = 0

    def encode(self, batch: list[Captured]) -> list[Captured]:
        return batch

    def write(self, batches: list[list[Captured]]) -> None:
        self.calls += 1
        raise ConnectionError("receiver down")

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_failing_sink_drops_and_counts_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    failing = _Failing()
    config = RequestLogConfig(sink=SinkConfig(url="/unused", queue=50))
    rlog = RequestLog(config, registry, opener=lambda _s: failing)
    for _ in range(300):
        pending = rlog.start("m", 1, None, "v2")
        assert pending is not None
        pending.finish("id", "ok", 0.001)
    wait_for(lambda: _value(registry, "mlport_log_dropped_total", model="m", reason="sink_error")
             + _value(registry, "mlport_log_dropped_total", model="m", reason="queue_full") == 300, timeout=30)
    rlog.close()
    assert failing.calls >= 1
    warnings = [r for r in caplog.records if r.name == "mlport.requestlog"]
    assert 1 <= len(warnings) <= 2  # once per interval, not once per record


def test_sampling_and_model_settings_over_the_server_defaults(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    server = RequestLogConfig(sample=1.0, sink=SinkConfig(url=str(tmp_path / "server")))
    rlog = RequestLog(server, registry)
    assert rlog.start("m", 1, RequestLogConfig(sample=0.0), "v2") is None
    none = RequestLogConfig(payload="none")
    assert rlog.resolve(none) == RequestLogConfig(payload="none", sink=server.sink)
    own = RequestLogConfig(sample=0.5, sink=SinkConfig(url=str(tmp_path / "own")))
    hits = sum(rlog.start("n", 1, own, "v2") is not None for _ in range(2000))
    assert 800 < hits < 1200
    unlogged = RequestLog(RequestLogConfig(), CollectorRegistry())
    assert unlogged.start("m", 1, RequestLogConfig(sample=1.0), "v2") is None  # no sink anywhere
    rlog.close()
    unlogged.close()


def test_model_yaml_logging_section(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("logging:\n  sample: 0.25\n  payload: inputs\n  sink:\n    url: s3://bucket/logs\n"
                    "    format: parquet\n    keep: 7\n")
    cfg = load_model_config(path).logging
    assert cfg is not None and cfg.sample == 0.25 and cfg.inputs and not cfg.outputs
    assert cfg.sink is not None and cfg.sink.kind == "s3" and cfg.sink.format == "parquet" and cfg.sink.keep == 7
    path.write_text("logging: {sink: 'http://127.0.0.1:9/events'}\n")
    short = load_model_config(path).logging
    assert short is not None and short.sink is not None and short.sink.kind == "http"
    path.write_text("logging: {sample: 2}\n")
    with pytest.raises(InvalidInput, match=r"logging\.sample"):
        load_model_config(path)
    path.write_text("logging: {payload: everything}\n")
    with pytest.raises(InvalidInput, match=r"logging\.payload"):
        load_model_config(path)


def test_parse_since() -> None:
    now = dt.datetime(2026, 1, 2, 3, 0, tzinfo=dt.UTC)
    assert parse_since("15m", now) == dt.datetime(2026, 1, 2, 2, 45, tzinfo=dt.UTC)
    assert parse_since("2026-01-01T00:00:00", now) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(InvalidInput, match="since 'soon'"):
        parse_since("soon", now)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_files_keep_missing_payloads_empty_tensors_and_lineage(tmp_path: Path, fmt: str) -> None:
    sink = SinkConfig(url=str(tmp_path), format=fmt)
    files = RotatingFiles(sink)
    _put(files, [
        Captured(time.time(), None, "m", "1", "v2", "ok", 0.1, None, {"e": np.zeros((0, 3))},
                 {"routed_to": ["a"], "answered_by": ["a", "b"]}),
        Captured(time.time(), "z", "m", "1", "v2", "invalid_argument", 0.1, {"x": np.ones((2, 0), np.int16)}, None,
                 None),
    ])
    files.close()
    first, second = LogReader(sink).records()
    assert first["inputs"] is None and len(first["id"]) == 32
    assert as_arrays(first["outputs"])["e"].shape == (0, 3)
    assert (first["routed_to"], first["answered_by"]) == (["a"], ["a", "b"])
    assert second["outputs"] is None and second["status"] == "invalid_argument"
    assert as_arrays(second["inputs"])["x"].dtype == np.int16 and second["routed_to"] is None


def test_json_lines_from_templates_equal_the_records() -> None:
    from mlport.observability.requestlog.records import json_line

    cases = [
        _captured(inputs=_arrays()),  # BYTES: no template
        Captured(time.time(), 'a"b', "m", "1", "v2", "ok", 0.00123456,
                 {"x": np.array([[5.1, np.nan]], dtype=">f4")}, {"y": np.array([[0.5]], dtype=np.float32)}, {}),
        Captured(time.time(), "r", "m", "1", "v2", "ok", 0.002, {"x": np.array([[1.0, 2.0]], dtype="<f4")}, None, {}),
        Captured(time.time(), "s", "m\x01", "1", "grpc", "invalid_argument", 1e-7, None, {"\x04": np.zeros((0, 2))},
                 None),
    ]
    for c in [*cases, *cases]:  # the second time from the templates the first made
        assert orjson.loads(json_line(c)) == orjson.loads(orjson.dumps(to_json(c)))


def test_the_newest_records_are_read_from_the_newest_files_only(tmp_path: Path) -> None:
    sink = SinkConfig(url=str(tmp_path), rotate_bytes=4096)
    files = RotatingFiles(sink)
    payload = {"x": np.zeros(1000, dtype=np.float32)}  # one record a file
    for i in range(5):
        _put(files, [Captured(time.time(), f"r{i}", "m", "1", "v2", "ok", 0.0, payload, None, None)])
    reader = LogReader(sink)
    assert [r["id"] for r in reader.records(limit=2)] == ["r3", "r4"]
    assert list(reader.poll()) == []  # the older files count as read
    _put(files, [Captured(time.time(), "r5", "m", "1", "v2", "ok", 0.0, None, None, None)])
    assert [r["id"] for r in reader.poll()] == ["r5"]
    files.close()


def test_a_server_sink_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    bad = RequestLogConfig(sink=SinkConfig(url=str(tmp_path / "a-file" / "logs")))
    with pytest.raises(InvalidInput, match=r"request log .*a-file"):
        RequestLog(bad, CollectorRegistry())
    # a model's own sink that cannot be opened leaves that model unlogged, and serving
    rlog = RequestLog(RequestLogConfig(), CollectorRegistry())
    assert rlog.start("m", 1, bad, "v2") is None
    rlog.close()
