"""What drift watching and outlier scores cost a server: iris throughput and latency with the watch off, with
drift on, and with drift and outlier scores on.

    python bench/drift.py                        # 64 clients, 20000 requests per setting
    python bench/drift.py --clients 16 --requests 5000

The iris model (4 FP32 inputs, a label and 3 probabilities out) gets a reference profile from the iris data
(``mlport profile``); each setting is one ``mlport serve`` with its own model.yaml, sent the same requests
(one row each, OIP v2 JSON) by ``--clients`` concurrent clients in a bounded loop, to 127.0.0.1 only, after a
warm-up. The drift window is 1000 rows, its figures recomputed every second. Results go to stdout and to
``bench/results/<date>-drift.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import iris_onnx
from requestlog import serve_mlport

FIELDS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SETTINGS = {
    "off": "drift: {enabled: false}\n",
    "drift": "drift: {window_rows: 1000, interval_s: 1}\n",
    "drift + outliers": "drift: {window_rows: 1000, interval_s: 1}\noutliers: true\n",
}


def _model(root: Path) -> Path:
    from sklearn.datasets import load_iris

    folder = root / "iris"
    iris_onnx(folder / "1" / "model.onnx")
    fields = ", ".join(f"{n}: {i}" for i, n in enumerate(FIELDS))
    (folder / "model.yaml").write_text(f"fields:\n  input: {{{fields}}}\n")
    data = root / "iris.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        w.writerows(load_iris().data.tolist())
    subprocess.run([sys.executable, "-m", "mlport.cli.main", "profile", str(data), "--model", str(folder), "-o",
                    str(folder / "profile.json")], check=True, capture_output=True)
    return folder


async def _load(url: str, clients: int, requests: int, rows: np.ndarray) -> tuple[float, list[float]]:
    bodies = [{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": r.tolist()}]} for r in rows]
    latencies: list[float] = []
    left = requests

    async def client(c: httpx.AsyncClient, k: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            r = await c.post(url, json=bodies[(left + k) % len(bodies)])
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        started = time.perf_counter()
        await asyncio.gather(*(client(c, k) for k in range(clients)))
        return time.perf_counter() - started, latencies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=20_000)
    args = p.parse_args(argv)
    from sklearn.datasets import load_iris

    rows = load_iris().data.astype(np.float32)
    lines = [f"# Drift watch overhead ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
             f"c={args.clients}, {args.requests} one-row requests per setting)", "",
             "| setting | requests/s | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = _model(Path(tmp))
        for name, yaml in SETTINGS.items():
            base = (folder / "model.yaml").read_text().split("drift:")[0]
            (folder / "model.yaml").write_text(base + yaml)
            proc, url = serve_mlport(folder, [], Path(tmp))
            try:
                infer = url + "/v2/models/iris/infer"
                asyncio.run(_load(infer, args.clients, min(2000, args.requests), rows))  # warm-up
                seconds, lat = asyncio.run(_load(infer, args.clients, args.requests, rows))
            finally:
                proc.terminate()
                proc.wait(30)
            q = statistics.quantiles(lat, n=100)
            lines.append(f"| {name} | {args.requests / seconds:,.0f} | {q[49] * 1000:.2f} | {q[98] * 1000:.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}-drift.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
