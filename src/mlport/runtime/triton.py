"""Triton model configuration (``config.pbtxt``) read into a :class:`ModelConfig`.

A Triton model repository (``<repo>/<model>/config.pbtxt``, ``<repo>/<model>/<version>/model.onnx``)
serves unchanged: the file is protobuf text format, read here by a small parser with limits (size,
nesting, values) into a tree, then checked against the fields of Triton's ``ModelConfig`` that
mlport uses:

- ``name`` (must be the folder's name, as in Triton), ``platform`` / ``backend`` (the format);
- ``max_batch_size``: when above 0, the ``dims`` of inputs and outputs exclude the batch axis, so
  the served shape is ``[-1, *dims]``;
- ``input`` / ``output``: ``name``, ``data_type`` (``TYPE_FP32``...), ``dims``: the declared signature;
- ``version_policy``: ``latest { num_versions }``, ``all {}``, ``specific { versions }``;
- ``dynamic_batching``: ``max_queue_delay_microseconds``, ``preferred_batch_size`` (with
  ``max_batch_size``: the batching settings);
- ``default_model_filename``: the model file in each version folder;
- ``parameters`` ``intra_op_thread_count`` / ``inter_op_thread_count`` for ONNX models.

Every other field (``instance_group``, ``optimization``...) and any unknown one is ignored and
named in :attr:`TritonModel.warnings`. A malformed file raises :class:`InvalidInput` naming the
line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlport.core.types import DataType
from mlport.errors import InvalidInput
from mlport.formats.config import BatchingConfig, ModelConfig, SignatureConfig, TensorConfig, VersionPolicy

__all__ = [
    "MAX_CONFIG_BYTES",
    "TRITON_CONFIG_NAME",
    "TritonModel",
    "parse_text_format",
    "parse_triton_config",
    "read_triton_config",
]

TRITON_CONFIG_NAME = "config.pbtxt"
#: Largest config file read.
MAX_CONFIG_BYTES = 1024 * 1024
#: Deepest nesting of messages, and most values, in one file.
MAX_DEPTH = 32
MAX_VALUES = 100_000
_MAX_DELAY_US = 10_000_000

# ------------------------------------------------------------------------------ text format


@dataclass(frozen=True, slots=True)
class Scalar:
    """One scalar value: ``kind`` is ``string`` (already unescaped), ``number`` or ``ident``."""

    kind: str
    text: str
    line: int
    col: int


@dataclass(slots=True)
class Message:
    """One message: every field's values in the order given (repeated fields hold several)."""

    line: int
    col: int
    fields: dict[str, list[Scalar | Message]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    line: int
    col: int


_TOKEN = re.compile(
    r"""
    (?P<newline>\n)
  | (?P<space>[ \t\r\f\v]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9A-Fa-f]+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fF]?)(?![A-Za-z0-9_.]))
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<symbol>[{}<>\[\]:,;./])
    """,
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|[xX]([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.S)
_SIMPLE_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v",
                   "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}


class _Error(Exception):
    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            ch = text[pos]
            what = "an unterminated string" if ch in "\"'" else f"unexpected character {ch!r}"
            raise _Error(what, line, col)
        kind = m.lastgroup or ""
        if kind == "newline":
            line, line_start = line + 1, m.end()
        elif kind not in ("space", "comment"):
            found.append(_Token(kind, m.group(), line, col))
            if len(found) > 4 * MAX_VALUES:
                raise _Error(f"more than {4 * MAX_VALUES} tokens", line, col)
        pos = m.end()
    return found


def _unescape(token: _Token) -> str:
    body = token.text[1:-1]
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(body):
        out += body[pos : m.start()].encode("utf-8")
        octal, hex_, u4, u8, other = m.groups()
        if octal is not None:
            if int(octal, 8) > 0xFF:
                raise _Error(f"octal escape \\{octal} is above \\377", token.line, token.col)
            out.append(int(octal, 8))
        elif hex_ is not None:
            out.append(int(hex_, 16))
        elif u4 is not None or u8 is not None:
            point = int(u4 or u8 or "0", 16)
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                raise _Error(f"escape {m.group()} is not a Unicode character", token.line, token.col)
            out += chr(point).encode("utf-8")
        elif other in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[other]
        else:
            raise _Error(f"unknown escape \\{other} in a string", token.line, token.col)
        pos = m.end()
    out += body[pos:].encode("utf-8")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise _Error("a string is not UTF-8 text", token.line, token.col) from None


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.values = 0

    def _peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self, what: str) -> _Token:
        tok = self._peek()
        if tok is None:
            last = self.tokens[-1] if self.tokens else _Token("", "", 1, 1)
            raise _Error(f"the file ends where {what} was expected", last.line, last.col + len(last.text))
        self.pos += 1
        return tok

    def _accept(self, symbol: str) -> bool:
        tok = self._peek()
        if tok is not None and tok.kind == "symbol" and tok.text == symbol:
            self.pos += 1
            return True
        return False

    def _is(self, *symbols: str) -> bool:
        tok = self._peek()
        return tok is not None and tok.kind == "symbol" and tok.text in symbols

    def parse(self) -> Message:
        root = Message(1, 1)
        self._fields(root, None, 0)
        return root

    def _fields(self, message: Message, end: str | None, depth: int) -> None:
        while True:
            tok = self._peek()
            if tok is None:
                if end is not None:
                    raise _Error(f"'{end}' is missing to close the message opened here", message.line, message.col)
                return
            if end is not None and self._accept(end):
                return
            name = self._field_name()
            self._field_value(message, name, depth)
            if not self._accept(","):
                self._accept(";")

    def _field_name(self) -> str:
        tok = self._next("a field name")
        if tok.kind == "ident" and not tok.text.startswith("-"):
            return tok.text
        if tok.kind == "symbol" and tok.text == "[":
            parts: list[str] = []
            while not self._accept("]"):
                part = self._next("']'")
                if part.kind not in ("ident", "symbol") or part.text in "[]{}<>:,;":
                    raise _Error(f"unexpected {part.text!r} in an extension name", part.line, part.col)
                parts.append(part.text)
            return "[" + "".join(parts) + "]"
        raise _Error(f"expected a field name, got {tok.text!r}", tok.line, tok.col)

    def _add(self, message: Message, name: str, value: Scalar | Message) -> None:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _Error(f"more than {MAX_VALUES} values", value.line, value.col)
        message.fields.setdefault(name, []).append(value)

    def _field_value(self, message: Message, name: str, depth: int) -> None:
        colon = self._accept(":")
        if self._is("{", "<"):
            self._add(message, name, self._message(depth))
            return
        if self._accept("["):
            message.fields.setdefault(name, [])
            if self._accept("]"):
                return
            while True:
                if self._is("{", "<"):
                    self._add(message, name, self._message(depth))
                elif colon:
                    self._add(message, name, self._scalar())
                else:
                    tok = self._next("a message")
                    raise _Error(f"field '{name}': a list without ':' holds messages, got {tok.text!r}",
                                 tok.line, tok.col)
                if self._accept("]"):
                    return
                if not self._accept(","):
                    tok = self._next("',' or ']'")
                    raise _Error(f"expected ',' or ']' in the list of '{name}', got {tok.text!r}", tok.line, tok.col)
        if not colon:
            tok = self._next("':'")
            raise _Error(f"expected ':' or '{{' after field '{name}', got {tok.text!r}", tok.line, tok.col)
        self._add(message, name, self._scalar())

    def _message(self, depth: int) -> Message:
        opening = self._next("'{'")
        if depth + 1 > MAX_DEPTH:
            raise _Error(f"messages nest deeper than {MAX_DEPTH} levels", opening.line, opening.col)
        message = Message(opening.line, opening.col)
        self._fields(message, "}" if opening.text == "{" else ">", depth + 1)
        return message

    def _scalar(self) -> Scalar:
        tok = self._next("a value")
        if tok.kind == "string":
            text = _unescape(tok)
            while (nxt := self._peek()) is not None and nxt.kind == "string":
                self.pos += 1
                text += _unescape(nxt)
            return Scalar("string", text, tok.line, tok.col)
        if tok.kind in ("number", "ident"):
            return Scalar(tok.kind, tok.text, tok.line, tok.col)
        raise _Error(f"expected a value, got {tok.text!r}", tok.line, tok.col)


def parse_text_format(text: str, source: str = TRITON_CONFIG_NAME) -> Message:
    """Parse protobuf text format into a :class:`Message` tree (no schema); raise :class:`InvalidInput`."""
    if len(text) > MAX_CONFIG_BYTES:
        raise InvalidInput(f"{source} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        return _Parser(_tokens(text)).parse()
    except _Error as exc:
        raise InvalidInput(f"{source}, line {exc.line}, column {exc.col}: {exc.message}") from None


# ----------------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class _Field:
    kind: str  # string | int | bool | enum | message
    repeated: bool = False
    fields: Mapping[str, _Field] | None = None


_RESHAPE = _Field("message", fields={"shape": _Field("int", repeated=True)})
_TENSOR = {"name": _Field("string"), "data_type": _Field("enum"), "dims": _Field("int", repeated=True),
           "reshape": _RESHAPE}
_SCHEMA: dict[str, _Field] = {
    "name": _Field("string"),
    "platform": _Field("string"),
    "backend": _Field("string"),
    "max_batch_size": _Field("int"),
    "default_model_filename": _Field("string"),
    "version_policy": _Field("message", fields={
        "latest": _Field("message", fields={"num_versions": _Field("int")}),
        "all": _Field("message", fields={}),
        "specific": _Field("message", fields={"versions": _Field("int", repeated=True)}),
    }),
    "input": _Field("message", repeated=True, fields=_TENSOR),
    "output": _Field("message", repeated=True, fields=_TENSOR),
    "dynamic_batching": _Field("message", fields={
        "preferred_batch_size": _Field("int", repeated=True),
        "max_queue_delay_microseconds": _Field("int"),
    }),
    "parameters": _Field("message", repeated=True, fields={
        "key": _Field("string"),
        "value": _Field("message", fields={"string_value": _Field("string")}),
    }),
}

#: Platform or backend -> mlport format.
_FORMATS = {
    "onnxruntime_onnx": "onnx",
    "onnxruntime": "onnx",
    "pytorch_libtorch": "torch",
    "pytorch": "torch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow": "tensorflow",
}
#: ONNX Runtime backend parameters -> mlport's onnx options.
_ORT_PARAMETERS = {"intra_op_thread_count": "intra_op_threads", "inter_op_thread_count": "inter_op_threads"}
_INT_RE = re.compile(r"^-?(?:0[xX][0-9A-Fa-f]+|\d+)$")


def _integer(text: str) -> int:
    """A text-format integer: decimal, hex (``0x``) or octal (a leading ``0``), with an optional sign."""
    digits = text.lstrip("-")
    sign = -1 if text.startswith("-") else 1
    if digits[:2] in ("0x", "0X"):
        return sign * int(digits[2:], 16)
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits[1:], 8)
    return sign * int(digits)


class _Reader:
    """Checks a :class:`Message` against the schema; collects the paths of fields it ignores."""

    def __init__(self) -> None:
        self.ignored: set[str] = set()

    def read(self, message: Message, schema: Mapping[str, _Field], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values in message.fields.items():
            spec = schema.get(name)
            if spec is None:
                self.ignored.add(path + name)
                continue
            if not spec.repeated and len(values) > 1:
                raise _Error(f"'{path}{name}' is given {len(values)} times; it takes one value",
                             values[1].line, values[1].col)
            read = [self._value(v, spec, path + name) for v in values]
            out[name] = read if spec.repeated else read[0] if read else None
        return out

    def _value(self, value: Scalar | Message, spec: _Field, path: str) -> Any:
        if spec.kind == "message":
            if not isinstance(value, Message):
                raise _Error(f"'{path}' is a message: write {path.rsplit('.', 1)[-1]} {{ ... }}", value.line, value.col)
            return (self.read(value, spec.fields or {}, path + "."), value)
        if isinstance(value, Message):
            raise _Error(f"'{path}' takes a value, not a message", value.line, value.col)
        if spec.kind == "string":
            if value.kind != "string":
                raise _Error(f"'{path}' takes a quoted string, got {value.text}", value.line, value.col)
            return value.text
        if spec.kind == "int":
            if value.kind != "number" or not _INT_RE.match(value.text):
                raise _Error(f"'{path}' takes an integer, got {value.text}", value.line, value.col)
            try:
                number = _integer(value.text)
            except ValueError:
                raise _Error(f"'{path}' takes an integer, got {value.text}", value.line, value.col) from None
            if not -(2**63) <= number < 2**64:
                raise _Error(f"'{path}': {value.text} is out of range", value.line, value.col)
            return number
        if spec.kind == "bool":
            if value.text in ("true", "True", "t", "1"):
                return True
            if value.text in ("false", "False", "f", "0"):
                return False
            raise _Error(f"'{path}' takes true or false, got {value.text}", value.line, value.col)
        if value.kind != "ident":
            raise _Error(f"'{path}' takes a name (an enum value), got {value.text}", value.line, value.col)
        return value.text


# ------------------------------------------------------------------------------ to mlport


@dataclass(frozen=True, slots=True)
class TritonModel:
    """What a ``config.pbtxt`` says, as mlport uses it."""

    config: ModelConfig
    #: The model file or folder inside each version folder (``default_model_filename``), when given.
    model_filename: str | None
    #: The platform or backend named (``onnxruntime_onnx``...), when given.
    platform: str | None
    #: What mlport does not use, in sentences for the log.
    warnings: tuple[str, ...]


def _format(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    platform, backend = doc.get("platform"), doc.get("backend")
    found: dict[str, str] = {}
    for key, value in (("platform", platform), ("backend", backend)):
        if value:
            fmt = _FORMATS.get(value)
            if fmt is None:
                served = ", ".join(sorted(_FORMATS))
                raise InvalidInput(f"{key} '{value}' is not served by mlport; it serves {served}")
            found[key] = fmt
    if len(set(found.values())) > 1:
        raise InvalidInput(f"platform '{platform}' and backend '{backend}' name different frameworks")
    fmt = next(iter(found.values()), None)
    return fmt, platform or backend


def _version_policy(entry: tuple[dict[str, Any], Message] | None) -> VersionPolicy:
    if entry is None:
        return VersionPolicy()
    doc, where = entry
    kinds = [k for k in ("latest", "all", "specific") if doc.get(k) is not None]
    if len(kinds) > 1:
        raise _Error(f"version_policy takes one of latest, all, specific; got {', '.join(kinds)}",
                     where.line, where.col)
    if not kinds:
        return VersionPolicy()
    inner, at = doc[kinds[0]]
    if kinds[0] == "latest":
        n = inner.get("num_versions")
        if n is None or n < 1:
            raise _Error("version_policy.latest.num_versions must be 1 or more", at.line, at.col)
        return VersionPolicy(latest=n)
    if kinds[0] == "all":
        return VersionPolicy(all=True)
    versions = inner.get("versions") or []
    if not versions or any(v < 0 for v in versions):
        raise _Error("version_policy.specific.versions must list version numbers", at.line, at.col)
    return VersionPolicy(specific=tuple(versions))


def _tensor(entry: tuple[dict[str, Any], Message], kind: str, batched: bool) -> TensorConfig:
    doc, where = entry
    name = doc.get("name")
    if not name:
        raise _Error(f"an {kind} has no name", where.line, where.col)
    raw_type = doc.get("data_type")
    if raw_type is None:
        raise _Error(f"{kind} '{name}' has no data_type", where.line, where.col)
    if not raw_type.startswith("TYPE_"):
        raise _Error(f"{kind} '{name}': data_type must be a TYPE_* name, got {raw_type}", where.line, where.col)
    try:
        datatype = DataType.parse(raw_type)
    except ValueError:
        raise _Error(f"{kind} '{name}': mlport has no datatype for {raw_type}", where.line, where.col) from None
    dims = tuple(doc.get("dims") or ())
    if any(d < -1 for d in dims):
        raise _Error(f"{kind} '{name}': dims are sizes or -1, got {list(dims)}", where.line, where.col)
    shape = (-1, *dims) if batched else dims
    reshape: tuple[int, ...] | None = None
    if doc.get("reshape") is not None:
        inner = tuple(doc["reshape"][0].get("shape") or ())
        reshape = (-1, *inner) if batched else inner
    return TensorConfig(name=name, datatype=datatype.value, shape=shape, reshape=reshape)


def _batching(entry: tuple[dict[str, Any], Message] | None, max_batch_size: int) -> BatchingConfig:
    if entry is None:
        return BatchingConfig()
    doc, where = entry
    if max_batch_size < 1:
        raise _Error("dynamic_batching needs max_batch_size of 1 or more", where.line, where.col)
    delay = doc.get("max_queue_delay_microseconds") or 0
    if not 0 <= delay <= _MAX_DELAY_US:
        raise _Error(f"dynamic_batching.max_queue_delay_microseconds must be 0 to {_MAX_DELAY_US}",
                     where.line, where.col)
    preferred = tuple(doc.get("preferred_batch_size") or ())
    bad = [p for p in preferred if not 1 <= p <= max_batch_size]
    if bad:
        raise _Error(f"dynamic_batching.preferred_batch_size {bad[0]} is not between 1 and max_batch_size "
                     f"({max_batch_size})", where.line, where.col)
    return BatchingConfig(max_batch_size=max_batch_size, max_delay_ms=delay / 1000.0, preferred_batch_sizes=preferred)


def _options(entries: list[tuple[dict[str, Any], Message]], fmt: str | None, reader: _Reader) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for doc, where in entries:
        key = str(doc.get("key") or "")
        inner: dict[str, Any] = doc["value"][0] if doc.get("value") is not None else {}
        value = str(inner.get("string_value") or "")
        option = _ORT_PARAMETERS.get(key) if fmt == "onnx" else None
        if option is None:
            reader.ignored.add(f"parameters['{key}']")
            continue
        if not value.isdigit():
            raise _Error(f"parameter '{key}' must be a whole number, got {value!r}", where.line, where.col)
        options[option] = int(value)
    return options


def _model_filename(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or value in (".", "..") or "/" in value or "\\" in value or len(value) > 255:
        raise InvalidInput(f"default_model_filename must name a file in the version folder, got {value!r}")
    return value


def _to_model(tree: Message, folder_name: str | None) -> TritonModel:
    reader = _Reader()
    doc = reader.read(tree, _SCHEMA, "")
    warnings: list[str] = []
    name = doc.get("name")
    if name and folder_name is not None and name != folder_name:
        raise InvalidInput(f"the config names the model '{name}', but its folder is '{folder_name}' "
                           "(Triton requires them to match)")
    fmt, platform = _format(doc)
    max_batch_size = doc.get("max_batch_size") or 0
    if not 0 <= max_batch_size < 2**31:
        raise InvalidInput(f"max_batch_size must be 0 or more, got {max_batch_size}")
    batched = max_batch_size > 0
    inputs = tuple(_tensor(e, "input", batched) for e in doc.get("input") or [])
    outputs = tuple(_tensor(e, "output", batched) for e in doc.get("output") or [])
    try:
        signature = SignatureConfig(inputs=inputs, outputs=outputs) if inputs or outputs else None
        config = ModelConfig(
            format=fmt,
            version_policy=_version_policy(doc.get("version_policy")),
            signature=signature,
            batching=_batching(doc.get("dynamic_batching"), max_batch_size),
            options=_options(doc.get("parameters") or [], fmt, reader),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(problems) from None
    if reader.ignored:
        warnings.insert(0, f"fields mlport does not use are ignored: {', '.join(sorted(reader.ignored))}")
    return TritonModel(config, _model_filename(doc.get("default_model_filename")), platform, tuple(warnings))


def parse_triton_config(text: str, folder_name: str | None = None, source: str = TRITON_CONFIG_NAME) -> TritonModel:
    """Read a Triton model configuration from its text; raise :class:`InvalidInput` naming what is wrong."""
    tree = parse_text_format(text, source)
    try:
        return _to_model(tree, folder_name)
    except _Error as exc:
        raise InvalidInput(f"{source}, line {exc.line}, column {exc.col}: {exc.message}") from None
    except InvalidInput as exc:
        raise InvalidInput(f"{source}: {exc.message}") from None


def read_triton_config(path: Path, folder_name: str | None = None) -> TritonModel:
    """Read ``path`` (a ``config.pbtxt``) for the model in the folder named ``folder_name``."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise InvalidInput(f"{path.name} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
        raw = path.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError as exc:
        raise InvalidInput(f"{path.name}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    return parse_triton_config(text, folder_name, path.name)
