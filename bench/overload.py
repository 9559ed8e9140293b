"""Overload: a slow model at about ten times its capacity, with a bounded queue and without one.

    python bench/overload.py                       # 512 clients, 20 s per run, max_queue 64
    python bench/overload.py --clients 256 --seconds 10

The model is a trusted Python model that takes ``--service-ms`` (50) per request, two at a time (the server's
two inference threads), so its capacity is known: 2 / 0.05 s = 40 requests/s.  ``--clients`` (512) clients
each send one request after another for ``--seconds``; a refused client waits what ``Retry-After`` says, as
a well-behaved client does, then tries again.  Each run reports:

- goodput: answers (200) per second, against the model's capacity;
- p50/p99 latency of the accepted requests, against the bound (max_queue / throughput + 2 x service time);
- refusals (503) and their latency p99, over the whole run and over the requests sent after its first second
  (when the burst of all clients starting in the same instant is over);
- the server's own p99 of the time to a refusal (its ``mlport_refusal_duration_seconds`` histogram), its CPU
  time per request, and the Retry-After values it gave;
- the client processes' own event-loop lag (p99 of how late a 10 ms sleep wakes): the share of a measured
  latency that is the clients', not the server's;
- the server's resident set (sampled every 0.5 s: first, peak, last);
- ``/v2/health/live`` latency p99, probed every 50 ms by a client of its own (the bench's own process).

The clients (bench/leanhttp.py: one keep-alive connection each, prepared request bytes, answers parsed by
httptools) are split over ``--processes`` (4) client processes, each with its own event loop: a general client
costs a few hundred microseconds of CPU per request, which, on the machine that also runs the server, would
make most of the latency of refusals sent in the same instant.  The runs with ``--max-queue`` (64): clients
that retry exactly at Retry-After, all starting in the same instant; the same clients adding a random jitter of
up to ``--jitter`` (1) s to Retry-After, as client libraries' backoff does; clients retrying exactly at
Retry-After that start at random over ``--ramp`` (1) s; and the first run again with aiohttp clients
(``pip install mlport[bench]``; ``--no-aiohttp`` skips it), for comparison.  Then one run without limits
(exact Retry-After, all at once), the way mlport served before admission existed, the refusals by themselves
(one client, one connection, the queue full), and the start's herd by itself: the same clients opening their
connections in the same instant to send one GET, answered by mlport's ``/v2/health/live`` and by a bare ASGI app
under uvicorn (bench/peers/constant.py) that answers ``{}``: what the herd costs before any work.
Requests go to 127.0.0.1 only, in bounded loops.  Results go to ``bench/results/overload-<date>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import leanhttp  # noqa: E402
from cache import Server, free_port, pct, rss  # noqa: E402

MODEL = '''
import time

class Model:
    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                 "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}

    def predict(self, inputs):
        time.sleep(SERVICE_S)
        return {"y": inputs["x"] * 2}
'''
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
#: Longest a client waits for one answer.
CLIENT_TIMEOUT_S = 60.0


@dataclass
class Part:
    """What the clients of one client process saw."""

    ok: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=dict)
    #: How many refusals said each ``Retry-After``.
    retry_after: dict[str, int] = field(default_factory=dict)
    #: Lateness of the client process's own event loop (seconds).
    lag: list[float] = field(default_factory=list)
    #: Latencies of the answers and refusals to requests sent after the first second (the start's burst over).
    ok_later: list[float] = field(default_factory=list)
    refused_later: list[float] = field(default_factory=list)


@dataclass
class Run(Part):
    label: str = ""
    seconds: float = 0.0
    live: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    #: CPU seconds the server spent during the run.
    server_cpu: float = 0.0
    #: The server's own figure of its refusals: p99 of the time from taking hold of the model to the refusal.
    server_refusal_p99: float = float("nan")

    def add(self, part: Part) -> None:
        self.ok += part.ok
        self.refused += part.refused
        self.lag += part.lag
        self.ok_later += part.ok_later
        self.refused_later += part.refused_later
        for mine, theirs in ((self.other, part.other), (self.retry_after, part.retry_after)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count


def build(root: Path, service_s: float) -> Path:
    folder = root / "slow" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL.replace("SERVICE_S", repr(service_s)))
    (root / "slow" / "model.yaml").write_text("trusted: true\n")
    return root


@dataclass(frozen=True)
class Plan:
    """What the clients of a run do: where they send, from when (``start``, each at random over ``ramp`` s) until
    when, how long a refused client waits (``Retry-After`` plus a random ``jitter`` of up to that many s) and which
    client sends."""

    url: str
    start: float
    until: float
    ramp: float = 0.0
    jitter: float = 0.0
    #: clients of :mod:`leanhttp` (else aiohttp's)
    lean: bool = True


async def client(http: aiohttp.ClientSession, plan: Plan, part: Part, first: float) -> None:
    """One aiohttp client: from ``first``, request after request until the end; answers that come later are not
    counted."""
    await asyncio.sleep(max(0.0, first - time.monotonic()))
    while time.monotonic() < plan.until:
        started = time.perf_counter()
        try:
            async with http.post(plan.url, json=BODY) as r:
                await r.read()
                status, retry = r.status, r.headers.get("retry-after", "1")
        except (aiohttp.ClientError, TimeoutError) as exc:
            part.other[type(exc).__name__] = part.other.get(type(exc).__name__, 0) + 1
            continue
        if not await settle(plan, part, status, retry, time.perf_counter() - started):
            return


async def lean_client(plan: Plan, part: Part, first: float) -> None:
    """One client of :mod:`leanhttp` (one keep-alive connection, prepared bytes), as :func:`client` does."""
    url = urlsplit(plan.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    request = leanhttp.post_bytes(host, port, url.path, json.dumps(BODY).encode())
    await asyncio.sleep(max(0.0, first - time.monotonic()))
    conn: leanhttp.Connection | None = None
    while time.monotonic() < plan.until:
        started = time.perf_counter()
        try:
            if conn is None or conn.closed:
                conn = await asyncio.wait_for(leanhttp.Connection.open(host, port), CLIENT_TIMEOUT_S)
            answer = await asyncio.wait_for(conn.send(request), CLIENT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            part.other[type(exc).__name__] = part.other.get(type(exc).__name__, 0) + 1
            if conn is not None:
                conn.close()
            continue
        if not await settle(plan, part, answer.status, answer.retry_after or "1", time.perf_counter() - started):
            break
    if conn is not None:
        conn.close()


async def settle(plan: Plan, part: Part, status: int, retry: str, took: float) -> bool:
    """Count one answer (``took`` seconds after its request was sent) and wait what a refusal says; False when
    the run is over (the answer came too late to count)."""
    if time.monotonic() > plan.until:
        return False
    later = time.monotonic() - took > plan.start + 1.0
    if status == 200:
        part.ok.append(took)
        if later:
            part.ok_later.append(took)
    elif status in (429, 503):
        part.refused.append(took)
        if later:
            part.refused_later.append(took)
        part.retry_after[retry] = part.retry_after.get(retry, 0) + 1
        await asyncio.sleep(float(retry) + random.uniform(0, plan.jitter))
    else:
        part.other[str(status)] = part.other.get(str(status), 0) + 1
    return True


async def lag(until: float, part: Part) -> None:
    """How late this process's event loop wakes a 10 ms sleep: the share of a measured latency that is the
    client's own."""
    while time.monotonic() < until:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        part.lag.append(time.perf_counter() - started - 0.01)


async def drive_part(plan: Plan, clients: int) -> Part:
    part = Part()
    firsts = [plan.start + random.uniform(0, plan.ramp) for _ in range(clients)]
    if plan.lean:
        await asyncio.gather(lag(plan.until, part), *(lean_client(plan, part, first) for first in firsts))
        return part
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:
        await asyncio.gather(lag(plan.until, part), *(client(http, plan, part, first) for first in firsts))
    return part


def run_part(plan: Plan, clients: int) -> Part:
    """One client process (its own event loop)."""
    late = time.monotonic() - plan.start
    part = asyncio.run(drive_part(plan, clients))
    if late > 0:  # counted over the whole run all the same: shown in the report
        part.other["client process late (ms)"] = round(late * 1000)
    return part


def ready(seconds: float) -> None:
    """Keep a client process busy a moment, so that each of the pool's processes starts before the run does."""
    time.sleep(seconds)


def drive(server: Server, clients: int, seconds: float, run: Run, processes: int, ramp: float = 0.0,
          jitter: float = 0.0, lean: bool = True) -> None:
    """``clients`` clients split over ``processes`` client processes, plus the probe (a thread of this one)."""
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for waited in [pool.submit(ready, 0.5) for _ in range(processes)]:
            waited.result()
        start = time.monotonic() + 0.5
        plan = Plan(server.url + "/v2/models/slow/infer", start, start + seconds, ramp, jitter, lean)
        futures = [pool.submit(run_part, plan, n) for n in shares if n]
        while time.monotonic() < start:
            time.sleep(0.01)
        cpu = cpu_seconds(server.proc.pid)
        probe(server.url, plan.until, run, server.proc.pid)
        run.server_cpu = cpu_seconds(server.proc.pid) - cpu
        for future in futures:
            run.add(future.result())
    run.seconds = seconds


def probe(base: str, until: float, run: Run, pid: int) -> None:
    """``/v2/health/live`` every 50 ms and the server's resident set every 0.5 s (the bench's own process)."""
    with httpx.Client(base_url=base, timeout=CLIENT_TIMEOUT_S) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            http.get("/v2/health/live")
            run.live.append(time.perf_counter() - started)
            if len(run.live) % 10 == 0:
                run.rss.append(rss(pid))
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(label: str, root: Path, logs: Path, args: argparse.Namespace, *flags: str, ramp: float = 0.0,
            jitter: float = 0.0, lean: bool = True) -> Run:
    server = Server(root, "--inference-threads", "2", *flags, log=logs / f"{label.split()[0]}.log")
    run = Run(label=label, seconds=args.seconds)
    try:
        drive(server, 4, 2.0, Run(label="warm-up"), 1)
        drive(server, args.clients, args.seconds, run, args.processes, ramp, jitter, lean)
        run.server_refusal_p99 = refusal_p99(httpx.get(server.url + "/metrics").text)
    finally:
        server.stop()
    return run


async def herd_part(url: str, start: float, clients: int) -> list[float]:
    """Clients that each open a connection at ``start`` and send one GET to ``url``: seconds from ``start`` to
    each answer (the time a client takes to be served in a herd, whatever the answer costs)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = leanhttp.get_bytes(host, port, parts.path)

    async def one() -> float:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        conn = await asyncio.wait_for(leanhttp.Connection.open(host, port), CLIENT_TIMEOUT_S)
        try:
            answer = await asyncio.wait_for(conn.send(request), CLIENT_TIMEOUT_S)
        finally:
            conn.close()
        if answer.status != 200:
            raise RuntimeError(f"{url}: {answer.status}")
        return time.monotonic() - start

    return list(await asyncio.gather(*(one() for _ in range(clients))))


def run_herd_part(url: str, start: float, clients: int) -> list[float]:
    return asyncio.run(herd_part(url, start, clients))


def herds(url: str, args: argparse.Namespace, times: int = 3) -> list[float]:
    """``times`` herds, one after the other, of ``--clients`` clients over ``--processes`` client processes, all
    opening their connection in the same instant and sending one GET to ``url``."""
    shares = [args.clients // args.processes + (i < args.clients % args.processes) for i in range(args.processes)]
    took: list[float] = []
    with ProcessPoolExecutor(args.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in range(times):
            for waited in [pool.submit(ready, 0.5) for _ in range(args.processes)]:
                waited.result()
            start = time.monotonic() + 0.5
            for part in [pool.submit(run_herd_part, url, start, n) for n in shares]:
                took += part.result()
    return took


def herd(root: Path, logs: Path, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """The start's herd by itself, answered by mlport's ``/v2/health/live`` (no model work) and by a bare ASGI app
    under uvicorn that answers ``{}`` (bench/peers/constant.py): the share of the first second's latencies that
    any answer pays on this machine."""
    server = Server(root, "--inference-threads", "2", log=logs / "herd.log")
    try:
        mlport = herds(server.url + "/v2/health/live", args)
    finally:
        server.stop()
    port = free_port()
    with (logs / "constant.log").open("wb") as log:
        bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "constant:app", "--port", str(port),
                                 "--log-level", "warning", "--no-access-log"], cwd=HERE / "peers", stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or bare.poll() is not None:
                    raise RuntimeError("the bare app did not start: see its log") from None
                time.sleep(0.05)
        constant = herds(f"http://127.0.0.1:{port}/", args)
    finally:
        bare.terminate()
        bare.wait(30)
    return mlport, constant


def refusal_p99(metrics: str) -> float:
    """The upper bound of the bucket of ``mlport_refusal_duration_seconds`` that holds its 99th percentile (nan
    when the server has no such metric)."""
    buckets = [(float(m[1]), float(m[2])) for m in re.finditer(
        r'^mlport_refusal_duration_seconds_bucket\{.*le="([^"]+)".*\} (\S+)$', metrics, re.M)]
    if not buckets or not buckets[-1][1]:
        return float("nan")
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= 0.99 * total)


def refusals_alone(root: Path, logs: Path, count: int = 1000) -> tuple[list[float], float]:
    """Latency of refusals by themselves: one client, one keep-alive connection, the model's one slot held by
    a blocker and no queue (``--max-concurrency 1 --max-queue 0``): what a refusal costs without the storm."""
    server = Server(root, "--inference-threads", "2", "--max-concurrency", "1", "--max-queue", "0",
                    log=logs / "alone.log")
    took: list[float] = []
    done = threading.Event()

    def hold() -> None:  # requests back to back: the slot is taken nearly all the time
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
            for _ in range(10_000):
                if done.is_set():
                    return
                http.post("/v2/models/slow/infer", json=BODY)

    blocker = threading.Thread(target=hold)
    blocker.start()
    cpu = cpu_seconds(server.proc.pid)
    try:
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as own:
            for _ in range(count * 10):
                started = time.perf_counter()
                if own.post("/v2/models/slow/infer", json=BODY).status_code == 503:
                    took.append(time.perf_counter() - started)
                    if len(took) >= count:
                        break
        cpu = cpu_seconds(server.proc.pid) - cpu
    finally:
        done.set()
        blocker.join()
        server.stop()
    return took, cpu


def report(runs: list[Run], args: argparse.Namespace) -> str:
    capacity = 2 / (args.service_ms / 1000)
    lines = [
        f"# mlport overload bench, {dt.datetime.now():%Y-%m-%d %H:%M}", "",
        f"- 2-core machine, load average {os.getloadavg()[0]:.2f} at the end; the clients run on it too: "
        f"{args.processes} client processes (bench/leanhttp.py: one keep-alive connection per client, prepared "
        "bytes; aiohttp where the run's label says so), the probe in the bench's own process",
        f"- model: trusted Python, {args.service_ms:g} ms per request, 2 inference threads: capacity "
        f"{capacity:.0f} req/s",
        f"- {args.clients} clients, {args.seconds:g} s per run, all starting in the same instant unless the run's "
        "label says they start at random over a while; a refused client waits what Retry-After says (exactly, or "
        "plus a random jitter of its own as client libraries' backoff adds: see the label), then retries",
        "- client lag: how late each client process's event loop wakes a 10 ms sleep (p99): the share of a "
        "measured latency that is the client's own",
        "- server refusal p99: the server's own histogram of the time from a refused request taking hold of its "
        "model to its refusal (mlport_refusal_duration_seconds, bucket upper bound)",
        "", "| run | goodput req/s | x capacity | accepted p50 ms | accepted p99 ms | p99 bound ms | refused | "
        "refusal p99 ms | after 1st s: accepted / refusal p99 ms | server refusal p99 ms | client lag p99 ms | "
        "server CPU ms/request | other | RSS first/peak/last MB | live p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|---:|",
    ]
    for run in runs:
        goodput = len(run.ok) / run.seconds
        bound = (args.max_queue / goodput + 2 * args.service_ms / 1000) * 1000 if "max_queue" in run.label else 0
        mb = [r / 2**20 for r in run.rss] or [0.0]
        cpu = run.server_cpu * 1000 / max(1, len(run.ok) + len(run.refused))
        lines.append(
            f"| {run.label} | {goodput:.1f} | {goodput / capacity:.2f} | {pct(run.ok, 50) * 1000:.0f} | "
            f"{pct(run.ok, 99) * 1000:.0f} | {f'{bound:.0f}' if bound else '-'} | {len(run.refused)} | "
            f"{pct(run.refused, 99) * 1000:.1f} | {pct(run.ok_later, 99) * 1000:.0f} / "
            f"{pct(run.refused_later, 99) * 1000:.1f} | {run.server_refusal_p99 * 1000:g} | "
            f"{pct(run.lag, 99) * 1000:.1f} | "
            f"{cpu:.2f} | {run.other or '-'} | {mb[0]:.0f}/{max(mb):.0f}/{mb[-1]:.0f} | "
            f"{pct(run.live, 99) * 1000:.1f} |")
    for run in runs:
        if run.retry_after:
            spread = ", ".join(f"{k} s: {v}" for k, v in sorted(run.retry_after.items(), key=lambda kv: float(kv[0])))
            lines += ["", f"Retry-After of the refusals ({run.label}): {spread}."]
    if args.alone:
        took, cpu = args.alone
        lines += ["", "Refusals by themselves (one client, keep-alive, queue full): "
                  f"p50 {pct(took, 50) * 1000:.2f} ms, p99 {pct(took, 99) * 1000:.2f} ms over {len(took)} refusals; "
                  f"server CPU {cpu * 1000 / max(1, len(took)):.3f} ms per refusal (with the blocker's requests)."]
    if args.herd:
        mlport, constant = args.herd
        lines += ["", f"The start's herd by itself ({args.clients} clients opening their connections in the same "
                  "instant and sending one GET, three times; from the instant to the answer): mlport's "
                  f"/v2/health/live p50 {pct(mlport, 50) * 1000:.1f} ms, p99 {pct(mlport, 99) * 1000:.1f} ms; a bare "
                  f"ASGI app under uvicorn answering {{}} p50 {pct(constant, 50) * 1000:.1f} ms, p99 "
                  f"{pct(constant, 99) * 1000:.1f} ms.  A refusal sent in the start's instant pays this before its own "
                  "cost."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--processes", type=int, default=4, help="client processes the clients are split over")
    parser.add_argument("--ramp", type=float, default=1.0,
                        help="a run more whose clients start at random over this many seconds (0: no such run)")
    parser.add_argument("--jitter", type=float, default=1.0,
                        help="a run more whose refused clients wait Retry-After plus up to this many seconds at "
                        "random, as client libraries' backoff does (0: no such run)")
    parser.add_argument("--only-limited", action="store_true", help="skip the run without limits")
    parser.add_argument("--no-aiohttp", dest="aiohttp", action="store_false",
                        help="skip the run more whose clients are aiohttp's")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlport-overload-") as tmp:
        root = build(Path(tmp) / "models", args.service_ms / 1000)
        logs = Path(tmp)
        limits = ("--max-queue", str(args.max_queue))
        runs = [one_run(f"max_queue {args.max_queue}, exact Retry-After", root, logs, args, *limits)]
        if args.jitter:
            runs.append(one_run(f"max_queue {args.max_queue}, Retry-After + up to {args.jitter:g} s", root, logs,
                                args, *limits, jitter=args.jitter))
        if args.ramp:
            runs.append(one_run(f"max_queue {args.max_queue}, exact Retry-After, start over {args.ramp:g} s", root,
                                logs, args, *limits, ramp=args.ramp))
        if args.aiohttp:
            runs.append(one_run(f"max_queue {args.max_queue}, exact Retry-After, aiohttp clients", root, logs, args,
                                *limits, lean=False))
        if not args.only_limited:
            runs.append(one_run("no limits", root, logs, args))
        args.alone = refusals_alone(root, logs)
        args.herd = herd(root, logs, args)
    write_result("overload", report(runs, args))
    return 0


def write_result(kind: str, text: str) -> None:
    """Print a report and keep it as ``bench/results/<kind>-<date>.md``."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{kind}-{dt.datetime.now():%Y-%m-%d-%H%M}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
