"""The adaptive batcher (runtime.batching.Runner) and the service around it, on real ONNX models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlport.core.inference import InferenceRequest
from mlport.errors import InvalidInput, MlportError
from mlport.formats.adapt import adapt
from mlport.formats.base import Evaluator, LoadOptions
from mlport.formats.config import BatchingConfig, ModelConfig
from mlport.formats.onnx import OnnxFormat
from mlport.formats.registry import default_registry
from mlport.limits import Limits
from mlport.observability.metrics import Metrics
from mlport.protocols.service import InferenceService
from mlport.runtime.batching import Runner, batchable
from mlport.runtime.manager import ModelManager
from mlport.runtime.repository import Repository
from tests.builders import save_graph, scale_onnx, scaled_by_input_onnx
from tests.waiting import until


def _load(path: Path) -> Evaluator:
    return OnnxFormat().load(path, LoadOptions(intra_op_threads=1))


def lookup_onnx(path: Path) -> Path:
    """y = table[x] for x INT64 [-1]: an index outside the table makes onnxruntime fail the whole call."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])
    table = helper.make_tensor("table", TensorProto.FLOAT, [3], [10.0, 20.0, 30.0])
    graph = helper.make_graph([helper.make_node("Gather", ["table", "x"], ["y"], axis=0)], "lookup", [x], [y], [table])
    return save_graph(graph, path)


def heavy_onnx(path: Path, width: int = 256, layers: int = 16) -> Path:
    """A batchable model whose predictions take a while: ``layers`` MatMuls on x FP32 [-1, width]."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])
    init = helper.make_tensor("w", TensorProto.FLOAT, [width, width], w.ravel().tolist())
    nodes, prev = [], "x"
    for i in range(layers):
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out]))
        prev = out
    return save_graph(helper.make_graph(nodes, "heavy", [x], [y], [init]), path)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(2)
    yield executor
    executor.shutdown(wait=True)


def _nothing() -> None:
    """The 'prediction ended' hook of requests that hold no model version."""


async def _outputs(result: Any) -> dict[str, np.ndarray]:
    return result if isinstance(result, dict) else await result


def test_batchable_needs_a_batch_axis_everywhere(tmp_path: Path) -> None:
    assert batchable(_load(scale_onnx(tmp_path / "s.onnx", 2.0)).signature)
    assert not batchable(_load(scaled_by_input_onnx(tmp_path / "k.onnx")).signature)  # 'k' has no batch axis
    assert not batchable(_load(scale_onnx(tmp_path / "f.onnx", 2.0, shape=(2, 3))).signature)


def test_concurrent_requests_merge_and_split_back_to_their_callers(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    runner = Runner(_load(scale_onnx(tmp_path / "s.onnx", 2.0)), pool, BatchingConfig(max_batch_size=16,
                                                                                       max_delay_ms=50))

    async def scenario() -> None:
        feeds = [{"x": np.full((1 + i % 3, 3), float(i), dtype=np.float32)} for i in range(60)]
        results = await asyncio.gather(*(_outputs(runner.run(f, _nothing)) for f in feeds))
        for feed, out in zip(feeds, results, strict=True):
            np.testing.assert_array_equal(out["y"], feed["x"] * 2)  # its own rows, in its own shape
        assert runner.batched_requests == 60
        assert runner.batches < 60  # requests were merged
        assert runner.queued() == 0 and runner.running == 0

    asyncio.run(scenario())


def test_a_full_batch_never_exceeds_max_batch_size(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    runner = Runner(_load(scale_onnx(tmp_path / "s.onnx", 3.0)), pool, BatchingConfig(max_batch_size=4,
                                                                                      max_delay_ms=50))
    sizes: list[int] = []
    predict = runner.evaluator.predict

    def spy(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(feed["x"].shape[0])
        return predict(feed)

    runner.evaluator.predict = spy  # type: ignore[method-assign]

    async def scenario() -> None:
        feeds = [{"x": np.full((1, 3), float(i), dtype=np.float32)} for i in range(10)]
        results = await asyncio.gather(*(_outputs(runner.run(f, _nothing)) for f in feeds))
        for feed, out in zip(feeds, results, strict=True):
            np.testing.assert_array_equal(out["y"], feed["x"] * 3)

    asyncio.run(scenario())
    assert max(sizes) <= 4 and sum(sizes) == 10 and len(sizes) < 10


def test_each_request_keeps_its_own_error(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    runner = Runner(_load(lookup_onnx(tmp_path / "lookup.onnx")), pool, BatchingConfig(max_batch_size=32,
                                                                                        max_delay_ms=50))

    async def scenario() -> None:
        feeds = [{"x": np.array([i % 3, (i + 1) % 3], dtype=np.int64)} for i in range(8)]
        feeds[5] = {"x": np.array([1, 7], dtype=np.int64)}  # 7 is outside the table
        results = await asyncio.gather(*(_outputs(runner.run(f, _nothing)) for f in feeds), return_exceptions=True)
        for i, (feed, out) in enumerate(zip(feeds, results, strict=True)):
            if i == 5:
                assert isinstance(out, Exception) and not isinstance(out, AssertionError)
            else:
                assert isinstance(out, dict), out
                np.testing.assert_array_equal(out["y"], (feed["x"] + 1) * 10.0)
        assert runner.batches < 8

    asyncio.run(scenario())


def test_labels_errors_stay_with_their_request(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    """A failure raised by the server's own adapter (a class index without a label) is isolated too."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["N"])
    path = save_graph(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "ident", [x], [y]),
                      tmp_path / "ident.onnx")
    evaluator = adapt(_load(path), ModelConfig(labels={"y": ("setosa", "versicolor", "virginica")}))
    runner = Runner(evaluator, pool, BatchingConfig(max_batch_size=32, max_delay_ms=50))

    async def scenario() -> None:
        feeds = [{"x": np.array([i % 3], dtype=np.int64)} for i in range(6)]
        feeds[2] = {"x": np.array([9], dtype=np.int64)}
        results = await asyncio.gather(*(_outputs(runner.run(f, _nothing)) for f in feeds), return_exceptions=True)
        assert isinstance(results[2], MlportError) and "no label" in str(results[2])
        assert [r["y"].tolist() for i, r in enumerate(results) if i != 2] == [
            ["setosa"], ["versicolor"], ["setosa"], ["versicolor"], ["virginica"]]

    asyncio.run(scenario())


def test_a_lone_request_on_an_idle_model_does_not_wait(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    runner = Runner(_load(scale_onnx(tmp_path / "s.onnx", 2.0)), pool, BatchingConfig(max_batch_size=64,
                                                                                      max_delay_ms=5000))

    async def scenario() -> None:
        for _ in range(5):
            started = time.monotonic()
            out = await _outputs(runner.run({"x": np.ones((1, 3), dtype=np.float32)}, _nothing))
            assert time.monotonic() - started < 2.5  # far below the 5 s bound: dispatched at once
            np.testing.assert_array_equal(out["y"], np.full((1, 3), 2.0))

    asyncio.run(scenario())


def test_the_delay_bound_holds_while_the_model_is_busy(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    """A request that finds every prediction slot taken still goes when its delay bound is reached."""
    runner = Runner(_load(heavy_onnx(tmp_path / "heavy.onnx")), pool,
                    BatchingConfig(max_batch_size=65_536, max_delay_ms=50), concurrency=1)

    async def scenario() -> None:
        # about 34 GFLOP: a second or more on one core, far beyond the 50 ms bound even on a fast machine
        long = asyncio.ensure_future(_outputs(runner.run({"x": np.ones((16_000, 256), dtype=np.float32)}, _nothing)))
        await until(lambda: runner.running == 1, timeout=10, what="the long batch to hold the only slot")
        started = time.monotonic()
        short = await _outputs(runner.run({"x": np.ones((1, 256), dtype=np.float32)}, _nothing))
        waited = time.monotonic() - started
        assert short["y"].shape == (1, 256)
        assert not long.done()  # it went on its own at its bound, without waiting for the slot
        assert waited >= 0.04
        assert (await long)["y"].shape == (16_000, 256)

    asyncio.run(scenario())


def test_models_without_a_batch_axis_are_never_merged(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    runner = Runner(_load(scaled_by_input_onnx(tmp_path / "k.onnx")), pool, BatchingConfig(max_batch_size=16))
    assert not runner.batching

    async def scenario() -> None:
        feeds = [{"x": np.full((1, 3), 1.0, dtype=np.float32), "k": np.array(float(i), dtype=np.float32)}
                 for i in range(6)]
        results = await asyncio.gather(*(_outputs(runner.run(f, _nothing)) for f in feeds))
        for i, out in enumerate(results):
            np.testing.assert_array_equal(out["y"], np.full((1, 3), float(i)))
        assert runner.batches == 0

    asyncio.run(scenario())


def test_mismatched_trailing_dims_are_never_merged(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    runner = Runner(_load(scale_onnx(tmp_path / "free.onnx", 2.0, shape=(None, None))), pool,
                    BatchingConfig(max_batch_size=64, max_delay_ms=50))

    async def scenario() -> None:
        feeds = [{"x": np.full((1, 3 + i % 2), float(i), dtype=np.float32)} for i in range(10)]
        results = await asyncio.gather(*(_outputs(runner.run(f, _nothing)) for f in feeds))
        for feed, out in zip(feeds, results, strict=True):
            np.testing.assert_array_equal(out["y"], feed["x"] * 2)
        assert runner.batches >= 2  # one batch per trailing shape at least

    sizes: list[tuple[int, ...]] = []
    predict = runner.evaluator.predict

    def spy(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(feed["x"].shape)
        return predict(feed)

    runner.evaluator.predict = spy  # type: ignore[method-assign]
    asyncio.run(scenario())
    assert {s[1] for s in sizes} == {3, 4} and all(len(s) == 2 for s in sizes)
    assert sum(s[0] for s in sizes) == 10
    # every batch ran as one prediction (none had to fall back to one call per request)
    assert len(sizes) == runner.batches < 10


def test_preferred_batch_sizes_cut_the_queue(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    runner = Runner(_load(scale_onnx(tmp_path / "s.onnx", 2.0)), pool,
                    BatchingConfig(max_batch_size=64, max_delay_ms=50, preferred_batch_sizes=(4,)))
    sizes: list[int] = []
    predict = runner.evaluator.predict

    def spy(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(feed["x"].shape[0])
        return predict(feed)

    runner.evaluator.predict = spy  # type: ignore[method-assign]

    async def scenario() -> None:
        feeds = [{"x": np.full((1, 3), float(i), dtype=np.float32)} for i in range(6)]
        results = await asyncio.gather(*(_outputs(runner.run(f, _nothing)) for f in feeds))
        for feed, out in zip(feeds, results, strict=True):
            np.testing.assert_array_equal(out["y"], feed["x"] * 2)

    asyncio.run(scenario())
    assert sizes[0] == 4 and sum(sizes) == 6


def test_quick_models_run_inline_slow_ones_on_the_pool(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    quick = Runner(_load(scale_onnx(tmp_path / "s.onnx", 2.0)), pool)
    slow = Runner(_load(heavy_onnx(tmp_path / "heavy.onnx", layers=24)), pool)

    async def scenario() -> None:
        x = np.ones((1, 3), dtype=np.float32)
        for _ in range(5):
            await _outputs(quick.run({"x": x}, _nothing))
        assert isinstance(quick.run({"x": x}, _nothing), dict)  # answered at once, on the loop
        big = {"x": np.ones((2000, 256), dtype=np.float32)}
        for _ in range(4):
            await _outputs(slow.run(big, _nothing))
        assert not isinstance(slow.run(big, _nothing), dict) or slow.inline(2000) is False

    asyncio.run(scenario())
    assert not slow.inline(2000)


# ---------------------------------------------------------------------------------------------- service
def _service(root: Path, threads: int = 2) -> tuple[ModelManager, InferenceService]:
    formats = default_registry()
    manager = ModelManager(Repository(root, formats), formats, Limits(), intra_op_threads=1)
    return manager, InferenceService(manager, Metrics(), Limits(), inference_threads=threads)


def test_a_retired_version_stays_open_while_its_merged_batch_runs(tmp_path: Path) -> None:
    root = tmp_path / "models"
    heavy_onnx(root / "h" / "1" / "model.onnx")
    (root / "h" / "model.yaml").write_text("batching: {max_batch_size: 64, max_delay_ms: 200}\n")

    async def scenario() -> None:
        manager, service = _service(root, threads=1)
        await manager.sync()
        v1 = manager.acquire("h")
        manager.release(v1)
        x = np.ones((400, 256), dtype=np.float32)
        # the first request takes the only slot; the others queue and merge while it runs
        calls = [asyncio.ensure_future(service.infer("h", None, InferenceRequest({"x": x * (i + 1)}), "test"))
                 for i in range(5)]
        await asyncio.sleep(0)  # one turn of the loop (no timed wait): every call takes hold of version 1
        assert v1.inflight >= len(calls)
        heavy_onnx(root / "h" / "2" / "model.onnx", layers=2)
        await manager.sync()
        assert manager.acquire("h").version == 2
        assert v1.retired
        if not all(c.done() for c in calls):
            assert not v1.closed  # requests (and their merged batch) still hold version 1
        answers = await asyncio.gather(*calls)
        assert all(a.model_version == "1" for a in answers)
        runner = v1.runners["serving_default"]
        assert runner.batches < 5
        await until(lambda: v1.closed, timeout=10, what="version 1 to close")
        assert v1.inflight == 0
        service.close()
        await manager.close()

    asyncio.run(scenario())


def test_service_timeout_releases_the_version_only_after_the_prediction(tmp_path: Path) -> None:
    root = tmp_path / "models"
    heavy_onnx(root / "h" / "1" / "model.onnx", layers=24)
    (root / "h" / "model.yaml").write_text("batching: {max_batch_size: 64, max_delay_ms: 1}\n")

    async def scenario() -> None:
        formats = default_registry()
        limits = Limits(inference_timeout_s=0.05)
        manager = ModelManager(Repository(root, formats), formats, limits, intra_op_threads=1)
        service = InferenceService(manager, Metrics(), limits, inference_threads=1)
        await manager.sync()
        lv = manager.acquire("h")
        manager.release(lv)
        x = np.ones((3000, 256), dtype=np.float32)
        with pytest.raises(MlportError) as info:
            await service.infer("h", None, InferenceRequest({"x": x}), "test")
        assert "longer than" in str(info.value)
        assert lv.inflight == 1  # the prediction still runs and holds its version
        await until(lambda: lv.inflight == 0, timeout=30, what="the prediction to let go of its version")
        service.close()
        await manager.close()

    asyncio.run(scenario())


def test_requested_outputs_and_signature_selection_with_batching(tmp_path: Path) -> None:
    root = tmp_path / "models"
    from tests.builders import iris_onnx

    iris_onnx(root / "iris" / "1" / "model.onnx")
    (root / "iris" / "model.yaml").write_text("batching: {max_batch_size: 32, max_delay_ms: 20}\n")
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)

    async def scenario() -> None:
        manager, service = _service(root)
        await manager.sync()
        reqs = [InferenceRequest({"input": x[i % 2: i % 2 + 1]}, outputs=["label"] if i % 2 else None)
                for i in range(10)]
        answers = await asyncio.gather(*(service.infer("iris", None, r, "test") for r in reqs))
        for i, a in enumerate(answers):
            assert list(a.outputs) == (["label"] if i % 2 else ["label", "probabilities"])
            assert a.outputs["label"].tolist() == ([2] if i % 2 else [0])
        with pytest.raises(InvalidInput, match="signature 'other'"):
            await service.infer("iris", None, InferenceRequest({"input": x}, parameters={"signature_name": "other"}),
                                "test")
        service.close()
        await manager.close()

    asyncio.run(scenario())


def test_every_request_reports_its_prediction_ended_once(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    """The hook that releases a request's model version runs once per request on every path."""
    lookup = _load(lookup_onnx(tmp_path / "lookup.onnx"))
    runners = [Runner(lookup, pool, BatchingConfig(max_batch_size=8, max_delay_ms=20)), Runner(lookup, pool)]
    calls: list[int] = []

    async def call(runner: Runner, feed: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        return await _outputs(runner.run(feed, lambda: calls.append(i)))  # an inline failure raises here

    async def scenario(runner: Runner) -> None:
        feeds = [{"x": np.array([7 if i == 3 else i % 3], dtype=np.int64)} for i in range(20)]
        for _ in range(2):  # the pool first, then (once measured as quick) inline
            results = await asyncio.gather(*(call(runner, f, i) for i, f in enumerate(feeds)), return_exceptions=True)
            assert sum(isinstance(r, Exception) for r in results) == 1

    for runner in runners:
        calls.clear()
        asyncio.run(scenario(runner))
        assert sorted(calls) == sorted(list(range(20)) * 2)


def test_merged_requests_count_one_execution_and_share_its_timing(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    from mlport.runtime.stats import ModelStats, Timing

    stats = ModelStats()
    runner = Runner(_load(scale_onnx(tmp_path / "s.onnx", 2.0)), pool, BatchingConfig(max_batch_size=64,
                                                                                       max_delay_ms=50), stats=stats)

    async def scenario() -> None:
        timings = [Timing() for _ in range(20)]
        submitted = time.perf_counter()
        await asyncio.gather(*(_outputs(runner.run({"x": np.ones((2, 3), np.float32)}, _nothing, t))
                               for t in timings))
        # one execution per batch run, whatever the number of requests it carried
        assert stats.execution_count == runner.batches < 20
        for t in timings:
            assert submitted <= t.started <= t.ended <= time.perf_counter()
        # the requests of one batch saw the same prediction
        assert len({(t.started, t.ended) for t in timings}) == runner.batches

    asyncio.run(scenario())
