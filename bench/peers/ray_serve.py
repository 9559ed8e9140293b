"""Ray Serve 2.60 serving the iris ONNX model with onnxruntime, answering the Open Inference Protocol's JSON.

Usage (in the ``ray`` venv of bench/run.py): ``python ray_serve.py --port P [--replicas N] [--max-ongoing M]``
with ``BENCH_MODELS`` set (``name=path.onnx:intra_op_threads,...``): one Serve application per model, at route
prefix ``/v2/models/{name}``, answering ``POST /v2/models/{name}/infer`` with the same body shape as mlport
(``outputs`` by name, shape, datatype, data).

Ray runs locally on 127.0.0.1 only (its own temporary folder, no dashboard), and ``SIGTERM`` ends it cleanly:
``serve.shutdown()`` then ``ray.shutdown()``.

Tuning, as a Ray user would for a tiny model on 2 cores (bench/run.py and bench/gateway.py pass
``--replicas 2``): two replicas (on this 2-core machine under the same load, 2 replicas gave 2.0x and 2.8x the
req/s of one at c=64 in two alternating tries: with one, the replica's event loop is the bottleneck, while
Ray's HTTP proxy runs in its own process), an ``async`` handler (the prediction takes microseconds, so it runs
on the replica's event loop, no thread hop), ``max_ongoing_requests`` 64 (the default of 5 leaves replicas
idle while the proxy queues requests at c=64), no CPU reservation per replica (``num_cpus`` 0, so both fit
beside Ray's own processes), access logs off and log level WARNING.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import threading
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--max-ongoing", type=int, default=64)
    args = parser.parse_args()
    stop = threading.Event()
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
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
        serve.shutdown()
        ray.shutdown()
        print("ray serve stopped", flush=True)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
