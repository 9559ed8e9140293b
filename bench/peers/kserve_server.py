"""A KServe Python model server with a custom Model running ONNX models with onnxruntime.

Usage: ``python kserve_server.py --http_port P --grpc_port G --workers N`` with ``BENCH_MODELS`` set
(``name=path.onnx:intra_op_threads,...``).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import from_np_dtype


class OnnxModel(Model):
    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        self.path = path
        self.threads = threads
        self.load()

    def load(self) -> bool:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def __getstate__(self) -> dict[str, object]:
        # with several workers KServe sends the models to its worker processes: each loads its own session
        state = dict(self.__dict__)
        state.pop("session", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        feed = {i.name: i.as_numpy() for i in payload.inputs}
        results = self.session.run(self.outputs, feed)
        outputs = []
        for name, r in zip(self.outputs, results, strict=True):
            out = InferOutput(name=name, shape=list(r.shape), datatype=from_np_dtype(r.dtype))
            out.set_data_from_numpy(np.ascontiguousarray(r), binary_data=False)
            outputs.append(out)
        # KServe's response needs an id; a request without one gets a fresh one, as KServe's own models do
        return InferResponse(model_name=self.name, infer_outputs=outputs, response_id=payload.id or uuid.uuid4().hex)


def main() -> None:
    # KServe reads its own flags (--http_port, --grpc_port, --workers) when it is imported
    models = []
    for entry in os.environ["BENCH_MODELS"].split(","):
        name, _, rest = entry.partition("=")
        path, _, threads = rest.rpartition(":")
        models.append(OnnxModel(name, path, int(threads)))
    ModelServer().start(models)


if __name__ == "__main__":
    main()
