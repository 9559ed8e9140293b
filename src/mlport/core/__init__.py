"""Protocol- and format-neutral types: datatypes, tensor specs, signatures, requests."""

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.core.inference import InferenceRequest, InferenceResponse

__all__ = ["DataType", "InferenceRequest", "InferenceResponse", "Signature", "TensorSpec"]
