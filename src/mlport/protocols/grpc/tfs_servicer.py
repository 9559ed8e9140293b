"""TF Serving's gRPC API: ``tensorflow.serving.PredictionService`` and ``ModelService`` (grpc.aio).

They run on the gRPC port beside the Open Inference Protocol service and go through the same
:class:`InferenceService` (readiness, limits, metrics), with the REST API's status and metadata
(:mod:`mlport.protocols.tfserving`), so the two TF Serving front ends answer alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from google.protobuf import json_format

from mlport.core.inference import InferenceRequest
from mlport.core.types import Signature
from mlport.errors import InvalidInput
from mlport.protocols.grpc import tfs_codec as codec
from mlport.protocols.grpc.proto import tf_serving_pb2 as spb
from mlport.protocols.grpc.servicer import _rpc
from mlport.protocols.service import Call, InferenceService
from mlport.protocols.tfserving import model_status, resolve_version, served_metadata

__all__ = ["MODEL_SERVICE", "PREDICTION_SERVICE", "ModelServicer", "PredictionServicer"]

PREDICTION_SERVICE: str = spb.DESCRIPTOR.services_by_name["PredictionService"].full_name
MODEL_SERVICE: str = spb.DESCRIPTOR.services_by_name["ModelService"].full_name
#: The protocol label of these calls in the metrics.
PROTOCOL = "tfs-grpc"
#: The one metadata field TF Serving serves.
SIGNATURE_DEF = "signature_def"


def _target(service: InferenceService, spec: Any) -> tuple[str, int | str | None]:
    """The model and version a ``ModelSpec`` names (a number, a label, or the latest)."""
    name = spec.name
    if not name:
        raise InvalidInput("model_spec.name is empty: name the model")
    choice = spec.WhichOneof("version_choice")
    version: int | None = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return name, resolve_version(service.manager, name, version, label)


def _signature_name(call: Call, spec: Any) -> str:
    """The signature a call uses: the one named (refused when the model has none of that name), or the default."""
    return call.model.evaluator.for_signature(spec.signature_name or None).signature_name


class PredictionServicer:
    """``Predict``, ``Classify``, ``Regress`` and ``GetModelMetadata``."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service

    @_rpc
    async def Predict(self, request: Any, context: Any) -> Any:
        name, version = _target(self._service, request.model_spec)
        async with self._service.call(name, version, PROTOCOL) as call:
            signature_name = _signature_name(call, request.model_spec)
            inference = codec.decode_predict_request(request, self._service.limits, signature_name)
            response = await call.infer(inference)
            return codec.encode_predict_response(response, signature_name)

    async def _examples(
        self, request: Any, choose: Callable[[Signature, str], list[str]]
    ) -> tuple[Any, dict[str, np.ndarray[Any, Any]]]:
        """Run the model on the request's examples for the outputs ``choose`` picks from the signature;
        returns the answer's model spec and those outputs."""
        name, version = _target(self._service, request.model_spec)
        async with self._service.call(name, version, PROTOCOL) as call:
            evaluator = call.model.evaluator.for_signature(request.model_spec.signature_name or None)
            wanted = choose(evaluator.signature, evaluator.signature_name)
            inputs = codec.examples_to_inputs(request.input, evaluator.signature, self._service.limits)
            inference = InferenceRequest(inputs=inputs, outputs=wanted,
                                         parameters={"signature_name": evaluator.signature_name})
            response = await call.infer(inference)
            return codec.model_spec(name, call.model.version, evaluator.signature_name), response.outputs

    @_rpc
    async def Classify(self, request: Any, context: Any) -> Any:
        picked: list[str | None] = []

        def choose(signature: Signature, signature_name: str) -> list[str]:
            picked.extend(codec.classify_outputs(signature, signature_name))
            return [n for n in picked if n is not None]

        spec, outputs = await self._examples(request, choose)
        scores, classes = (outputs.get(n) if n is not None else None for n in picked)
        return spb.ClassificationResponse(model_spec=spec, result=codec.classification_result(scores, classes))

    @_rpc
    async def Regress(self, request: Any, context: Any) -> Any:
        def choose(signature: Signature, signature_name: str) -> list[str]:
            return [codec.regress_output(signature, signature_name)]

        spec, outputs = await self._examples(request, choose)
        (values,) = outputs.values()
        return spb.RegressionResponse(model_spec=spec, result=codec.regression_result(values))

    @_rpc
    async def GetModelMetadata(self, request: Any, context: Any) -> Any:
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidInput(f"metadata_field is empty; ask for '{SIGNATURE_DEF}'")
        unknown = [f for f in fields if f != SIGNATURE_DEF]
        if unknown:
            raise InvalidInput(f"metadata field '{unknown[0]}' is not served; ask for '{SIGNATURE_DEF}'")
        name, version = _target(self._service, request.model_spec)
        doc = await served_metadata(self._service.manager, name, version)
        signature_defs = json_format.ParseDict(doc["metadata"][SIGNATURE_DEF], spb.SignatureDefMap())
        served = int(doc["model_spec"]["version"])
        answer = spb.GetModelMetadataResponse(model_spec=codec.model_spec(name, served, ""))
        answer.metadata[SIGNATURE_DEF].Pack(signature_defs)
        return answer


class ModelServicer:
    """``GetModelStatus``: every version of a model, or the one its spec names."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service

    @_rpc
    async def GetModelStatus(self, request: Any, context: Any) -> Any:
        name, version = _target(self._service, request.model_spec)
        status = self._service.manager.status(name)
        doc = model_status(status, None if version is None else int(version))
        return json_format.ParseDict(doc, spb.GetModelStatusResponse())
