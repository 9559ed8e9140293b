"""mlport's benchmark: one command builds the models, installs the peers, drives every server with wrk and
writes one table.

    python bench/run.py            # the full run (20 s per point, under 30 minutes once the peers are installed)
    python bench/run.py --quick    # 3 s per point and fewer points: proves the whole chain works
    python bench/run.py --only mlport,floor --profile

Servers, started one after another on 127.0.0.1 and stopped after their points:

- mlport, 1 and 2 workers, adaptive batching on (and off, to measure what batching gains);
- the floor: a bare ASGI app (orjson + onnxruntime, no framework) under uvicorn, 1 and 2 workers;
- MLServer 1.7 (parallel_workers=0), KServe 0.21's Python server (2 workers), BentoML 1.4 (defaults), Ray Serve
  2.60 (iris only; tuned as bench/peers/ray_serve.py says), each in its own virtual environment under
  ``bench/.venvs/`` (installed from PyPI on first use), each with a small server of ours that runs the model
  with onnxruntime.

onnxruntime threads: iris 1 everywhere; the CNN the cores a worker gets for the servers that run one prediction
at a time (the peers, the floor), and mlport's default (1 thread per prediction, two side by side) for mlport.
wrk runs pinned to one core (taskset) with one thread.  Results go to ``bench/results/<date>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"
VENVS = HERE / ".venvs"
RESULTS = HERE / "results"
PEERS = HERE / "peers"
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402

#: The peers, pinned; each gets its own virtual environment.
PEER_PACKAGES = {
    "mlserver": ["mlserver==1.7.1", "onnxruntime", "numpy"],
    "kserve": ["kserve==0.21.0", "onnxruntime", "numpy"],
    # 1.4.40 needs a certifi newer than PyPI mirrors may have; 1.4.39 is the same 1.4 series
    "bentoml": ["bentoml==1.4.39", "onnxruntime", "numpy"],
    "ray": ["ray[serve]==2.60.0", "onnxruntime", "numpy"],
    "tools": ["py-spy", "pyinstrument"],
}
WRK_LUA = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length ~= nil and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
"""
#: Ray Serve as bench/peers/ray_serve.py tunes it (its high-throughput mode: HAProxy ingress, 2 replicas,
#: max_ongoing_requests 64: see there); ``ray-proxy`` is its classic Python proxy, kept to compare.
RAY_REPLICAS = 2
RAY_LABEL = f"Ray Serve 2.60 (HAProxy, {RAY_REPLICAS} replicas)"
RAY_PROXY_LABEL = f"Ray Serve 2.60 (Python proxy, {RAY_REPLICAS} replicas)"
#: Longest a server may take to answer its first request.
START_TIMEOUT_S = 180
#: Longest one request may take before wrk counts it as a timeout.
WRK_TIMEOUT = "10s"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------ setup
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        log("installing wrk (apt-get)")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed: install it (Debian/Ubuntu: apt-get install wrk)")
    return found


def ensure_venv(name: str) -> Path:
    """``bench/.venvs/<name>`` with the pinned packages (installed once; reinstalled when the pins change)."""
    folder = VENVS / name
    marker = folder / ".bench-packages"
    wanted = "\n".join(PEER_PACKAGES[name])
    python = folder / "bin" / "python"
    if marker.exists() and marker.read_text() == wanted and python.exists():
        return folder
    log(f"installing {name} into {folder} ({', '.join(PEER_PACKAGES[name])})")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *PEER_PACKAGES[name]], check=True)
    marker.write_text(wanted)
    return folder


def package_version(python: Path | str, dist: str) -> str:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


# ------------------------------------------------------------------------------------------------ servers
@dataclass
class ServerSpec:
    name: str
    workers: int
    label: str
    #: payload -> concurrency levels to measure
    points: dict[str, list[int]]
    venv: str | None = None
    batching: bool = False


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path


def threads_for(model: str, workers: int, server: str = "") -> int:
    """onnxruntime's intra-op threads: 1 for iris everywhere.  For the CNN, the peers and the floor run one
    prediction at a time per worker, so their best is every core the worker gets; mlport's default (two
    predictions side by side, one thread each) is its best."""
    if model == "iris":
        return 1
    share = max(1, cores() // workers)
    return max(1, share // max(2, share)) if server == "mlport" else share


def bench_models_env(paths: dict[str, Path], workers: int) -> str:
    return ",".join(f"{name}={path}:{threads_for(name, workers)}" for name, path in paths.items())


def mlport_repo(paths: dict[str, Path], workers: int, batching: bool) -> Path:
    """A model repository for mlport: each model in its folder, with its threads and batching settings."""
    root = CACHE / f"repo-{'-'.join(sorted(paths))}-w{workers}-{'batch' if batching else 'plain'}"
    batch_cfg = {"iris": "{max_batch_size: 64, max_delay_ms: 2}", "cnn": "{max_batch_size: 8, max_delay_ms: 20}"}
    for name, path in paths.items():
        folder = root / name / "1"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "model.onnx"
        if not target.exists() or target.stat().st_size != path.stat().st_size:
            shutil.copyfile(path, target)
        lines = [f"options: {{intra_op_threads: {threads_for(name, workers, 'mlport')}}}"]
        if batching:
            lines.append(f"batching: {batch_cfg[name]}")
        (root / name / "model.yaml").write_text("\n".join(lines) + "\n")
    return root


def command(spec: ServerSpec, port: int, paths: dict[str, Path], scratch: Path) -> tuple[list[str], dict[str, str],
                                                                                          Path]:
    env = {**os.environ, "BENCH_MODELS": bench_models_env(paths, spec.workers), "PYTHONUNBUFFERED": "1"}
    if spec.name == "mlport":
        repo = mlport_repo(paths, spec.workers, spec.batching)
        return ([sys.executable, "-m", "mlport.cli.main", "serve", str(repo), "--http-port", str(port),
                 "--grpc-port", "0", "--workers", str(spec.workers), "--log-level", "warning",
                 "--poll-interval", "0"], env, REPO)
    if spec.name == "floor":
        return ([sys.executable, "-m", "uvicorn", "floor:app", "--port", str(port), "--workers", str(spec.workers),
                 "--log-level", "warning", "--no-access-log"], env, PEERS)
    python = VENVS / (spec.venv or "") / "bin" / "python"
    if spec.name == "mlserver":
        folder = scratch / "mlserver"
        for name, path in paths.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / "model-settings.json").write_text(json.dumps({
                "name": name, "implementation": "mlserver_onnx.OnnxModel",
                "parameters": {"uri": str(path), "extra": {"intra_op_threads": threads_for(name, spec.workers)}},
            }))
        (folder / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
            "host": "127.0.0.1", "debug": False,
        }))
        env["PYTHONPATH"] = str(PEERS)
        return ([str(python.parent / "mlserver"), "start", str(folder)], env, PEERS)
    if spec.name == "kserve":
        return ([str(python), "kserve_server.py", "--http_port", str(port), "--grpc_port", str(free_port()),
                 "--workers", str(spec.workers)], env, PEERS)
    if spec.name in ("ray", "ray-proxy"):
        mode = "proxy" if spec.name == "ray-proxy" else "throughput"
        return ([str(python), "ray_serve.py", "--port", str(port), "--replicas", str(spec.workers), "--mode", mode],
                env, PEERS)
    if spec.name == "bentoml":
        env["BENTOML_HOME"] = str(scratch / "bentoml-home")
        return ([str(python.parent / "bentoml"), "serve", "bentoml_service:Onnx", "--port", str(port),
                 "--host", "127.0.0.1"], env, PEERS)
    raise ValueError(spec.name)


def start(spec: ServerSpec, paths: dict[str, Path], bodies: dict[str, tuple[Path, int | None]],
          scratch: Path) -> Running:
    port = free_port()
    cmd, env, cwd = command(spec, port, paths, scratch)
    log_path = scratch / f"{spec.label.replace(' ', '_')}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = Running(spec, proc, port, log_path)
    body = bodies["iris-json"][0].read_bytes()
    deadline = time.monotonic() + START_TIMEOUT_S
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.label} exited with {proc.returncode}: {tail(log_path)}")
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/iris/infer", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as answer:
                if answer.status == 200:
                    return running
        except OSError:
            pass
        time.sleep(0.5)
    stop(running)
    raise RuntimeError(f"{spec.label} did not answer within {START_TIMEOUT_S} s: {tail(log_path)}")


def stop(running: Running) -> None:
    """SIGTERM to the server's process group (it was started in its own session), SIGKILL if it lingers."""
    proc = running.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # children of a pre-forking server may outlive their parent for a moment
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------------ wrk
@dataclass
class Point:
    server: str
    workers: int
    model: str
    payload: str
    concurrency: int
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: int = 0
    requests: int = 0
    note: str = ""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(found[1]) * _UNITS[found[2]] if found else float("nan")


def run_wrk(wrk: str, lua: Path, url: str, body: tuple[Path, int | None], concurrency: int, seconds: float,
            core: int | None) -> dict[str, float]:
    path, header_length = body
    env = {**os.environ, "BENCH_BODY": str(path), "BENCH_HEADER_LENGTH": str(header_length or ""),
           "BENCH_CONTENT_TYPE": "application/octet-stream" if header_length else "application/json"}
    cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", WRK_TIMEOUT,
           "-s", str(lua), url]
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120).stdout
    return parse_wrk(out)


#: wrk's socket error kinds, as its summary names them.
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


def parse_wrk(out: str) -> dict[str, float]:
    """wrk's summary text as numbers: ``rps``, ``p50``/``p99`` (ms), ``requests``; ``errors`` (all of them), split
    into ``non2xx`` (answers other than 2xx/3xx) and the socket errors ``connect``, ``read``, ``write``,
    ``timeout`` (no answer within ``--timeout``)."""
    result = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": 0.0, "requests": 0.0, "non2xx": 0.0,
              **{kind: 0.0 for kind in SOCKET_ERRORS}}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m[1])
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        result["p50"] = _ms(m[1])
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        result["p99"] = _ms(m[1])
    if m := re.search(r"(\d+) requests in", out):
        result["requests"] = float(m[1])
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result["non2xx"] = float(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result.update({kind: float(n) for kind, n in zip(SOCKET_ERRORS, m.groups(), strict=True)})
    result["errors"] = result["non2xx"] + sum(result[kind] for kind in SOCKET_ERRORS)
    return result


# ------------------------------------------------------------------------------------------------ in-process
def onnxruntime_rate(path: Path, feed_rows: int, threads: int, seconds: float, model: str) -> float:
    """Calls per second of ``session.run`` in this process (rows of batch ``feed_rows``)."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    if model == "iris":
        x = np.tile(np.array([bench_models.IRIS_ROW], dtype=np.float32), (feed_rows, 1))
    else:
        x = np.repeat(bench_models.cnn_input(), feed_rows, axis=0)
    names = [o.name for o in sess.get_outputs()]
    sess.run(names, {"input": x})
    calls = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        sess.run(names, {"input": x})
        calls += 1
    return calls / (time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ profile
def profile(pid: int, seconds: float, raw: Path) -> list[tuple[float, str]]:
    """py-spy (from the tools venv) on a running server: its collapsed stacks in ``raw`` (flame graph tools read
    them), and the functions most on CPU."""
    tools = ensure_venv("tools")
    subprocess.run([str(tools / "bin" / "py-spy"), "record", "-p", str(pid), "-d", str(max(1, int(seconds))),
                    "-r", "250", "-f", "raw", "-o", str(raw), "--nonblocking"], capture_output=True)
    own: dict[str, int] = {}
    total = 0
    if raw.exists():
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            total += int(count)
            own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    return sorted(((100.0 * c / max(total, 1), f) for f, c in own.items()), reverse=True)[:15]


# ------------------------------------------------------------------------------------------------ plan
def plan(quick: bool, only: set[str] | None) -> list[ServerSpec]:
    iris = [1, 64] if quick else [1, 8, 64]
    cnn = [8] if quick else [8, 32]
    specs = [
        ServerSpec("mlport", 1, "mlport", {"iris-json": iris, "cnn-json": cnn, "cnn-binary": [8, 64]},
                   batching=True),
        ServerSpec("mlport", 2, "mlport (2 workers)", {"iris-json": iris, "cnn-json": cnn, "cnn-binary": [8]},
                   batching=True),
        ServerSpec("mlport", 1, "mlport (batching off)", {"iris-json": [64], "cnn-binary": [64]}),
        ServerSpec("floor", 1, "floor", {"iris-json": iris, "cnn-json": cnn}),
        ServerSpec("floor", 2, "floor (2 workers)", {"iris-json": iris, "cnn-json": cnn}),
        ServerSpec("mlserver", 1, "MLServer 1.7 (parallel_workers=0)", {"iris-json": iris, "cnn-json": cnn},
                   venv="mlserver"),
        ServerSpec("kserve", 2, "KServe 0.21 (2 workers)", {"iris-json": iris, "cnn-json": cnn}, venv="kserve"),
        ServerSpec("bentoml", 1, "BentoML 1.4 (defaults)", {"iris-json": iris, "cnn-json": cnn}, venv="bentoml"),
        ServerSpec("ray", RAY_REPLICAS, RAY_LABEL, {"iris-json": iris}, venv="ray"),
    ]
    return [s for s in specs if only is None or s.name in only]


# ------------------------------------------------------------------------------------------------ report
def _fmt(value: float, digits: int = 0) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.{digits}f}"


@dataclass
class Report:
    started: dt.datetime
    quick: bool
    seconds: float
    points: list[Point] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    inprocess: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    profile: list[tuple[float, str]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    load: list[str] = field(default_factory=list)

    def find(self, label: str, payload: str, c: int) -> Point | None:
        return next((p for p in self.points if p.server == label and p.payload == payload and p.concurrency == c),
                    None)

    def table(self) -> str:
        rows = ["| model / payload | c | server | req/s | p50 ms | p99 ms | errors | mlport ÷ this |",
                "|---|---:|---|---:|---:|---:|---:|---:|"]
        groups: dict[tuple[str, int], list[Point]] = {}
        for p in self.points:
            groups.setdefault((p.payload, p.concurrency), []).append(p)
        for (payload, c), points in sorted(groups.items()):
            for p in points:
                ref = self.mlport_reference(payload, c, p)
                ratio = _fmt(ref.rps / p.rps, 2) + "x" if ref is not None and ref is not p and p.rps else ""
                rows.append(f"| {payload} | {c} | {p.server} | {_fmt(p.rps)} | {_fmt(p.p50_ms, 2)} | "
                            f"{_fmt(p.p99_ms, 2)} | {p.errors} | {ratio} |")
        return "\n".join(rows)

    def mlport_reference(self, payload: str, c: int, other: Point) -> Point | None:
        """The mlport row a row is compared with: the same worker count for the floor, else mlport's best."""
        mine = [p for p in self.points if p.payload == payload and p.concurrency == c and p.server.startswith("mlport")
                and "batching off" not in p.server]
        if not mine or other.server.startswith("mlport"):
            return None
        if other.server.startswith("floor"):
            same = [p for p in mine if p.workers == other.workers]
            return same[0] if same else None
        return max(mine, key=lambda p: p.rps)

    def targets(self) -> list[tuple[str, str, str]]:
        """(target, measured, verdict) for each target of the performance issue that this run measured."""
        out: list[tuple[str, str, str]] = []

        def verdict(ok: bool) -> str:
            return "met" if ok else "NOT met"

        peers = [p for p in self.points if p.payload == "iris-json" and p.concurrency == 64
                 and not p.server.startswith(("mlport", "floor")) and p.rps]
        mine = [p for p in self.points if p.payload == "iris-json" and p.concurrency == 64
                and p.server.startswith("mlport") and "batching off" not in p.server]
        if peers and mine:
            best_peer, best = max(peers, key=lambda p: p.rps), max(mine, key=lambda p: p.rps)
            r = best.rps / best_peer.rps
            out.append(("iris JSON c=64: >= 2x the best peer (goal 5x)",
                        f"{r:.2f}x ({best.server} {best.rps:,.0f} vs {best_peer.server} {best_peer.rps:,.0f})",
                        verdict(r >= 2)))
        for workers, label, floor_label in ((1, "mlport", "floor"), (2, "mlport (2 workers)", "floor (2 workers)")):
            a, b = self.find(label, "iris-json", 64), self.find(floor_label, "iris-json", 64)
            if a and b and b.rps:
                out.append((f"iris JSON c=64, {workers} worker(s): >= 0.8x the floor", f"{a.rps / b.rps:.2f}x",
                            verdict(a.rps / b.rps >= 0.8)))
        a, b = self.find("mlport", "iris-json", 1), self.find("floor", "iris-json", 1)
        if a and b and b.p99_ms:
            out.append(("iris c=1: p99 <= 1.5x the floor's", f"{a.p99_ms / b.p99_ms:.2f}x "
                        f"({a.p99_ms:.2f} vs {b.p99_ms:.2f} ms)", verdict(a.p99_ms <= 1.5 * b.p99_ms)))
        a = self.find("mlport", "cnn-binary", 8)
        ort_cnn = self.inprocess.get("cnn batch 1")
        if a and ort_cnn:
            out.append(("CNN binary c=8: >= 0.85x onnxruntime in process", f"{a.rps / ort_cnn:.2f}x "
                        f"({a.rps:,.1f} vs {ort_cnn:,.1f} calls/s)", verdict(a.rps >= 0.85 * ort_cnn)))
        a, b = self.find("mlport", "cnn-json", 8), self.find("floor", "cnn-json", 8)
        if a and b and b.rps:
            out.append(("CNN JSON c=8: >= the floor", f"{a.rps / b.rps:.2f}x", verdict(a.rps >= b.rps)))
        for payload in ("iris-json", "cnn-binary"):
            on, off = self.find("mlport", payload, 64), self.find("mlport (batching off)", payload, 64)
            if on and off and off.rps:
                out.append((f"batching on vs off, {payload} c=64: >= 2x", f"{on.rps / off.rps:.2f}x",
                            verdict(on.rps >= 2 * off.rps)))
        if "mlport" in self.memory:
            out.append(("one worker serving iris: < 150 MB RSS", f"{self.memory['mlport']:.0f} MB",
                        verdict(self.memory["mlport"] < 150)))
        return out

    def markdown(self) -> str:
        cpu = cpu_model()
        lines = [
            f"# mlport benchmark, {self.started:%Y-%m-%d %H:%M}{' (quick)' if self.quick else ''}",
            "",
            "## Conditions",
            "",
            f"- machine: {cores()} cores ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}",
            f"- load average before / after: {self.load[0] if self.load else '?'} / "
            f"{self.load[1] if len(self.load) > 1 else '?'} (other work on the machine skews every figure)",
            f"- wrk: 1 thread pinned to core {pinned_core()}, {self.seconds:g} s per point after a warm-up, "
            f"127.0.0.1, keep-alive connections",
            "- onnxruntime intra-op threads: iris 1 everywhere; CNN (input 1x3x224x224): the cores per worker for "
            "the peers and the floor (one prediction at a time), 1 for mlport (its default: two predictions side "
            "by side); in process: every core",
            "- mlport batching (model.yaml): iris max_batch_size 64, max_delay_ms 2; CNN 8, 20 ms",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.versions.items())),
            "",
            "## Results",
            "",
            self.table(),
            "",
            "`mlport ÷ this`: mlport's req/s over the row's (the floor: mlport with the same workers; "
            "peers: mlport's best).",
            "",
            "onnxruntime in process (session.run, same threads): " + ", ".join(
                f"{k}: {v:,.1f} calls/s" for k, v in self.inprocess.items()),
            "",
            "## Targets",
            "",
            "| target | measured | |",
            "|---|---|---|",
            *[f"| {t} | {m} | {v} |" for t, m, v in self.targets()],
        ]
        if self.profile:
            lines += ["", "## Profile (py-spy, mlport 1 worker, iris JSON c=64: functions most on CPU)", "",
                      *[f"- {share:.1f}% {frame}" for share, frame in self.profile]]
        if self.failures:
            lines += ["", "## Not measured", "", *[f"- {f}" for f in self.failures]]
        return "\n".join(lines) + "\n"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_model() -> str:
    """The processor's model name (``?`` when unknown)."""
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        if found:
            return found[1].strip()
    return "?"


def pinned_core() -> int | None:
    return cores() - 1 if cores() > 1 else None


def memory_check(wrk: str, lua: Path, paths: dict[str, Path], bodies: dict[str, tuple[Path, int | None]],
                 scratch: Path) -> float:
    """RSS (MB) of one mlport worker serving the iris model alone, after a few thousand requests."""
    spec = ServerSpec("mlport", 1, "mlport (iris only)", {}, batching=True)
    log("memory of one worker serving iris")
    with serving(spec, {"iris": paths["iris"]}, bodies, scratch) as running:
        run_wrk(wrk, lua, f"http://127.0.0.1:{running.port}/v2/models/iris/infer", bodies["iris-json"], 8, 2.0,
                pinned_core())
        return rss_mb(running.proc.pid)


# ------------------------------------------------------------------------------------------------ main
@contextlib.contextmanager
def serving(spec: ServerSpec, paths: dict[str, Path], bodies: dict[str, tuple[Path, int | None]],
            scratch: Path) -> Iterator[Running]:
    running = start(spec, paths, bodies, scratch)
    try:
        yield running
    finally:
        stop(running)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s per point and fewer points")
    parser.add_argument("--seconds", type=float, help="seconds per point (default 20, quick 3)")
    parser.add_argument("--only", help="comma-separated servers: mlport,floor,mlserver,kserve,bentoml,ray")
    parser.add_argument("--profile", action="store_true", help="py-spy on mlport during iris c=64")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    warmup = 1.0 if args.quick else 3.0
    only = set(args.only.split(",")) if args.only else None
    started = dt.datetime.now()
    report = Report(started, args.quick, seconds, load=[load_average()])
    wrk = ensure_wrk()
    paths = bench_models.build(CACHE / "models")
    bodies = bench_models.write_bodies(CACHE / "bodies")
    lua = CACHE / "body.lua"
    lua.write_text(WRK_LUA)
    RESULTS.mkdir(exist_ok=True)
    scratch = CACHE / "run"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    report.versions["mlport"] = package_version(sys.executable, "mlport")
    report.versions["onnxruntime"] = package_version(sys.executable, "onnxruntime")
    report.versions["uvicorn"] = package_version(sys.executable, "uvicorn")

    log("onnxruntime in process")
    in_seconds = min(seconds, 5.0)
    report.inprocess["iris batch 1"] = onnxruntime_rate(paths["iris"], 1, 1, in_seconds, "iris")
    report.inprocess["cnn batch 1"] = onnxruntime_rate(paths["cnn"], 1, cores(), in_seconds, "cnn")
    report.inprocess["cnn batch 8 (rows/s)"] = 8 * onnxruntime_rate(paths["cnn"], 8, cores(), in_seconds, "cnn")

    for spec in plan(args.quick, only):
        if spec.venv:
            try:
                venv = ensure_venv(spec.venv)
                dist = {"mlserver": "mlserver", "kserve": "kserve", "bentoml": "bentoml", "ray": "ray"}[spec.name]
                report.versions[dist] = package_version(venv / "bin" / "python", dist)
            except subprocess.CalledProcessError as exc:
                report.failures.append(f"{spec.label}: installing failed ({exc})")
                log(report.failures[-1])
                continue
        log(f"starting {spec.label}")
        try:
            with serving(spec, paths, bodies, scratch) as running:
                for payload, levels in spec.points.items():
                    model = payload.split("-")[0]
                    url = f"http://127.0.0.1:{running.port}/v2/models/{model}/infer"
                    for c in levels:
                        run_wrk(wrk, lua, url, bodies[payload], c, warmup, pinned_core())
                        if args.profile and spec.label == "mlport" and payload == "iris-json" and c == 64:
                            from concurrent.futures import ThreadPoolExecutor

                            out = RESULTS / f"{started:%Y-%m-%d-%H%M}-profile.txt"
                            with ThreadPoolExecutor(1) as side:
                                profiled = side.submit(profile, running.proc.pid, seconds - 1, out)
                                r = run_wrk(wrk, lua, url, bodies[payload], c, seconds, pinned_core())
                                report.profile = profiled.result()
                        else:
                            r = run_wrk(wrk, lua, url, bodies[payload], c, seconds, pinned_core())
                        point = Point(spec.label, spec.workers, model, payload, c, r["rps"], r["p50"], r["p99"],
                                      int(r["errors"]), int(r["requests"]))
                        report.points.append(point)
                        log(f"{spec.label:36} {payload:10} c={c:<3} {point.rps:10,.1f} req/s  "
                            f"p50 {point.p50_ms:8.2f} ms  p99 {point.p99_ms:8.2f} ms  errors {point.errors}")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            report.failures.append(f"{spec.label}: {exc}")
            log(report.failures[-1])
    if only is None or "mlport" in only:
        try:
            report.memory["mlport"] = memory_check(wrk, lua, paths, bodies, scratch)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            report.failures.append(f"memory check: {exc}")
    report.load.append(load_average())
    out = RESULTS / f"{started:%Y-%m-%d-%H%M}{'-quick' if args.quick else ''}.md"
    text = report.markdown()
    out.write_text(text)
    print(text)
    log(f"written to {out.relative_to(REPO)} in {(dt.datetime.now() - started).total_seconds() / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
