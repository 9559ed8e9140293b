"""``multipart/form-data`` bodies: split one into named parts, or build one from parts.

Parsing uses python-multipart's streaming parser over a body already read within the size
limit; the number of parts is capped by the caller.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from mlport.errors import InvalidInput, PayloadTooLarge

__all__ = ["Part", "boundary_of", "build_multipart", "parse_multipart"]


@dataclass(frozen=True, slots=True)
class Part:
    """One form field: its name, media type (lower case, no parameters; '' when absent) and bytes."""

    name: str
    content_type: str
    data: bytes
    filename: str | None = None
    charset: str | None = None


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` Content-Type header."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInput("multipart/form-data without a boundary parameter in Content-Type")
    if len(boundary) > 200:
        raise InvalidInput("the multipart boundary is longer than 200 characters")
    return boundary


class _Collector:
    """Receives the parser's callbacks and keeps the parts."""

    def __init__(self, max_parts: int) -> None:
        self.max_parts = max_parts
        self.parts: list[Part] = []
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._data = bytearray()
        self.ended = False

    def end(self) -> None:
        self.ended = True

    def part_begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise PayloadTooLarge(f"the multipart body has more than {self.max_parts} parts")
        self._headers = {}
        self._data = bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = bytes(self._value).strip()
        self._field = bytearray()
        self._value = bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def part_end(self) -> None:
        disposition, dparams = parse_options_header(self._headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in dparams:
            raise InvalidInput("every multipart part needs 'Content-Disposition: form-data; name=...'")
        ctype, cparams = parse_options_header(self._headers.get("content-type", b""))
        filename = dparams.get(b"filename")
        charset = cparams.get(b"charset")
        self.parts.append(Part(
            name=dparams[b"name"].decode("utf-8", errors="replace"),
            content_type=ctype.decode("latin-1").lower(),
            data=bytes(self._data),
            filename=filename.decode("utf-8", errors="replace") if filename is not None else None,
            charset=charset.decode("latin-1").lower() if charset is not None else None,
        ))


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, in order.

    Raises :class:`InvalidInput` for a malformed body and :class:`PayloadTooLarge` beyond
    ``max_parts`` parts.
    """
    boundary = boundary_of(content_type)
    sink = _Collector(max_parts)
    parser = MultipartParser(boundary, {
        "on_part_begin": sink.part_begin,
        "on_part_data": sink.part_data,
        "on_part_end": sink.part_end,
        "on_header_field": sink.header_field,
        "on_header_value": sink.header_value,
        "on_header_end": sink.header_end,
        "on_end": sink.end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidInput(f"malformed multipart body: {exc}") from None
    if not sink.ended:
        raise InvalidInput("the multipart body ends before its closing boundary")
    if not sink.parts:
        raise InvalidInput("the multipart body has no parts")
    return sink.parts


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def build_multipart(parts: Iterable[Part]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its Content-Type header value (with the boundary)."""
    chunks: list[bytes] = []
    datas: list[bytes] = []
    for part in parts:
        disposition = f'form-data; name="{_quote(part.name)}"'
        if part.filename is not None:
            disposition += f'; filename="{_quote(part.filename)}"'
        ctype = part.content_type or "application/octet-stream"
        if part.charset:
            ctype += f"; charset={part.charset}"
        chunks.append(f"Content-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n".encode())
        datas.append(part.data)
    boundary = "mlport-" + secrets.token_hex(16)
    while any(boundary.encode() in d for d in datas):  # astronomically unlikely
        boundary = "mlport-" + secrets.token_hex(16)
    sep = b"--" + boundary.encode()
    out = bytearray()
    for head, data in zip(chunks, datas, strict=True):
        out += sep + b"\r\n" + head + data + b"\r\n"
    out += sep + b"--\r\n"
    return bytes(out), f"multipart/form-data; boundary={boundary}"
