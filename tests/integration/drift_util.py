"""What the drift tests share: a model with a reference profile made by ``mlport profile``, a webhook receiver."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.builders import scale_onnx

REFERENCE_ROWS = 3000


def write_csv(path: Path, rows: np.ndarray) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c"])
        w.writerows(rows.tolist())
    return path


def profiled_model(folder: Path, config: str) -> Path:
    """``folder``: y = 2x over inputs a, b, c (one input x [-1, 3]), its model.yaml, and profile.json computed by
    ``mlport profile`` from standard normal reference data."""
    scale_onnx(folder / "1" / "model.onnx", 2.0)
    (folder / "model.yaml").write_text("fields: {x: {a: 0, b: 1, c: 2}}\n" + config)
    ref = np.random.default_rng(0).normal(size=(REFERENCE_ROWS, 3))
    data = write_csv(folder.parent / "reference.csv", ref)
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "profile", str(data), "--model", str(folder),
                           "-o", str(folder / "profile.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"profiled {REFERENCE_ROWS} rows" in done.stderr
    return folder


def send(client: httpx.Client, url: str, rows: np.ndarray, per_request: int = 10) -> list[dict[str, Any]]:
    """``rows`` to the model over OIP, ``per_request`` at a time; the answers' parameters."""
    params = []
    for start in range(0, len(rows), per_request):
        chunk = rows[start:start + per_request].astype(np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(chunk.shape),
                            "data": chunk.ravel().tolist()}]}
        r = client.post(url, json=body)
        assert r.status_code == 200, r.text
        params.append(r.json().get("parameters") or {})
    return params


class Receiver:
    """A real HTTP server on 127.0.0.1 that records the JSON POSTs it gets; it answers ``fail_first`` of them 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                receiver.bodies.append(body)
                self.send_response(500 if len(receiver.bodies) <= receiver.fail_first else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def receiver(fail_first: int = 0) -> Iterator[Receiver]:
    with Receiver(fail_first) as r:
        yield r
