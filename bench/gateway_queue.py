"""The cost of a deployment's queue in the hub's gateway: the same deployment with and without limits.

    python bench/gateway_queue.py              # 10 s per point, c = 8, 64, rounds alternating the rows
    python bench/gateway_queue.py --quick      # 3 s per point

A hub on 127.0.0.1 serves the iris model with one replica (bench/gateway.py's set-up). wrk (one thread, pinned
to one core) sends iris OIP JSON through the gateway while the deployment's policy is, in turn:

- ``no limits``: no gate (the path every deployment took before the queue existed);
- ``gate, never full``: ``max_concurrency`` 256 per replica, ``max_queue`` 1024: every request passes the gate
  without waiting (what the gate itself costs);
- ``gate, 4 at once``: ``max_concurrency`` 4, ``max_queue`` 1024: beyond 4 requests in flight the rest wait in
  the gateway's queue instead of at the replica.

The rows alternate, ``--rounds`` times, each row first in turn, so the machine's load moves them alike; the
medians are reported.
Results go to ``bench/results/gateway-queue-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gateway as bench_gateway  # noqa: E402
import models as bench_models  # noqa: E402
import run as bench_run  # noqa: E402

ROWS: list[tuple[str, dict[str, Any]]] = [
    ("no limits", {"max_concurrency": None, "max_queue": None}),
    ("gate, never full", {"max_concurrency": 256, "max_queue": 1024}),
    ("gate, 4 at once", {"max_concurrency": 4, "max_queue": 1024}),
]


def measure(admin: httpx.Client, wrk: str, lua: Path, target: str, body: Any, levels: list[int], seconds: float,
            rounds: int) -> dict[tuple[str, int], list[dict[str, float]]]:
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for n in range(rounds):
        for label, policy in ROWS[n % len(ROWS):] + ROWS[:n % len(ROWS)]:  # each row first in turn
            admin.post(f"/api/v1/deployments/{bench_gateway.DEPLOYMENT}/scale", json=policy).raise_for_status()
            for c in levels:
                bench_run.run_wrk(wrk, lua, target, body, c, 1.0, bench_run.pinned_core())
                r = bench_run.run_wrk(wrk, lua, target, body, c, seconds, bench_run.pinned_core())
                results.setdefault((label, c), []).append(r)
                bench_run.log(f"round {n + 1} {label:17} c={c:<3} {r['rps']:9,.0f} req/s  p50 {r['p50']:7.2f} ms  "
                              f"p99 {r['p99']:7.2f} ms  errors {int(r['errors'])}")
    return results


def report(started: dt.datetime, seconds: float, rounds: int, levels: list[int],
           results: dict[tuple[str, int], list[dict[str, float]]], load: list[str]) -> str:
    lines = [f"# A deployment's queue in the hub's gateway, {started:%Y-%m-%d %H:%M}", "",
             f"- machine: {bench_run.cores()} cores ({bench_run.cpu_model()}), shared with other work (load average "
             "before / after: "
             f"{load[0]} / {load[-1]})",
             f"- wrk: 1 thread pinned to core {bench_run.pinned_core()}, {seconds:g} s per point after 1 s of "
             f"warm-up; iris OIP JSON; one replica; {rounds} rounds alternating the rows (each first in turn), medians",
             "", "| row | c | req/s | p50 ms | p99 ms | errors | ÷ no limits |", "|---|---:|---:|---:|---:|---:|---:|"]
    for c in levels:
        base = statistics.median(r["rps"] for r in results[("no limits", c)])
        for label, _ in ROWS:
            runs = results[(label, c)]
            rps = statistics.median(r["rps"] for r in runs)
            p50 = statistics.median(r["p50"] for r in runs)
            p99 = statistics.median(r["p99"] for r in runs)
            errors = sum(int(r["errors"]) for r in runs)
            ratio = f"{rps / base:.2f}x" if base else ""
            lines.append(f"| {label} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s per point")
    parser.add_argument("--seconds", type=float, help="seconds per point (default 10, quick 3)")
    parser.add_argument("--levels", default="8,64", help="concurrency levels (default 8,64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds alternating the rows (default 3)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    levels = [int(c) for c in args.levels.split(",")]
    rounds = max(1, min(args.rounds, 20))
    started = dt.datetime.now()
    wrk = bench_run.ensure_wrk()
    cache = bench_run.CACHE
    model = bench_models.build(cache / "models")["iris"]
    body = bench_models.write_bodies(cache / "bodies")["iris-json"]
    lua = cache / "gateway.lua"
    lua.write_text(bench_gateway.LUA)
    load = [bench_run.load_average()]
    with tempfile.TemporaryDirectory(prefix="mlport-bench-hub-") as tmp, \
            bench_gateway.hub_process(Path(tmp)) as (url, _proc):
        admin, token, _direct = bench_gateway.set_up(url, model)
        os.environ["BENCH_AUTH"] = "Bearer " + token
        target = f"{url}/deployments/{bench_gateway.DEPLOYMENT}/v2/models/{bench_gateway.DEPLOYMENT}/infer"
        results = measure(admin, wrk, lua, target, body, levels, seconds, rounds)
    load.append(bench_run.load_average())
    text = report(started, seconds, rounds, levels, results, load)
    bench_run.RESULTS.mkdir(exist_ok=True)
    out = bench_run.RESULTS / f"gateway-queue-{started:%Y-%m-%d-%H%M}{'-quick' if args.quick else ''}.md"
    out.write_text(text)
    print(text)
    bench_run.log(f"written to {out.relative_to(bench_run.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
