"""What request logging costs: iris throughput at c=64 with the request log off, and on at 100% sampling with
every tensor to a file sink (JSON Lines, and Parquet).

    python bench/requestlog.py                 # 5 s per point, 8 rounds
    python bench/requestlog.py --seconds 3 --rounds 2
    python bench/requestlog.py --settings off,jsonl,parquet --rounds 10
    git archive main src | tar -x -C /tmp/base && python bench/requestlog.py --baseline /tmp/base

The servers (off; JSON Lines and Parquet at 100%; JSON Lines at 10%) run side by side; each round drives
every one in turn (the order reversed every other round), so that a change of the machine's load hits every
setting alike. The table gives each setting's median over the rounds, the drops each server counted
(``mlport_log_dropped_total``; at 100% sampling a drop is a request that was not logged) and the bytes its log
files hold. Beside throughput, it gives the server's CPU time per request (user + system, every thread, from
/proc), which other load on a shared machine moves far less than throughput.
``--baseline DIR`` also runs the chosen logging settings from the ``src/`` of another checkout (an export of
``main``, say), in the same rounds: a before/after under the same load.
Results go to ``bench/results/requestlog-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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
    "jsonl-10%": ["--request-log", "{logs}", "--request-log-format", "jsonl", "--request-log-sample", "0.1"],
}
LABELS = {"off": "off", "jsonl": "jsonl, 100% sampled, payload all", "parquet": "parquet, 100% sampled, payload all",
          "jsonl-10%": "jsonl, 10% sampled, payload all"}


def serve_mlport(model: Path, args: list[str], scratch: Path,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``mlport serve MODEL ARGS`` on a free port, once ready: the process and its URL (its log in ``scratch``;
    ``env``: its environment)."""
    port = bench_run.free_port()
    cmd = [sys.executable, "-m", "mlport.cli.main", "serve", str(model), "--http-port", str(port), "--grpc-port", "0",
           *args]
    log = (scratch / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
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


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, every thread counted."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(server: tuple[subprocess.Popen[bytes], str], wrk: str, lua: Path, body: tuple[Path, int | None],
             seconds: float) -> dict[str, float]:
    proc, url = server
    before = _cpu_s(proc.pid)
    result = bench_run.run_wrk(wrk, lua, url + "/v2/models/iris/infer", body, 64, seconds, bench_run.pinned_core())
    result["cpu_us"] = (_cpu_s(proc.pid) - before) / max(1.0, result["requests"]) * 1e6
    return result


Run = tuple[list[str], dict[str, str] | None]  # a server's flags and environment


def _runs(ap: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Run]:
    """The servers to compare, by name: the chosen settings ('off' first), and each again from ``--baseline``."""
    names = ["off", *(s for s in args.settings.split(",") if s and s != "off")]
    if unknown := set(names) - set(SETTINGS):
        ap.error(f"unknown settings {', '.join(sorted(unknown))}; known: {', '.join(SETTINGS)}")
    runs: dict[str, Run] = {s: (SETTINGS[s], None) for s in names}
    if args.baseline is not None:
        src = args.baseline.resolve() / "src"
        if not (src / "mlport").is_dir():
            ap.error(f"--baseline {args.baseline}: no src/mlport there")
        env = {**os.environ, "PYTHONPATH": str(src)}
        runs.update({f"{s} (baseline)": (SETTINGS[s], env) for s in names if s != "off"})
    return runs


def _rounds(runs: dict[str, Run], args: argparse.Namespace, scratch: Path) -> tuple[dict[str, list[dict[str, float]]],
                                                                                   dict[str, float]]:
    """Each server driven in turn, every round (the order reversed every other round); its drops at the end."""
    wrk = bench_run.ensure_wrk()
    model = bench_models.iris_onnx(scratch / "iris.onnx")
    body = bench_models.write_bodies(scratch)["iris-json"]
    lua = scratch / "post.lua"
    lua.write_text(bench_run.WRK_LUA)
    points: dict[str, list[dict[str, float]]] = {s: [] for s in runs}
    servers = {s: serve_mlport(model, ["--name", "iris", *(a.replace("{logs}", str(scratch / f"logs-{i}"))
                                                          for a in flags)], scratch, env)
               for i, (s, (flags, env)) in enumerate(runs.items())}
    try:
        for server in servers.values():
            _measure(server, wrk, lua, body, 2)  # warm-up
        for round_ in range(args.rounds):
            order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
            for setting in order:
                r = _measure(servers[setting], wrk, lua, body, args.seconds)
                points[setting].append(r)
                bench_run.log(f"round {round_ + 1} {setting}: {r['rps']:.0f} req/s p99 {r['p99']:.1f} ms, "
                              f"{r['cpu_us']:.0f} us CPU per request")
        return points, {s: _dropped(url) for s, (_proc, url) in servers.items()}
    finally:
        for proc, _url in servers.values():
            proc.terminate()
            proc.wait(60)


def _report(points: dict[str, list[dict[str, float]]], dropped: dict[str, float], written: dict[str, int],
            args: argparse.Namespace) -> str:
    base = statistics.median(p["rps"] for p in points["off"])
    base_cpu = statistics.median(p["cpu_us"] for p in points["off"])
    lines = [
        f"# Request logging overhead, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"iris (ONNX), OIP JSON, one row per request, wrk c=64, {args.seconds:g} s per point, {args.rounds} rounds "
        f"(median); 1 mlport worker. Machine: {bench_run.cores()} cores, shared and loaded (load average "
        f"{bench_run.load_average()}): figures move between runs; compare the settings of one run.",
        "",
        "| request log | req/s (median) | vs off | CPU per request (median) | vs off | p50 ms | p99 ms | errors "
        "| dropped | written |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, runs in points.items():
        rps = statistics.median(p["rps"] for p in runs)
        cpu = statistics.median(p["cpu_us"] for p in runs)
        name, _, baseline = setting.partition(" ")
        lines.append(
            f"| {LABELS[name]}{' ' + baseline if baseline else ''} | {rps:.0f} | "
            f"{(rps / base - 1) * 100:+.1f}% | {cpu:.0f} us | {(cpu / base_cpu - 1) * 100:+.1f}% | "
            f"{statistics.median(p['p50'] for p in runs):.2f} | "
            f"{statistics.median(p['p99'] for p in runs):.2f} | {sum(p['errors'] for p in runs):.0f} | "
            f"{dropped[setting]:.0f} | {written[setting] / 1e6:.1f} MB |")
    rounds = {s: ", ".join(f"{p['rps']:.0f}" for p in runs) for s, runs in points.items()}
    cpu = {s: ", ".join(f"{p['cpu_us']:.0f}" for p in runs) for s, runs in points.items()}
    lines += ["", "Rounds (req/s): " + "; ".join(f"{s}: {text}" for s, text in rounds.items()), "",
              "Rounds (CPU us per request): " + "; ".join(f"{s}: {text}" for s, text in cpu.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help=f"comma-separated, 'off' always first (default: {','.join(SETTINGS)})")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="also run the logging settings from DIR/src (another checkout), in the same rounds")
    args = ap.parse_args(argv)
    runs = _runs(ap, args)
    with tempfile.TemporaryDirectory(prefix="mlport-bench-log-") as tmp:
        scratch = Path(tmp)
        points, dropped = _rounds(runs, args, scratch)
        written = {s: sum(p.stat().st_size for p in (scratch / f"logs-{i}").glob("*")) for i, s in enumerate(runs)}
    text = _report(points, dropped, written, args)
    out = bench_run.RESULTS / f"requestlog-{dt.datetime.now(dt.UTC):%Y-%m-%d-%H%M}.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
