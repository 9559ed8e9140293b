"""The hub's gateway under load: the same replica called directly and through ``mlport hub``.

    python bench/gateway.py                   # 10 s per point, c = 1, 8, 64, every row once
    python bench/gateway.py --quick           # 3 s per point
    python bench/gateway.py --rounds 3        # every row 3 times, alternating; medians
    python bench/gateway.py --profile shadow  # also py-spy on the hub during the shadow row at c=64
    python bench/gateway.py --rows ray        # only Ray Serve (no hub)

A hub on 127.0.0.1 gets the iris model (bench/models.py) as two versions of one model, a deployment
``iris-b`` with one replica, and a predictor service account.  wrk (one thread, pinned to one core, as in
bench/run.py) then sends iris OIP JSON:

- ``direct``: to the replica's own port (``/v2/models/iris-b/infer``), no hub;
- ``gateway``: to ``/deployments/iris-b/v2/models/iris-b/infer`` with the predictor's bearer token;
- ``gateway + shadow``: the same, with version 2 as a shadow receiving a copy of every request;
- ``gateway + canary``: the same, with version 2 as a 10 % canary (the two versions' replicas answer);
- ``gateway, 2 replicas``: the plain deployment scaled to two replicas of version 1 (as Ray Serve's row has two);
- ``Ray Serve``: bench/peers/ray_serve.py (its own venv, tuned as it says: its high-throughput mode, HAProxy in
  front of the replicas) on the same model and body, after the hub has stopped; the table gives the gateway's
  throughput over Ray's at each c.  ``--rows ray-proxy`` also measures Ray Serve's classic Python proxy.

The hub and its replicas share the machine's cores with wrk.  Results go to ``bench/results/gateway-<date>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402
import run as bench_run  # noqa: E402

PASSWORD = "bench-admin-password"
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
DEPLOYMENT = "iris-b"
LUA = bench_run.WRK_LUA + 'wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")\n'
START_TIMEOUT_S = 180


@contextlib.contextmanager
def hub_process(data_dir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = bench_run.free_port()
    env = {**os.environ, "MLPORT_HUB_ADMIN_PASSWORD": PASSWORD, "MLPORT_HUB_JWT_SECRET": SECRET}
    log_path = data_dir / "hub.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlport.cli.main", "hub", "--data-dir", str(data_dir),
                                 "--http-port", str(port), "--log-level", "warning"], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _get_ok(url + "/healthz"), 60, "the hub", proc, log_path)
        yield url, proc
    finally:  # the hub's process group: the hub and its replicas
        bench_run.stop(bench_run.Running(bench_run.ServerSpec("hub", 1, "hub", {}), proc, port, log_path))


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait(cond: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
         log_path: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {bench_run.tail(log_path) if log_path else ''}")
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not ready within {timeout:g} s")


def replica_urls(admin: httpx.Client, version: int) -> list[str]:
    r = admin.get(f"/api/v1/deployments/{DEPLOYMENT}")
    r.raise_for_status()
    for row in (r.json().get("replicas") or {}).get("versions") or []:
        if int(row["version"]) == version:
            return [str(rep["url"]) for rep in row.get("replicas") or [] if rep.get("state") == "ready"]
    return []


def set_up(url: str, model: Path) -> tuple[httpx.Client, str, str]:
    """Two versions, the deployment with one ready replica, a predictor token: (admin, token, replica URL)."""
    token = httpx.post(url + "/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30)
    token.raise_for_status()
    admin = httpx.Client(base_url=url, timeout=60, headers={"authorization": "Bearer " + token.json()["access_token"]})
    admin.post("/api/v1/models", json={"name": "iris"}).raise_for_status()
    for _ in range(2):
        admin.post("/api/v1/models/iris/versions", params={"filename": "iris.onnx"}, content=model.read_bytes(),
                   headers={"content-type": "application/octet-stream"}).raise_for_status()
    r = admin.post("/api/v1/service-accounts", json={"name": "bench", "roles": ["predictor"],
                                                      "deployments": [DEPLOYMENT]})
    r.raise_for_status()
    admin.post("/api/v1/deployments", json={"name": DEPLOYMENT, "model": "iris", "version": 1, "min_replicas": 1,
                                            "max_replicas": 1}).raise_for_status()
    direct = wait(lambda: replica_urls(admin, 1), START_TIMEOUT_S, "the replica of version 1")[0]
    return admin, str(r.json()["access_token"]), direct


def versions_running(admin: httpx.Client) -> set[int]:
    r = admin.get(f"/api/v1/deployments/{DEPLOYMENT}")
    r.raise_for_status()
    return {int(row["version"]) for row in (r.json().get("replicas") or {}).get("versions") or []}


def replicas(admin: httpx.Client, count: int) -> None:
    """Scale version 1 to exactly ``count`` ready replicas and wait for them (and for no others)."""
    admin.post(f"/api/v1/deployments/{DEPLOYMENT}/scale",
               json={"min_replicas": count, "max_replicas": count}).raise_for_status()
    wait(lambda: len(replica_urls(admin, 1)) == count and versions_running(admin) == {1}, START_TIMEOUT_S,
         f"{count} replicas of version 1")


def experiment(admin: httpx.Client, strategy: str | None, undo: bool = False) -> None:
    if strategy == "replicas":
        replicas(admin, 1 if undo else 2)
        return
    if undo:
        admin.post(f"/api/v1/deployments/{DEPLOYMENT}/rollback")
        # version 2's replica gone before the next point (a process ending mid-point would skew its CPU figure)
        wait(lambda: versions_running(admin) == {1}, START_TIMEOUT_S, "version 2's replica to stop")
        return
    body: dict[str, Any] = {"version": 2}
    if strategy == "canary":
        body["percent"] = 10
    admin.post(f"/api/v1/deployments/{DEPLOYMENT}/{strategy}", json=body).raise_for_status()
    wait(lambda: replica_urls(admin, 2), START_TIMEOUT_S, "the replica of version 2")


ROWS = {"direct": ("direct", None), "gateway": ("gateway", None), "shadow": ("gateway + shadow", "shadow"),
        "canary": ("gateway + canary", "canary"), "replicas": ("gateway, 2 replicas", "replicas")}


def cpu_s(pid: int, tree: bool = True) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and (``tree``) every process below it (Linux /proc)."""
    total, todo, seen = 0.0, [pid], 0
    tick = os.sysconf("SC_CLK_TCK")
    while todo and seen < 4096:
        p = todo.pop()
        seen += 1
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir() if tree else ():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return total


class Runner:
    """Measures points with wrk, with the CPU per request of the processes serving them."""

    def __init__(self, args: argparse.Namespace, wrk: str, lua: Path, body: tuple[Path, int | None]) -> None:
        self.args, self.wrk, self.lua, self.body = args, wrk, lua, body
        self.results: list[tuple[str, int, dict[str, float]]] = []
        self.profile: list[tuple[float, str]] = []
        self.started = dt.datetime.now()

    def point(self, label: str, target: str, c: int, pid: int, profile: bool = False) -> None:
        seconds = self.args.seconds
        bench_run.run_wrk(self.wrk, self.lua, target, self.body, c, 1.0, bench_run.pinned_core())
        cpu, own = cpu_s(pid), cpu_s(pid, tree=False)
        if profile:
            from concurrent.futures import ThreadPoolExecutor

            raw = bench_run.RESULTS / f"gateway-{self.started:%Y-%m-%d-%H%M}-profile.txt"
            with ThreadPoolExecutor(1) as side:
                job = side.submit(bench_run.profile, pid, seconds - 1, raw)
                r = bench_run.run_wrk(self.wrk, self.lua, target, self.body, c, seconds, bench_run.pinned_core())
                self.profile = job.result()
        else:
            r = bench_run.run_wrk(self.wrk, self.lua, target, self.body, c, seconds, bench_run.pinned_core())
        n = r["requests"] or float("nan")
        r["cpu_us"], r["own_us"] = (cpu_s(pid) - cpu) * 1e6 / n, (cpu_s(pid, tree=False) - own) * 1e6 / n
        self.results.append((label, c, r))
        bench_run.log(f"{label:18} c={c:<3} {r['rps']:9,.0f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
                      f"CPU {r['cpu_us']:6.0f} (front {r['own_us']:4.0f}) us/req  errors {int(r['errors'])}")


def hub_rows(runner: Runner, url: str, proc: subprocess.Popen[bytes], model: Path, rows: list[str],
             levels: list[int]) -> dict[str, Any]:
    """The hub's rows, ``--rounds`` times over; the shadow counts after them."""
    admin, token, direct = set_up(url, model)
    os.environ["BENCH_AUTH"] = "Bearer " + token
    gateway = f"{url}/deployments/{DEPLOYMENT}/v2/models/{DEPLOYMENT}/infer"
    targets = {"direct": f"{direct.rstrip('/')}/v2/models/{DEPLOYMENT}/infer"}
    for _ in range(runner.args.rounds):
        for key in [r for r in ROWS if r in rows]:
            label, strategy = ROWS[key]
            if strategy:
                experiment(admin, strategy)
            for c in levels:
                runner.point(label, targets.get(key, gateway), c, proc.pid,
                             profile=runner.args.profile == key and c == max(levels))
            if strategy:
                experiment(admin, strategy, undo=True)
    if "shadow" not in rows:
        return {}
    s = admin.get(f"/api/v1/deployments/{DEPLOYMENT}/shadow").json()
    return {k: s.get(k) for k in ("requests", "agreed", "dropped", "errors")}


def ray_rows(runner: Runner, model: Path, levels: list[int], name: str = "ray") -> None:
    """Ray Serve (bench/peers/ray_serve.py, its own venv) on the same model and body, ``--rounds`` times;
    ``name`` ``ray-proxy``: with its classic Python proxy."""
    bench_run.ensure_venv("ray")
    label = bench_run.RAY_PROXY_LABEL if name == "ray-proxy" else bench_run.RAY_LABEL
    spec = bench_run.ServerSpec(name, bench_run.RAY_REPLICAS, label, {}, venv="ray")
    bodies = {"iris-json": runner.body}
    with tempfile.TemporaryDirectory(prefix="mlport-bench-ray-") as tmp, \
            bench_run.serving(spec, {"iris": model}, bodies, Path(tmp)) as running:
        target = f"http://127.0.0.1:{running.port}/v2/models/iris/infer"
        for _ in range(runner.args.rounds):
            for c in levels:
                runner.point(label, target, c, running.proc.pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s per point")
    parser.add_argument("--seconds", type=float, help="seconds per point (default 10, quick 3)")
    parser.add_argument("--levels", default="1,8,64", help="concurrency levels (default 1,8,64)")
    parser.add_argument("--rows", default="direct,gateway,shadow,canary,replicas,ray",
                        help="rows to measure, of direct,gateway,shadow,canary,replicas,ray,ray-proxy "
                        "(ray: Ray Serve tuned; "
                        "ray-proxy: Ray Serve with its Python proxy)")
    parser.add_argument("--rounds", type=int, default=1, help="measure the rows this many times, alternating; "
                        "the table gives each point's median (default 1)")
    parser.add_argument("--profile", choices=sorted(ROWS), help="py-spy on the hub during this row at the highest c")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    levels = [int(c) for c in args.levels.split(",")]
    rows = args.rows.split(",")
    wrk = bench_run.ensure_wrk()
    cache = bench_run.CACHE
    model = bench_models.build(cache / "models")["iris"]
    lua = cache / "gateway.lua"
    lua.write_text(LUA)
    runner = Runner(args, wrk, lua, bench_models.write_bodies(cache / "bodies")["iris-json"])
    load = [bench_run.load_average()]
    shadow_counts: dict[str, Any] = {}
    if any(r in ROWS for r in rows):
        with tempfile.TemporaryDirectory(prefix="mlport-bench-hub-") as tmp, hub_process(Path(tmp)) as (url, proc):
            shadow_counts = hub_rows(runner, url, proc, model, rows, levels)
    for name in ("ray", "ray-proxy"):
        if name in rows:
            ray_rows(runner, model, levels, name)
    load.append(bench_run.load_average())
    text = report(runner, load, shadow_counts)
    bench_run.RESULTS.mkdir(exist_ok=True)
    out = bench_run.RESULTS / f"gateway-{runner.started:%Y-%m-%d-%H%M}{'-quick' if args.quick else ''}.md"
    out.write_text(text)
    print(text)
    bench_run.log(f"written to {out.relative_to(bench_run.REPO)}")
    return 0


def medians(results: list[tuple[str, int, dict[str, float]]]) -> list[tuple[str, int, dict[str, float]]]:
    """One row per (label, c), in the order first measured: each figure's median over the rounds."""
    grouped: dict[tuple[str, int], list[dict[str, float]]] = {}
    for label, c, r in results:
        grouped.setdefault((label, c), []).append(r)
    return [(label, c, {k: statistics.median(r[k] for r in rs) for k in rs[0]}) for (label, c), rs in grouped.items()]


def report(runner: Runner, load: list[str], shadow: dict[str, Any]) -> str:
    results = medians(runner.results)
    direct = {c: r for label, c, r in results if label == "direct"}
    plain = {c: r for label, c, r in results if label == "gateway"}
    ray = {c: r for label, c, r in results if label == bench_run.RAY_LABEL}
    rounds = runner.args.rounds
    lines = [f"# The hub's gateway, {runner.started:%Y-%m-%d %H:%M}", "",
             f"- machine: {bench_run.cores()} cores ({bench_run.cpu_model()}), shared with other work (load average "
             "before / after: "
             f"{load[0]} / {load[-1]})",
             f"- wrk: 1 thread pinned to core {bench_run.pinned_core()}, {runner.args.seconds:g} s per point after "
             f"1 s of warm-up; iris OIP JSON; one replica per version; "
             f"{f'median of {rounds} alternating rounds' if rounds > 1 else 'one round'}",
             "- CPU µs/req: CPU time per request of the serving processes (the hub and its replicas; Ray's "
             "processes), and of the front process alone (the hub; Ray's driver, not its proxy)",
             "", "| row | c | req/s | p50 ms | p99 ms | CPU µs/req (front) | errors | ÷ direct | ÷ gateway | ÷ Ray |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def ratio(r: dict[str, float], base: dict[int, dict[str, float]], c: int) -> str:
        return f"{r['rps'] / base[c]['rps']:.2f}x" if c in base and base[c]["rps"] else ""

    for label, c, r in results:
        lines.append(f"| {label} | {c} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                     f"{r['cpu_us']:,.0f} ({r['own_us']:,.0f}) | {int(r['errors'])} | "
                     f"{ratio(r, direct, c) if label != 'direct' else ''} | "
                     f"{ratio(r, plain, c) if label.startswith('gateway +') else ''} | "
                     f"{ratio(r, ray, c) if label.startswith('gateway') else ''} |")
    if direct and plain:
        lines += ["", "p99 of the gateway ÷ p99 direct: " + ", ".join(
            f"c={c} {plain[c]['p99'] / direct[c]['p99']:.1f}x" for c in plain if c in direct and direct[c]["p99"])]
    if shadow:
        lines += ["", "Shadow counts after the shadow rows: " + ", ".join(f"{k} {v}" for k, v in shadow.items())]
    if runner.profile:
        lines += ["", f"## Profile (py-spy, the hub, {runner.args.profile} at the highest c: functions most on CPU)",
                  "", *[f"- {share:.1f}% {frame}" for share, frame in runner.profile]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
