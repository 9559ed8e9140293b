"""Many small models on one server: lazy loading and a memory budget under a Zipf request stream.

    python bench/cache.py                          # 1000 models, 2000 requests
    python bench/cache.py --models 200 --requests 500

It generates N small ONNX models (y = x * sum(w) with a weight vector, so each file has a size), serves them
with ``mlport serve --lazy``, and measures:

- start to ready with every model lazy, and how long ``GET /models`` takes;
- a calibration: the median memory the server measures for one model (``memory_bytes`` in the index);
- then, on a second server with ``--memory-budget`` set to hold about ``--hold`` (50) of them, a Zipf
  stream (exponent ``--zipf``) sent one request at a time; before each request ``/v2/models/{m}/ready``
  says whether the model is loaded (a hit) or not (a miss: the request waits for its load).  It reports
  hit and miss latency p50/p99, the cold-load histogram, evictions, and the server's resident set over time
  (sampled every 0.25 s from ``/proc/<pid>/status``) against the base (after the first load, which brings
  in onnxruntime) plus the budget;
- the same stream through the model manager alone in this process (no HTTP, no metrics), whose resident set
  growth is read after every request: the manager's own accounting, apart from the server's per-model
  bookkeeping (the metric series of the loaded models, and a few series per model ever loaded: its loads,
  evictions and loaded state), which the server's figures include.

The same stream then goes to MLServer's multi-model serving (pinned in ``bench/run.py``, in its own virtual
environment, with the ONNX runtime of ``bench/peers/mlserver_onnx.py``), which loads every model at start:
its start to ready, resident set (the whole process tree) and latency are reported beside mlport's
(``--no-peer`` skips it).

Requests go to 127.0.0.1 only, in a bounded loop.  Results go to ``bench/results/cache-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import PEERS, ensure_venv, package_version  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_models(root: Path, count: int, weights: int) -> None:
    """``count`` models ``m0000...``, each y = x * sum(w) with ``weights`` float32 weights (x: [N, 4])."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    rng = np.random.default_rng(0)
    for i in range(count):
        w = helper.make_tensor("w", TensorProto.FLOAT, [weights], rng.standard_normal(weights).astype(np.float32)
                               .tobytes(), raw=True)
        nodes = [helper.make_node("ReduceSum", ["w"], ["s"], keepdims=0), helper.make_node("Mul", ["x", "s"], ["y"])]
        graph = helper.make_graph(nodes, f"m{i}", [x], [y], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        folder = root / f"m{i:04d}" / "1"
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(folder / "model.onnx"))


def rss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(found[1]) * 1024 if found else 0


class Server:
    def __init__(self, root: Path, *args: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mlport.cli.main", "serve", str(root), "--http-port", str(self.port),
               "--grpc-port", "0", "--poll-interval", "0", "--log-level", "warning", *args]
        self.started = time.perf_counter()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        else:
            self.stop()
            raise RuntimeError("server not ready after 120 s")
        self.ready_s = time.perf_counter() - self.started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def tree_rss(pid: int) -> int:
    """The resident set of ``pid`` and its descendants (MLServer may start helper processes)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            children = []
        todo.extend(int(c) for c in children)
    return total


def mlserver_stream(root: Path, names: list[str], stream: np.ndarray, body: Any,
                    client: httpx.Client, work: Path) -> dict[str, Any]:
    """Serve every model with MLServer (each loaded at start), then send the same stream one at a time."""
    venv = ensure_venv("mlserver")
    folder = work / "mlserver"
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_onnx.OnnxModel",
            "parameters": {"uri": str(root / name / "1" / "model.onnx"), "extra": {"intra_op_threads": 1}}}))
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
        "host": "127.0.0.1", "debug": False}))
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(PEERS)}
    started = time.perf_counter()
    with (work / "mlserver.log").open("wb") as out:
        proc = subprocess.Popen([str(venv / "bin" / "mlserver"), "start", str(folder)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=PEERS, env=env)
    try:
        deadline = time.monotonic() + 1800
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MLServer did not get ready:\n{(work / 'mlserver.log').read_text()[-2000:]}")
            try:
                rows = client.post(url + "/v2/repository/index", json={}).json()
                if sum(1 for r in rows if r.get("state") == "READY") == len(names):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        ready_s = time.perf_counter() - started
        at_ready = tree_rss(proc.pid)
        took: list[float] = []
        failures = 0
        for i in stream:
            t = time.perf_counter()
            answer = client.post(f"{url}/v2/models/{names[i]}/infer", json=body)
            if answer.status_code != 200:
                failures += 1
                continue
            took.append((time.perf_counter() - t) * 1000)
        return {"ready_s": ready_s, "rss": at_ready, "end_rss": tree_rss(proc.pid), "p50": pct(took, 50),
                "p99": pct(took, 99), "failures": failures,
                "version": package_version(venv / "bin" / "python", "mlserver")}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def calibrate(root: Path, log_dir: Path, names: list[str], client: httpx.Client, body: Any) -> tuple[
        float, float, int]:
    """Start-to-ready and ``/models`` time with every model lazy, and the median memory of one model."""
    server = Server(root, "--lazy", log=log_dir / "calibrate.log")
    try:
        started = time.perf_counter()
        listing = client.get(server.url + "/models")
        models_ms = (time.perf_counter() - started) * 1000
        assert listing.status_code == 200 and len(listing.json()["models"]) == len(names)
        for name in names[:10]:
            client.post(f"{server.url}/v2/models/{name}/infer", json=body).raise_for_status()
        rows = client.post(server.url + "/v2/repository/index", json={}).json()
        sizes = [int(r["memory_bytes"]) for r in rows if r["state"] == "READY"]
        return server.ready_s, models_ms, int(statistics.median(sizes))
    finally:
        server.stop()


def manager_only(root: Path, names: list[str], stream: np.ndarray, budget: int) -> tuple[int, int]:
    """The same stream through the model manager alone, in this process (no HTTP, no metrics): the peak growth of
    the resident set over its value after the first load (read after every request), and the memory the
    manager counts for its loaded models at the end.  It tells the manager's own accounting from the server's
    per-model bookkeeping (metric series...)."""
    import asyncio

    from mlport.formats.registry import default_registry
    from mlport.runtime.cache import resident_bytes
    from mlport.runtime.manager import ColdModel, ModelManager
    from mlport.runtime.repository import Repository

    async def run() -> tuple[int, int]:
        formats = default_registry()
        manager = ModelManager(Repository(root, formats), formats, lazy=True, memory_budget=budget,
                               max_concurrent_loads=1)
        await manager.sync()

        async def use(name: str) -> None:
            try:
                lv = manager.acquire(name)
            except ColdModel:
                lv = await manager.acquire_cold(name)
            manager.release(lv)

        await use(names[int(stream[0])])
        todo = [names[i] for i in stream.tolist()]
        growth = [0] * len(todo)
        base = resident_bytes()
        for k, name in enumerate(todo):  # nothing else allocates in this loop
            await use(name)
            growth[k] = resident_bytes() - base
        counted = sum(v.memory_bytes for st in manager.all_status() for v in st.versions)
        await manager.close()
        return max(growth), counted

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--weights", type=int, default=32_768, help="float32 weights per model (file size / 4)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--hold", type=int, default=50, help="models the budget should hold")
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--no-peer", action="store_true", help="skip MLServer")
    args = ap.parse_args(argv)
    if not 1 <= args.models <= 10_000 or not 1 <= args.requests <= 100_000:
        ap.error("--models 1..10000, --requests 1..100000")

    with tempfile.TemporaryDirectory(prefix="mlport-cache-bench-") as tmp:
        root, log_dir = Path(tmp) / "repo", Path(tmp)
        t0 = time.perf_counter()
        build_models(root, args.models, args.weights)
        print(f"built {args.models} models in {time.perf_counter() - t0:.1f} s", flush=True)
        names = sorted(p.name for p in root.iterdir())
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}
        client = httpx.Client(timeout=120)
        ready_s, models_ms, one = calibrate(root, log_dir, names, client, body)
        budget = one * args.hold
        print(f"lazy start {ready_s:.2f} s, /models {models_ms:.1f} ms, one model {one / 2**20:.2f} MiB; "
              f"budget {budget / 2**20:.1f} MiB", flush=True)

        rng = np.random.default_rng(1)
        ranks = np.arange(1, args.models + 1, dtype=np.float64)
        p = ranks ** -args.zipf
        order = rng.permutation(args.models)  # which model has which popularity
        stream = order[rng.choice(args.models, size=args.requests, p=p / p.sum())]

        server = Server(root, "--lazy", "--memory-budget", str(budget), "--max-concurrent-loads", "1",
                        log=log_dir / "budget.log")
        at_ready = rss(server.proc.pid)
        # the runtime's own base includes the format's library, which the first load brings in
        client.post(f"{server.url}/v2/models/{names[order[0]]}/infer", json=body).raise_for_status()
        base = rss(server.proc.pid)
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.perf_counter() - server.started, rss(server.proc.pid)))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        hits: list[float] = []
        misses: list[float] = []
        failures = 0
        try:
            for i in stream:
                name = names[i]
                loaded = client.get(f"{server.url}/v2/models/{name}/ready").status_code == 200
                started = time.perf_counter()
                answer = client.post(f"{server.url}/v2/models/{name}/infer", json=body)
                took = (time.perf_counter() - started) * 1000
                if answer.status_code != 200:
                    failures += 1
                    continue
                (hits if loaded else misses).append(took)
            metrics = client.get(server.url + "/metrics").text
            end_rss = rss(server.proc.pid)
        finally:
            done.set()
            sampler.join()
            server.stop()
        peer = None if args.no_peer else mlserver_stream(root, names, stream, body, client, log_dir)
        alone_peak, alone_counted = manager_only(root, names, stream, budget)

    peak = max(r for _, r in samples)
    distinct = len(set(stream.tolist()) | {order[0]})
    loaded = int(metric(metrics, "mlport_loaded_model_bytes"))
    evictions = sum(float(v) for v in re.findall(r"^mlport_model_evictions_total\{[^}]*\} (\S+)$", metrics, re.M))
    cold_n = metric(metrics, "mlport_cold_load_seconds_count")
    cold_mean = metric(metrics, "mlport_cold_load_seconds_sum") / cold_n * 1000 if cold_n else float("nan")
    lines = [
        f"# Lazy loading and a memory budget, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (shared with other "
        "work: figures are indicative, latencies especially).",
        f"{args.models} ONNX models of {args.weights * 4 / 1024:.0f} KiB of weights; {args.requests} requests "
        f"one at a time, Zipf exponent {args.zipf}; budget {budget / 2**20:.1f} MiB (= {args.hold} x the "
        f"median measured memory of one model, {one / 2**20:.2f} MiB).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| start to ready, every model lazy | {ready_s:.2f} s |",
        f"| GET /models with {args.models} models | {models_ms:.1f} ms |",
        f"| hits / misses / failures | {len(hits)} / {len(misses)} / {failures} |",
        f"| hit latency p50 / p99 | {pct(hits, 50):.2f} / {pct(hits, 99):.2f} ms |",
        f"| miss latency p50 / p99 (the request waits for the load) | {pct(misses, 50):.1f} / "
        f"{pct(misses, 99):.1f} ms |",
        f"| cold loads, mean (server's histogram) | {cold_n:.0f}, {cold_mean:.1f} ms |",
        f"| evictions | {evictions:.0f} |",
        f"| loaded at the end | {metric(metrics, 'mlport_loaded_models'):.0f} models, "
        f"{metric(metrics, 'mlport_loaded_model_bytes') / 2**20:.1f} MiB (measured) |",
        f"| server RSS at ready / after the first load (base: runtime + onnxruntime + one model) | "
        f"{at_ready / 2**20:.0f} / {base / 2**20:.0f} MiB |",
        f"| server RSS peak / end | {peak / 2**20:.0f} / {samples[-1][1] / 2**20:.0f} MiB |",
        f"| peak RSS within base + budget ({(base + budget) / 2**20:.0f} MiB) | "
        f"{'yes' if peak <= base + budget else 'NO'} |",
        f"| at the end: RSS - base - loaded models' bytes, over the {distinct} models served | "
        f"{(end_rss - base - loaded) / 2**20:.1f} MiB ({(end_rss - base - loaded) / max(1, distinct) / 1024:.1f} "
        "KiB per model) |",
        f"| the model manager alone (same stream, in process): peak RSS growth / counted at the end | "
        f"{alone_peak / 2**20:.2f} / {alone_counted / 2**20:.2f} MiB (budget {budget / 2**20:.2f} MiB: "
        f"{'within' if alone_peak <= budget else 'ABOVE'}) |",
        "",
        *_peer_lines(peer, ready_s, hits + misses, peak),
        "RSS over time (s, MiB), every 20th sample:",
        "",
        "    " + "  ".join(f"{t:.0f}:{r / 2**20:.0f}" for t, r in samples[::20]),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    out = HERE / "results" / f"cache-{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}.md"
    out.write_text(report)
    print(f"written to {out}")
    return 0


def _peer_lines(peer: dict[str, Any] | None, ready_s: float, took: list[float], peak: int) -> list[str]:
    if peer is None:
        return []
    return [
        f"The same stream against MLServer {peer['version']} (multi-model serving: every model loaded at start, "
        "one process, parallel_workers 0):",
        "",
        "| figure | mlport (lazy, budget) | MLServer (all loaded) |",
        "|---|---|---|",
        f"| start to ready | {ready_s:.2f} s | {peer['ready_s']:.1f} s |",
        f"| resident set (mlport: peak; MLServer: at ready / end) | {peak / 2**20:.0f} MiB | "
        f"{peer['rss'] / 2**20:.0f} / {peer['end_rss'] / 2**20:.0f} MiB |",
        f"| latency p50 / p99, every request | {pct(took, 50):.2f} / {pct(took, 99):.2f} ms | "
        f"{peer['p50']:.2f} / {peer['p99']:.2f} ms |",
        f"| failures | - | {peer['failures']:.0f} |",
        "",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
