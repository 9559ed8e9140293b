"""Soak and churn, run on demand: does a long run or many unload/load cycles leave anything behind?

    python bench/soak.py soak --duration 3600      # iris at c=64 for an hour (wrk); RSS every 5 s
    python bench/soak.py churn --cycles 10000      # unload + load of iris through the repository API

soak: one server serving iris (ONNX, batching on as in bench/run.py), driven by wrk at ``--concurrency`` (64)
for ``--duration`` seconds.  The server's resident set is sampled every 5 s; the report gives it after the
warm-up (the first ``--warmup`` seconds, default 10% of the run, at most 5 minutes), its peak and its last
value, the growth after warm-up, and wrk's requests and errors by kind: wrk's socket errors (connect, read, write,
timeout) and its non-2xx answers, these by the server's own request counter (``mlport_requests_total`` by
``status``, read from ``/metrics`` before and after the run) with the HTTP status each outcome is answered with.

churn: ``--cycles`` times ``POST /v2/repository/models/iris/unload`` then ``.../load`` (one inference between,
to prove the model serves), and the resident set (anonymous and file-backed), open file descriptors and threads
of the server at the start, after the first 5% of the cycles (warm-up), halfway and at the end; the report gives
the growth per cycle in each half after warm-up (a leak grows alike in both; a cache filling up or the
allocator settling grows less in the second).

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
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mlport.errors import ErrorCode
from mlport.protocols.http.errors import HTTP_STATUS

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


@dataclass(frozen=True)
class Counts:
    """What a process holds: resident set (bytes; anonymous and file-backed), open file descriptors, threads."""

    rss: int
    anon: int
    file: int
    fds: int
    threads: int


def process_counts(pid: int) -> Counts:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)

    def kb(key: str) -> int:
        return int(status.get(key, "0 kB").split()[0]) * 1024

    return Counts(kb("VmRSS"), kb("RssAnon"), kb("RssFile"), len(os.listdir(f"/proc/{pid}/fd")),
                  int(status["Threads"]))


def request_counts(url: str) -> dict[str, float]:
    """The server's inference requests so far by outcome (``mlport_requests_total`` summed over models, versions
    and protocols, by its ``status`` label: ``ok`` or an error code)."""
    counts: dict[str, float] = {}
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name != "mlport_requests":
            continue
        for sample in family.samples:
            if sample.name == "mlport_requests_total":
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0.0) + sample.value
    return counts


def http_status(outcome: str) -> str:
    """The HTTP status an outcome label is answered with ("ok": 200)."""
    if outcome == "ok":
        return "200"
    try:
        return str(HTTP_STATUS[ErrorCode(outcome)])
    except (ValueError, KeyError):
        return "?"


def error_kinds(result: dict[str, float], before: dict[str, float], after: dict[str, float]) -> list[str]:
    """The report's table of errors by kind: wrk's socket errors and the server's outcomes other than ok."""
    rows = [f"| socket: {kind} | | {result[kind]:,.0f} |" for kind in bench_run.SOCKET_ERRORS]
    rows.append(f"| non-2xx answers (wrk) | | {result['non2xx']:,.0f} |")
    served = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(after) | set(before))}
    rows += [f"| server: {k} | {http_status(k)} | {n:,.0f} |" for k, n in served.items() if n and k != "ok"]
    if not any(n for k, n in served.items() if k != "ok"):
        rows.append("| server: any outcome other than ok | | 0 |")
    rows.append(f"| (server: ok, not an error) | 200 | {served.get('ok', 0.0):,.0f} |")
    return ["| error kind | HTTP status | count |", "|---|---:|---:|", *rows]


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
        before = request_counts(server.url)
        sampler.start()
        result = bench_run.run_wrk(wrk, lua, url, body, args.concurrency, args.duration, bench_run.pinned_core())
        served = request_counts(server.url)
    finally:
        done.set()
        if sampler.is_alive():
            sampler.join()
        server.stop()
    held = [r for t, r in samples if t >= warmup] or [r for _, r in samples] or [0]
    return "\n".join([
        f"# mlport soak, {dt.datetime.now():%Y-%m-%d %H:%M}", "",
        f"- shared loaded 2-core machine (load average {os.getloadavg()[0]:.2f} at the end); wrk on the same machine",
        f"- iris (ONNX, batching on), c={args.concurrency}, {args.duration:g} s, warm-up {warmup:g} s", "",
        "| requests | req/s | p50 ms | p99 ms | errors | RSS after warm-up MB | peak MB | last MB | growth MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result['requests']:,.0f} | {result['rps']:,.0f} | {result['p50']:.2f} | {result['p99']:.2f} | "
        f"{result['errors']:.0f} | {held[0] / MB:.1f} | {max(held) / MB:.1f} | {held[-1] / MB:.1f} | "
        f"{(held[-1] - held[0]) / MB:+.1f} |", "",
        *error_kinds(result, before, served), "",
    ])


def churn_marks(cycles: int) -> dict[int, str]:
    """The cycles before which the server is measured: warm-up (5%), the halfway point, the end."""
    return {0: "start", max(1, cycles // 20): "after warm-up", cycles // 2: "half", cycles: "end"}


def churn(args: argparse.Namespace, root: Path) -> str:
    server = Server(repo(root), "--inference-threads", "2", log=root / "server.log")
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": bench_models.IRIS_ROW}]}
    wanted = churn_marks(args.cycles)
    marks: dict[str, Counts] = {}
    started = time.perf_counter()
    failures = 0
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(args.cycles + 1):
                if i in wanted:
                    marks[wanted[i]] = process_counts(server.proc.pid)
                if i == args.cycles:
                    break
                http.post("/v2/repository/models/iris/unload").raise_for_status()
                http.post("/v2/repository/models/iris/load").raise_for_status()
                if http.post("/v2/models/iris/infer", json=body).status_code != 200:
                    failures += 1
    finally:
        server.stop()
    seconds = time.perf_counter() - started
    return "\n".join([
        f"# mlport churn, {dt.datetime.now():%Y-%m-%d %H:%M}", "",
        f"- shared loaded 2-core machine (load average {os.getloadavg()[0]:.2f} at the end)",
        f"- {args.cycles} unload + load cycles of iris (ONNX) with one inference each, in {seconds:.0f} s; "
        f"failed inferences: {failures}", "", *churn_table(marks, wanted), "",
    ])


def churn_table(marks: dict[str, Counts], wanted: dict[int, str]) -> list[str]:
    """The measures at each mark, and the growth of the resident set per cycle in each half after warm-up."""
    rows = [f"| {name} ({i}) | {c.rss / MB:.2f} | {c.anon / MB:.2f} | {c.file / MB:.2f} | {c.fds} | {c.threads} |"
            for i, name in wanted.items() if (c := marks.get(name)) is not None]
    cycle = {name: i for i, name in wanted.items()}
    halves = []
    for a, b in (("after warm-up", "half"), ("half", "end")):
        if a in marks and b in marks and cycle[b] > cycle[a]:
            grown = marks[b].rss - marks[a].rss
            halves.append(f"- RSS from {a} to {b}: {grown / MB:+.2f} MB ({grown / (cycle[b] - cycle[a]):+.0f} "
                          "bytes per cycle)")
    return ["| when (cycle) | RSS MB | anonymous MB | file-backed MB | open fds | threads |",
            "|---|---:|---:|---:|---:|---:|", *rows, "", *halves]


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
