"""The model name of an OIP gRPC request, read and replaced in its wire form without decoding the rest.

``ModelInferRequest``, ``ModelMetadataRequest`` and ``ModelReadyRequest`` all carry the model's name in field 1
(a string).  The hub's gRPC gateway reads it to name the deployment, and replaces it when the client named the
deployment's registry model: the tensors (``raw_input_contents`` above all) are skipped over, never decoded.
"""

from __future__ import annotations

from mlport.errors import InvalidInput

__all__ = ["model_name", "with_model_name"]

_NAME_FIELD = 1
#: Longest model name read.
MAX_NAME = 1024


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise InvalidInput("the request is not a valid protobuf message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _name_spans(message: bytes) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """The byte ranges of every field-1 entry (tag included), and the range of the last one's value."""
    data = memoryview(message)
    spans: list[tuple[int, int]] = []
    value: tuple[int, int] | None = None
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if field == _NAME_FIELD:
                value = (pos, pos + length)
            pos += length
        else:
            raise InvalidInput("the request is not a valid protobuf message")
        if pos > end:
            raise InvalidInput("the request is not a valid protobuf message")
        if field == _NAME_FIELD:
            if wire != 2:
                raise InvalidInput("the request's model name is not a string")
            spans.append((start, pos))
    return spans, value


def model_name(message: bytes) -> str:
    """The model name of the request (the last field-1 value, as protobuf reads it); '' when there is none."""
    _, value = _name_spans(message)
    if value is None:
        return ""
    if value[1] - value[0] > MAX_NAME:
        raise InvalidInput(f"the model name is longer than {MAX_NAME} bytes")
    try:
        return message[value[0]:value[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the model name is not UTF-8") from None


def with_model_name(message: bytes, name: str) -> bytes:
    """The request with its model name replaced by ``name`` (every field-1 entry dropped, one put first)."""
    spans, _ = _name_spans(message)
    encoded = name.encode("utf-8")
    parts = [bytes([_NAME_FIELD << 3 | 2]), _encode_varint(len(encoded)), encoded]
    pos = 0
    for start, stop in spans:
        parts.append(message[pos:start])
        pos = stop
    parts.append(message[pos:])
    return b"".join(parts)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
