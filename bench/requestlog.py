"""What request logging costs: iris throughput at c=64 with the request log off, and on at 100% sampling with
every tensor to a file sink (JSON Lines, and Parquet).

    python bench/requestlog.py                 # 15 s per point, 3 rounds
    python bench/requestlog.py --seconds 5 --rounds 1

Each round runs every setting once, one after another (off, jsonl, parquet), so that a change of the machine's
load hits every setting alike; the table gives each setting's median over the rounds, and the drops the server
counted (``mlport_log_dropped_total``; at 100% sampling a drop is a request that was not logged).
Results go to ``bench/results/requestlog-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402
import run as bench_run  # noqa: E402

SETTINGS: dict[str, list[str]] = {
    "off": [],
    "jsonl": ["--request-log", "{logs}", "--request-log-format", "jsonl"],
    "parquet": ["--request-log", "{logs}", "--request-log-format", "parquet"],
}


def _serve(model: Path, args: list[str], scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = bench_run.free_port()
    cmd = [sys.executable, "-m", "mlport.cli.main", "serve", str(model), "--http-port", str(port), "--grpc-port", "0",
           "--name", "iris", *args]
    log = (scratch / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + bench_run.START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"mlport did not start: see {log.name}")


def _dropped(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlport_log_dropped_total{"))


def _point(model: Path, setting: str, scratch: Path, wrk: str, lua: Path, body: tuple[Path, int | None],
           seconds: float) -> dict[str, float]:
    logs = scratch / f"logs-{setting}-{time.monotonic_ns()}"
    args = [a.replace("{logs}", str(logs)) for a in SETTINGS[setting]]
    proc, url = _serve(model, args, scratch)
    try:
        bench_run.run_wrk(wrk, lua, url + "/v2/models/iris/infer", body, 64, 2, bench_run.pinned_core())  # warm-up
        result = bench_run.run_wrk(wrk, lua, url + "/v2/models/iris/infer", body, 64, seconds,
                                   bench_run.pinned_core())
        result["dropped"] = _dropped(url)
    finally:
        proc.terminate()
        proc.wait(60)
    result["bytes"] = float(sum(p.stat().st_size for p in logs.glob("*"))) if logs.exists() else 0.0
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    wrk = bench_run.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="mlport-bench-log-") as tmp:
        scratch = Path(tmp)
        model = bench_models.iris_onnx(scratch / "iris.onnx")
        bodies = bench_models.write_bodies(scratch)
        lua = scratch / "post.lua"
        lua.write_text(bench_run.WRK_LUA)
        points: dict[str, list[dict[str, float]]] = {s: [] for s in SETTINGS}
        for round_ in range(args.rounds):
            for setting in SETTINGS:
                r = _point(model, setting, scratch, wrk, lua, bodies["iris-json"], args.seconds)
                bench_run.log(f"round {round_ + 1} {setting}: {r['rps']:.0f} req/s p99 {r['p99']:.1f} ms "
                              f"dropped {r['dropped']:.0f}")
                points[setting].append(r)
    base = statistics.median(p["rps"] for p in points["off"])
    lines = [
        f"# Request logging overhead, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"iris (ONNX), OIP JSON, one row per request, wrk c=64, {args.seconds:g} s per point, {args.rounds} rounds "
        f"(median); 1 mlport worker. Machine: {bench_run.cores()} cores, shared and loaded (load average "
        f"{bench_run.load_average()}): figures move between runs; compare the settings of one run.",
        "",
        "| request log | req/s (median) | vs off | p50 ms | p99 ms | errors | dropped | written |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting, runs in points.items():
        rps = statistics.median(p["rps"] for p in runs)
        lines.append(
            f"| {setting if setting == 'off' else setting + ', 100% sampled, payload all'} | {rps:.0f} | "
            f"{(rps / base - 1) * 100:+.1f}% | {statistics.median(p['p50'] for p in runs):.2f} | "
            f"{statistics.median(p['p99'] for p in runs):.2f} | {sum(p['errors'] for p in runs):.0f} | "
            f"{sum(p['dropped'] for p in runs):.0f} | {statistics.median(p['bytes'] for p in runs) / 1e6:.1f} MB |")
    lines.append("")
    rounds = {s: ", ".join(f"{p['rps']:.0f}" for p in runs) for s, runs in points.items()}
    lines.append("Rounds (req/s): " + "; ".join(f"{s}: {text}" for s, text in rounds.items()))
    text = "\n".join(lines) + "\n"
    out = bench_run.RESULTS / f"requestlog-{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
