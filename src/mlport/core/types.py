"""Datatypes, tensor specs and model signatures."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DataType", "Signature", "TensorSpec"]


class DataType(enum.Enum):
    """Tensor element types, named as in the Open Inference Protocol."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def numpy(self) -> np.dtype[Any]:
        return _TO_NUMPY[self]

    @property
    def short_name(self) -> str:
        """The name used by the describe/eval API (``float32``, ``int64``, ``string``...)."""
        return _SHORT[self]

    @property
    def tf_name(self) -> str:
        """The name used by TF Serving metadata (``DT_FLOAT``...)."""
        return _TF[self]

    @property
    def itemsize(self) -> int:
        """Bytes per element in the binary wire form (0 for variable-length BYTES)."""
        return 0 if self is DataType.BYTES else self.numpy.itemsize

    @classmethod
    def parse(cls, name: str) -> DataType:
        """Accept OIP names (``FP32``), short names (``float32``) and Triton ``TYPE_FP32``."""
        key = name.strip()
        if key.upper().startswith("TYPE_"):
            key = key[5:]
        found = _BY_NAME.get(key.upper()) or _BY_SHORT.get(key.lower())
        if found is None:
            raise ValueError(f"unknown datatype {name!r}")
        return found

    @classmethod
    def from_numpy(cls, dtype: np.dtype[Any]) -> DataType:
        if dtype.kind in ("U", "S", "O"):
            return DataType.BYTES
        found = _FROM_NUMPY.get(np.dtype(dtype).newbyteorder("="))
        if found is None:
            raise ValueError(f"numpy dtype {dtype} has no tensor datatype")
        return found


_TO_NUMPY: dict[DataType, np.dtype[Any]] = {
    DataType.BOOL: np.dtype(np.bool_),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.UINT16: np.dtype(np.uint16),
    DataType.UINT32: np.dtype(np.uint32),
    DataType.UINT64: np.dtype(np.uint64),
    DataType.INT8: np.dtype(np.int8),
    DataType.INT16: np.dtype(np.int16),
    DataType.INT32: np.dtype(np.int32),
    DataType.INT64: np.dtype(np.int64),
    DataType.FP16: np.dtype(np.float16),
    DataType.FP32: np.dtype(np.float32),
    DataType.FP64: np.dtype(np.float64),
    DataType.BYTES: np.dtype(object),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items() if k is not DataType.BYTES}
_SHORT = {
    DataType.BOOL: "bool",
    DataType.UINT8: "uint8",
    DataType.UINT16: "uint16",
    DataType.UINT32: "uint32",
    DataType.UINT64: "uint64",
    DataType.INT8: "int8",
    DataType.INT16: "int16",
    DataType.INT32: "int32",
    DataType.INT64: "int64",
    DataType.FP16: "float16",
    DataType.FP32: "float32",
    DataType.FP64: "float64",
    DataType.BYTES: "string",
}
_TF = {
    DataType.BOOL: "DT_BOOL",
    DataType.UINT8: "DT_UINT8",
    DataType.UINT16: "DT_UINT16",
    DataType.UINT32: "DT_UINT32",
    DataType.UINT64: "DT_UINT64",
    DataType.INT8: "DT_INT8",
    DataType.INT16: "DT_INT16",
    DataType.INT32: "DT_INT32",
    DataType.INT64: "DT_INT64",
    DataType.FP16: "DT_HALF",
    DataType.FP32: "DT_FLOAT",
    DataType.FP64: "DT_DOUBLE",
    DataType.BYTES: "DT_STRING",
}
_BY_NAME = {d.value: d for d in DataType}
_BY_SHORT = {**{s: d for d, s in _SHORT.items()}, "float": DataType.FP32, "double": DataType.FP64,
             "str": DataType.BYTES, "bytes": DataType.BYTES, "half": DataType.FP16}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named tensor of a signature; ``-1`` in ``shape`` marks a free dimension."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]

    @property
    def batched(self) -> bool:
        """True when axis 0 is a free batch axis."""
        return len(self.shape) > 0 and self.shape[0] == -1

    def shape_matches(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(want == -1 or want == got for want, got in zip(self.shape, shape, strict=True))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.datatype.short_name, "shape": list(self.shape)}

    def oip(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype.value, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    """What a model takes and returns."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    _in: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _out: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_in", {t.name: t for t in self.inputs})
        object.__setattr__(self, "_out", {t.name: t for t in self.outputs})

    def input(self, name: str) -> TensorSpec | None:
        return self._in.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self._out.get(name)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def describe(self) -> dict[str, Any]:
        return {"inputs": [t.describe() for t in self.inputs], "outputs": [t.describe() for t in self.outputs]}
