"""The protocol-neutral request and response that every codec produces and consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InferenceRequest", "InferenceResponse", "Parameters"]

Parameters = dict[str, Any]


@dataclass(slots=True)
class InferenceRequest:
    """Named input arrays, batched on axis 0 unless ``single`` says the caller sent one instance.

    ``outputs`` names the outputs the caller wants (``None``: all of them).
    ``single`` asks the codec to answer without the batch axis.
    """

    inputs: dict[str, np.ndarray[Any, Any]]
    outputs: list[str] | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    single: bool = False


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
