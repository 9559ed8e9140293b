"""Protocol- and format-neutral types: datatypes, tensor specs, signatures, requests."""

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.types import DataType, Signature, TensorSpec

__all__ = ["DataType", "InferenceRequest", "InferenceResponse", "Signature", "TensorSpec"]
