"""mlport against the floor, side by side: the runtime-vs-floor ratio measured in alternating rounds.

    python bench/floor_pair.py                  # 2 workers each, c=64, 5 rounds of 8 s
    python bench/floor_pair.py --workers 1 --concurrency 1 --rounds 3

bench/run.py measures each server once, one after another; on a small virtual machine whose speed drifts by a
third within minutes, two such figures taken minutes apart can differ more than the servers do.  Here mlport
(``mlport serve`` with adaptive batching, as in bench/run.py) and the floor (bench/peers/floor.py under uvicorn)
both serve the iris model for the whole run, and wrk (one thread, pinned to one core) drives them in turn, each
first in every other round, so the machine's drift moves both alike.  Each round reports req/s, p50, and the
server CPU per request: the user and system time of every process of the server's session (its workers too)
over the round, divided by the requests wrk counted.  The ratio of the medians and the median of the per-round
ratios are printed and written to ``bench/results/floor-pair-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402
import run as bench_run  # noqa: E402

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def stat_cpu(text: str) -> tuple[int, float]:
    """``(session id, user + system seconds)`` of one ``/proc/PID/stat`` line, with those of its children that
    ended and were waited for (so a worker that ends during a round still counts).  The name may hold spaces and
    parentheses: the fields are counted after its last ``)``."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[3]), sum(int(f) for f in fields[11:15]) * _TICK_S


def session_cpu(session: int) -> float:
    """CPU seconds used so far by the processes of one session (a server started in a session of its own)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            sid, seconds = stat_cpu(Path(entry.path, "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if sid == session:
            total += seconds
    return total


def measure(wrk: str, lua: Path, running: bench_run.Running, body: tuple[Path, int | None], concurrency: int,
            seconds: float) -> dict[str, float]:
    url = f"http://127.0.0.1:{running.port}/v2/models/iris/infer"
    before, started = session_cpu(running.proc.pid), time.monotonic()
    r = bench_run.run_wrk(wrk, lua, url, body, concurrency, seconds, bench_run.pinned_core())
    used, elapsed = session_cpu(running.proc.pid) - before, time.monotonic() - started
    r["cpu_us"] = 1e6 * used / r["requests"] if r["requests"] else float("nan")
    r["cores"] = used / elapsed
    return r


def report(args: argparse.Namespace, rounds: list[dict[str, dict[str, float]]], started: dt.datetime) -> str:
    med = {name: {key: statistics.median(r[name][key] for r in rounds) for key in ("rps", "p50", "cpu_us")}
           for name in ("mlport", "floor")}
    ratios = [r["mlport"]["rps"] / r["floor"]["rps"] for r in rounds if r["floor"]["rps"]]
    lines = [f"# mlport and the floor side by side, {started:%Y-%m-%d %H:%M}", "",
             f"{bench_run.cpu_model()}, {bench_run.cores()} cores; iris OIP JSON; {args.workers} worker(s) each; "
             f"c={args.concurrency}; {len(rounds)} alternating rounds of {args.seconds:g} s; wrk with one thread "
             f"pinned to one core; load average before: {args.load}", "",
             "| round | mlport req/s | p50 ms | CPU us/req | floor req/s | p50 ms | CPU us/req | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(rounds):
        m, f = r["mlport"], r["floor"]
        lines.append(f"| {i + 1} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['cpu_us']:.0f} | {f['rps']:,.0f} | "
                     f"{f['p50']:.2f} | {f['cpu_us']:.0f} | {m['rps'] / f['rps']:.2f}x |")
    m, f = med["mlport"], med["floor"]
    lines += [f"| median | {m['rps']:,.0f} | {m['p50']:.2f} | {m['cpu_us']:.0f} | {f['rps']:,.0f} | "
              f"{f['p50']:.2f} | {f['cpu_us']:.0f} | {statistics.median(ratios):.2f}x |", "",
              f"Per-round ratios {min(ratios):.2f}x-{max(ratios):.2f}x; server CPU per request "
              f"{m['cpu_us'] / f['cpu_us']:.2f}x the floor's (medians); errors: "
              f"{sum(int(r[n]['errors']) for r in rounds for n in r)}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="workers of each server (default 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk's connections (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement (default 8)")
    args = parser.parse_args(argv)
    args.load = bench_run.load_average()
    started = dt.datetime.now()
    wrk = bench_run.ensure_wrk()
    paths = {"iris": bench_models.build(bench_run.CACHE / "models")["iris"]}
    bodies = bench_models.write_bodies(bench_run.CACHE / "bodies")
    lua = bench_run.CACHE / "body.lua"
    lua.write_text(bench_run.WRK_LUA)
    scratch = bench_run.CACHE / "pair"
    scratch.mkdir(parents=True, exist_ok=True)
    specs = {"mlport": bench_run.ServerSpec("mlport", args.workers, "mlport", {}, batching=True),
             "floor": bench_run.ServerSpec("floor", args.workers, "floor", {})}
    running: dict[str, bench_run.Running] = {}
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        for name, spec in specs.items():
            bench_run.log(f"starting {name}")
            running[name] = bench_run.start(spec, paths, bodies, scratch)
            measure(wrk, lua, running[name], bodies["iris-json"], args.concurrency, 2.0)  # warm-up
        for i in range(args.rounds):
            order = ("mlport", "floor") if i % 2 == 0 else ("floor", "mlport")
            rounds.append({})
            for name in order:
                r = rounds[-1][name] = measure(wrk, lua, running[name], bodies["iris-json"], args.concurrency,
                                               args.seconds)
                bench_run.log(f"round {i + 1} {name:6} {r['rps']:10,.0f} req/s  p50 {r['p50']:6.2f} ms  "
                              f"{r['cpu_us']:5.0f} us CPU/req ({r['cores']:.2f} cores)  errors {int(r['errors'])}")
    finally:
        for one in running.values():
            bench_run.stop(one)
    text = report(args, rounds, started)
    out = bench_run.RESULTS / f"floor-pair-{started:%Y-%m-%d-%H%M}.md"
    bench_run.RESULTS.mkdir(exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
