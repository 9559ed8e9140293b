"""A sink that posts each logged request to an HTTP receiver as two CloudEvents, in KServe's logger format.

Binary content mode: the ``ce-*`` headers carry the event's attributes (``ce-type`` is
``org.kubeflow.serving.inference.request`` or ``...response``, ``ce-id`` the request id, shared by the pair),
and the body is the request or response as Open Inference Protocol JSON, so receivers written for KServe's
logger read it. Extensions: ``ce-inferenceservicename`` (the model), ``ce-component``, ``ce-endpoint`` and
``ce-modelversion`` (the version that answered).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
import orjson

from mlport.core.logconfig import SinkConfig
from mlport.observability.requestlog.records import MAX_ID, Captured, datatype_of, element_bytes, iso_time

__all__ = ["REQUEST_TYPE", "RESPONSE_TYPE", "CloudEventsSink"]

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


def _oip_tensor(name: str, arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    datatype = datatype_of(arr)
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
    if datatype != "BYTES":
        out["data"] = arr.ravel().tolist()
        return out
    values = element_bytes(arr)
    try:
        out["data"] = [v.decode("utf-8") for v in values]
    except UnicodeDecodeError:
        out["data"] = [base64.b64encode(v).decode("ascii") for v in values]
        out["parameters"] = {"content_encoding": "base64"}
    return out


def _tensors(arrays: Mapping[str, np.ndarray[Any, Any]] | None) -> list[dict[str, Any]]:
    return [_oip_tensor(n, a) for n, a in (arrays or {}).items()]


class CloudEventsSink:
    """Posts events with one HTTP client, from the writer thread only; a failed post raises."""

    def __init__(self, sink: SinkConfig) -> None:
        self.url = sink.url
        self._client = httpx.Client(timeout=sink.timeout_s, trust_env=False)
        self._source = f"urn:mlport:{socket.gethostname()}"

    def _post(self, c: Captured, rid: str, kind: str, body: dict[str, Any]) -> None:
        headers = {
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": rid,
            "ce-type": kind,
            "ce-source": self._source,
            "ce-time": iso_time(c.time),
            "ce-inferenceservicename": c.model,
            "ce-component": "predictor",
            "ce-endpoint": c.version,
            "ce-modelversion": c.version,
        }
        answer = self._client.post(self.url, content=orjson.dumps(body), headers=headers)
        answer.raise_for_status()

    def encode(self, batch: list[Captured]) -> list[Captured]:
        return batch  # turned into JSON on the writer thread, which mostly waits for the receiver

    def write(self, batches: list[list[Captured]]) -> None:
        for c in (c for batch in batches for c in batch):
            rid = (c.request_id or "")[:MAX_ID] or f"{c.model}-{c.time:.6f}"
            self._post(c, rid, REQUEST_TYPE, {"id": rid, "inputs": _tensors(c.inputs)})
            body: dict[str, Any] = {"id": rid, "model_name": c.model, "model_version": c.version,
                                    "outputs": _tensors(c.outputs)}
            params = {k: v for k, v in (c.parameters or {}).items() if k in ("routed_to", "answered_by")}
            if c.status != "ok":
                params["status"] = c.status
            if params:
                body["parameters"] = params
            self._post(c, rid, RESPONSE_TYPE, body)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self._client.close()
