"""The floor: a bare ASGI app that decodes OIP v2 JSON with orjson, calls onnxruntime and encodes with orjson.

No framework, no validation beyond what it needs, no metrics: what any server doing this work must at least
spend.  Models come from ``BENCH_MODELS``: ``name=path.onnx:intra_op_threads,...``.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import orjson
from constant import lifespan

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _sessions() -> dict[str, tuple[ort.InferenceSession, list[str]]]:
    found = {}
    for entry in os.environ["BENCH_MODELS"].split(","):
        name, _, rest = entry.partition("=")
        path, _, threads = rest.rpartition(":")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        found[name] = (sess, [o.name for o in sess.get_outputs()])
    return found


SESSIONS = _sessions()


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    parts = scope["path"].split("/")  # /v2/models/{name}/infer
    if scope["method"] != "POST" or len(parts) != 5 or parts[4] != "infer" or parts[3] not in SESSIONS:
        await _answer(send, 404, b'{"error":"not found"}')
        return
    sess, names = SESSIONS[parts[3]]
    doc = orjson.loads(await _body(receive))
    feed = {t["name"]: np.asarray(t["data"], dtype=_DTYPES[t["datatype"]]).reshape(t["shape"]) for t in doc["inputs"]}
    results = sess.run(names, feed)
    outputs = [{"name": n, "datatype": _NAMES[r.dtype], "shape": r.shape, "data": r.reshape(-1)}
               for n, r in zip(names, results, strict=True)]
    await _answer(send, 200, orjson.dumps({"model_name": parts[3], "outputs": outputs},
                                          option=orjson.OPT_SERIALIZE_NUMPY))
