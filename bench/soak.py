"""Soak and churn, run on demand: does a long run or many unload/load cycles leave anything behind?

    python bench/soak.py soak --duration 3600      # iris at c=64 for an hour (wrk); RSS every 5 s
    python bench/soak.py churn --cycles 10000      # unload + load of iris through the repository API

soak: one server serving iris (ONNX, batching on as in bench/run.py), driven by wrk at ``--concurrency`` (64)
for ``--duration`` seconds.  The server's resident set is sampled every 5 s; the report gives it after the
warm-up (the first ``--warmup`` seconds, default 10% of the run, at most 5 minutes), its peak and its last
value, the growth after warm-up, and wrk's requests and errors (non-2xx answers and socket errors).

churn: ``--cycles`` times ``POST /v2/repository/models/iris/unload`` then ``.../load`` (one inference between,
to prove the model serves), and the resident set, open file descriptors and threads of the server after the
first 5% of the cycles and at the end.

Requests go to 127.0.0.1 only, in bounded loops.  Results go to ``bench/results/soak-<date>.md`` or
``churn-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402
import run as bench_run  # noqa: E402
from cache import Server, rss  # noqa: E402
from overload import write_result  # noqa: E402

MB = 2**20


def repo(root: Path) -> Path:
    iris = bench_models.build(bench_run.CACHE / "models")["iris"]
    folder = root / "iris" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(iris, folder / "model.onnx")
    (root / "iris" / "model.yaml").write_text("options: {intra_op_threads: 1}\n"
                                              "batching: {max_batch_size: 64, max_delay_ms: 2}\n")
    return root


def process_counts(pid: int) -> tuple[int, int, int]:
    """Resident set (bytes), open file descriptors and threads of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("Threads:"))
    return rss(pid), fds, threads


def soak(args: argparse.Namespace, root: Path) -> str:
    warmup = args.warmup if args.warmup is not None else min(300.0, args.duration / 10)
    server = Server(repo(root), "--inference-threads", "2", log=root / "server.log")
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not done.wait(5.0):
            samples.append((time.monotonic() - started, rss(server.proc.pid)))

    sampler = threading.Thread(target=sample)
    try:
        wrk = bench_run.ensure_wrk()
        lua = root / "body.lua"
        lua.write_text(bench_run.WRK_LUA)
        body = bench_models.write_bodies(root / "bodies")["iris-json"]
        url = f"{server.url}/v2/models/iris/infer"
        sampler.start()
        result = bench_run.run_wrk(wrk, lua, url, body, args.concurrency, args.duration, bench_run.pinned_core())
    finally:
        done.set()
        if sampler.is_alive():
            sampler.join()
        server.stop()
    after = [r for t, r in samples if t >= warmup] or [r for _, r in samples] or [0]
    return "\n".join([
        f"# mlport soak, {dt.datetime.now():%Y-%m-%d %H:%M}", "",
        f"- shared loaded 2-core machine (load average {os.getloadavg()[0]:.2f} at the end); wrk on the same machine",
        f"- iris (ONNX, batching on), c={args.concurrency}, {args.duration:g} s, warm-up {warmup:g} s", "",
        "| requests | req/s | p50 ms | p99 ms | errors | RSS after warm-up MB | peak MB | last MB | growth MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result['requests']:,.0f} | {result['rps']:,.0f} | {result['p50']:.2f} | {result['p99']:.2f} | "
        f"{result['errors']:.0f} | {after[0] / MB:.1f} | {max(after) / MB:.1f} | {after[-1] / MB:.1f} | "
        f"{(after[-1] - after[0]) / MB:+.1f} |", "",
    ])


def churn(args: argparse.Namespace, root: Path) -> str:
    server = Server(repo(root), "--inference-threads", "2", log=root / "server.log")
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": bench_models.IRIS_ROW}]}
    marks: dict[str, tuple[int, int, int]] = {"start": process_counts(server.proc.pid)}
    started = time.perf_counter()
    failures = 0
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(args.cycles):
                if i == max(1, args.cycles // 20):
                    marks["after warm-up"] = process_counts(server.proc.pid)
                http.post("/v2/repository/models/iris/unload").raise_for_status()
                http.post("/v2/repository/models/iris/load").raise_for_status()
                if http.post("/v2/models/iris/infer", json=body).status_code != 200:
                    failures += 1
        marks["end"] = process_counts(server.proc.pid)
    finally:
        server.stop()
    seconds = time.perf_counter() - started
    rows = [f"| {name} | {r / MB:.1f} | {fds} | {threads} |" for name, (r, fds, threads) in marks.items()]
    return "\n".join([
        f"# mlport churn, {dt.datetime.now():%Y-%m-%d %H:%M}", "",
        f"- shared loaded 2-core machine (load average {os.getloadavg()[0]:.2f} at the end)",
        f"- {args.cycles} unload + load cycles of iris (ONNX) with one inference each, in {seconds:.0f} s; "
        f"failed inferences: {failures}", "",
        "| when | RSS MB | open fds | threads |", "|---|---:|---:|---:|", *rows, "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("soak", help="iris at a steady load for a long time")
    s.add_argument("--duration", type=float, default=3600.0, help="seconds (default 3600)")
    s.add_argument("--warmup", type=float, help="seconds left out of the growth (default 10%%, at most 300)")
    s.add_argument("--concurrency", type=int, default=64)
    c = sub.add_parser("churn", help="unload/load cycles")
    c.add_argument("--cycles", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"mlport-{args.what}-") as tmp:
        text = soak(args, Path(tmp)) if args.what == "soak" else churn(args, Path(tmp))
    write_result(args.what, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
