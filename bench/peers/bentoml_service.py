"""A BentoML service answering OIP v2 JSON infer requests with onnxruntime (``bentoml serve
bentoml_service:Onnx``); models from ``BENCH_MODELS`` (``name=path.onnx:intra_op_threads,...``)."""

from __future__ import annotations

import os
import typing as t

import bentoml
import numpy as np
import onnxruntime as ort

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _load() -> dict[str, tuple[ort.InferenceSession, list[str]]]:
    found = {}
    for entry in os.environ["BENCH_MODELS"].split(","):
        name, _, rest = entry.partition("=")
        path, _, threads = rest.rpartition(":")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        found[name] = (sess, [o.name for o in sess.get_outputs()])
    return found


@bentoml.service
class Onnx:
    def __init__(self) -> None:
        self.sessions = _load()

    def _infer(self, name: str, inputs: list[dict[str, t.Any]]) -> dict[str, t.Any]:
        sess, names = self.sessions[name]
        feed = {i["name"]: np.asarray(i["data"], dtype=_DTYPES[i["datatype"]]).reshape(i["shape"]) for i in inputs}
        results = sess.run(names, feed)
        return {"model_name": name, "outputs": [
            {"name": n, "datatype": _NAMES[r.dtype], "shape": list(r.shape), "data": r.ravel().tolist()}
            for n, r in zip(names, results, strict=True)]}

    @bentoml.api(route="/v2/models/iris/infer")
    def iris(self, inputs: list[dict[str, t.Any]]) -> dict[str, t.Any]:
        return self._infer("iris", inputs)

    @bentoml.api(route="/v2/models/cnn/infer")
    def cnn(self, inputs: list[dict[str, t.Any]]) -> dict[str, t.Any]:
        return self._infer("cnn", inputs)
