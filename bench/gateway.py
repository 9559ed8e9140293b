"""The hub's gateway under load: the same replica called directly and through ``mlport hub``.

    python bench/gateway.py                 # 10 s per point, c = 1, 8, 64
    python bench/gateway.py --quick         # 3 s per point
    python bench/gateway.py --profile       # also py-spy on the hub during the gateway row at c=64

A hub on 127.0.0.1 gets the iris model (bench/models.py) as two versions of one model, a deployment
``iris-b`` with one replica, and a predictor service account.  wrk (one thread, pinned to one core, as in
bench/run.py) then sends iris OIP JSON:

- ``direct``: to the replica's own port (``/v2/models/iris-b/infer``), no hub;
- ``gateway``: to ``/deployments/iris-b/v2/models/iris-b/infer`` with the predictor's bearer token;
- ``gateway + shadow``: the same, with version 2 as a shadow receiving a copy of every request;
- ``gateway + canary``: the same, with version 2 as a 10 % canary (the two versions' replicas answer).

The hub and its replicas share the machine's cores with wrk.  Results go to ``bench/results/gateway-<date>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
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


def experiment(admin: httpx.Client, strategy: str | None) -> None:
    if strategy is None:
        admin.post(f"/api/v1/deployments/{DEPLOYMENT}/rollback")
        return
    body: dict[str, Any] = {"version": 2}
    if strategy == "canary":
        body["percent"] = 10
    admin.post(f"/api/v1/deployments/{DEPLOYMENT}/{strategy}", json=body).raise_for_status()
    wait(lambda: replica_urls(admin, 2), START_TIMEOUT_S, "the replica of version 2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s per point")
    parser.add_argument("--seconds", type=float, help="seconds per point (default 10, quick 3)")
    parser.add_argument("--levels", default="1,8,64", help="concurrency levels (default 1,8,64)")
    parser.add_argument("--rows", default="direct,gateway,shadow,canary", help="rows to measure")
    parser.add_argument("--profile", action="store_true", help="py-spy on the hub during the gateway row, c=64")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    levels = [int(c) for c in args.levels.split(",")]
    rows = args.rows.split(",")
    started = dt.datetime.now()
    wrk = bench_run.ensure_wrk()
    cache = bench_run.CACHE
    model = bench_models.build(cache / "models")["iris"]
    body = bench_models.write_bodies(cache / "bodies")["iris-json"]
    lua = cache / "gateway.lua"
    lua.write_text(LUA)
    load = [bench_run.load_average()]
    results: list[tuple[str, int, dict[str, float]]] = []
    profile: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="mlport-bench-hub-") as tmp, hub_process(Path(tmp)) as (url, proc):
        admin, token, direct = set_up(url, model)
        os.environ["BENCH_AUTH"] = "Bearer " + token
        gateway = f"{url}/deployments/{DEPLOYMENT}/v2/models/{DEPLOYMENT}/infer"
        plan = [("direct", None, f"{direct.rstrip('/')}/v2/models/{DEPLOYMENT}/infer"), ("gateway", None, gateway),
                ("gateway + shadow", "shadow", gateway), ("gateway + canary", "canary", gateway)]
        for label, strategy, target in plan:
            if label.split(" + ")[-1] not in rows:
                continue
            if strategy:
                experiment(admin, strategy)
            for c in levels:
                bench_run.run_wrk(wrk, lua, target, body, c, 1.0, bench_run.pinned_core())
                if args.profile and label == "gateway" and c == max(levels):
                    from concurrent.futures import ThreadPoolExecutor

                    raw = bench_run.RESULTS / f"gateway-{started:%Y-%m-%d-%H%M}-profile.txt"
                    with ThreadPoolExecutor(1) as side:
                        job = side.submit(bench_run.profile, proc.pid, seconds - 1, raw)
                        r = bench_run.run_wrk(wrk, lua, target, body, c, seconds, bench_run.pinned_core())
                        profile = job.result()
                else:
                    r = bench_run.run_wrk(wrk, lua, target, body, c, seconds, bench_run.pinned_core())
                results.append((label, c, r))
                bench_run.log(f"{label:18} c={c:<3} {r['rps']:9,.0f} req/s  p50 {r['p50']:7.2f} ms  "
                              f"p99 {r['p99']:7.2f} ms  errors {int(r['errors'])}")
            if strategy:
                experiment(admin, None)
        if "shadow" in rows:
            s = admin.get(f"/api/v1/deployments/{DEPLOYMENT}/shadow").json()
            shadow_counts = {k: s.get(k) for k in ("requests", "agreed", "dropped", "errors")}
        else:
            shadow_counts = {}
    load.append(bench_run.load_average())
    text = report(started, seconds, results, load, shadow_counts, profile)
    bench_run.RESULTS.mkdir(exist_ok=True)
    out = bench_run.RESULTS / f"gateway-{started:%Y-%m-%d-%H%M}{'-quick' if args.quick else ''}.md"
    out.write_text(text)
    print(text)
    bench_run.log(f"written to {out.relative_to(bench_run.REPO)}")
    return 0


def report(started: dt.datetime, seconds: float, results: list[tuple[str, int, dict[str, float]]],
           load: list[str], shadow: dict[str, Any], profile: list[tuple[float, str]]) -> str:
    direct = {c: r for label, c, r in results if label == "direct"}
    lines = [f"# The hub's gateway, {started:%Y-%m-%d %H:%M}", "",
             f"- machine: {bench_run.cores()} cores, shared with other work (load average before / after: "
             f"{load[0]} / {load[-1]})",
             f"- wrk: 1 thread pinned to core {bench_run.pinned_core()}, {seconds:g} s per point after 1 s of "
             "warm-up; iris OIP JSON; one replica per version",
             "", "| row | c | req/s | p50 ms | p99 ms | errors | ÷ direct |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, c, r in results:
        ratio = f"{r['rps'] / direct[c]['rps']:.2f}x" if c in direct and direct[c]["rps"] and label != "direct" else ""
        lines.append(f"| {label} | {c} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {int(r['errors'])} | "
                     f"{ratio} |")
    if shadow:
        lines += ["", "Shadow counts after the shadow rows: " + ", ".join(f"{k} {v}" for k, v in shadow.items())]
    if profile:
        lines += ["", "## Profile (py-spy, the hub, gateway c=max: functions most on CPU)", "",
                  *[f"- {share:.1f}% {frame}" for share, frame in profile]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
