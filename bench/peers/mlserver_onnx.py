"""An MLServer runtime that runs an ONNX model with onnxruntime (MLServer has no ONNX runtime of its own).

The model's ``parameters.uri`` is the .onnx file; ``parameters.extra.intra_op_threads`` its thread count.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        params = self.settings.parameters
        so = ort.SessionOptions()
        so.intra_op_num_threads = int((params.extra or {}).get("intra_op_threads", 0))
        self._session = ort.InferenceSession(params.uri, so, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(self._outputs, feed)
        return InferenceResponse(
            model_name=self.name, id=payload.id,
            outputs=[NumpyCodec.encode_output(name, r) for name, r in zip(self._outputs, results, strict=True)],
        )
