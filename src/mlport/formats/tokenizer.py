"""Text tokenizers saved as ``tokenizer.json`` (the Hugging Face ``tokenizers`` library), served as a model.

Signature: input ``text`` BYTES ``[-1]`` (one UTF-8 string per row); outputs ``input_ids`` and
``attention_mask`` INT64 ``[-1, -1]``, and ``token_type_ids`` INT64 ``[-1, -1]`` when the tokenizer
gives pairs distinct type ids (a BERT-style post-processor). Rows are padded to the longest row of the
batch and truncated at ``max_length`` tokens (special tokens included), so a batch answers with one
rectangular tensor per output, ready to feed a transformer model.

Model options (``options:`` in the model config):

- ``max_length``: tokens per row at most (default: the tokenizer's own truncation setting, else 512);
- ``pad_id`` / ``pad_token``: the padding token (default: the tokenizer's own padding setting, else the
  first of ``[PAD]``, ``<pad>`` in its vocabulary, else id 0);
- ``token_type_ids``: ``true``/``false`` to give or leave out that output (default: see above);
- ``add_special_tokens``: ``false`` to leave out ``[CLS]``/``[SEP]``-like tokens (default ``true``).

With adaptive batching on (``batching:`` in the model config), requests merged into one batch are padded
to the longest row of the merged batch: extra padding columns, masked out by ``attention_mask``.

Loading parses JSON only: no code runs, so no trust is needed. Encoding runs in Rust over the whole batch
(``encode_batch_fast``: the ids of ``encode_batch`` without character offsets); the output arrays are built
with one numpy call each.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, ModelFormat, as_text

__all__ = ["TokenizerEvaluator", "TokenizerFormat"]

log = logging.getLogger(__name__)

FILE_NAME = "tokenizer.json"
#: Largest tokenizer.json read.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Largest max_length accepted.
MAX_LENGTH_LIMIT = 65_536
DEFAULT_MAX_LENGTH = 512
_PAD_TOKENS = ("[PAD]", "<pad>")
_OPTIONS = frozenset({"max_length", "pad_id", "pad_token", "token_type_ids", "add_special_tokens"})


def _gives_type_ids(processor: Any) -> bool:
    """True when a post-processor (from tokenizer.json) gives the second sequence of a pair type id 1."""
    if not isinstance(processor, dict):
        return False
    kind = processor.get("type")
    if kind == "BertProcessing":
        return True
    if kind == "TemplateProcessing":
        for piece in processor.get("pair") or ():
            for value in piece.values() if isinstance(piece, dict) else ():
                if isinstance(value, dict) and value.get("type_id", 0) != 0:
                    return True
        return False
    if kind == "Sequence":
        return any(_gives_type_ids(p) for p in processor.get("processors") or ())
    return False


def _int_option(options: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"the option {key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _bool_option(options: dict[str, Any], key: str) -> bool | None:
    value = options.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise InvalidInput(f"the option {key} must be true or false, got {value!r}")


def _matrix(rows: list[list[int]]) -> np.ndarray[Any, Any]:
    """Rows of equal length (padded by the tokenizer) as one INT64 matrix."""
    if not rows:
        return np.zeros((0, 0), dtype=np.int64)
    return np.array(rows, dtype=np.int64)


class TokenizerEvaluator(Evaluator):
    platform = "tokenizers"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        from tokenizers import Tokenizer

        opts = options.options
        unknown = sorted(set(opts) - _OPTIONS - {"intra_op_threads"})
        if unknown:
            log.warning("%s: options %s do not apply to tokenizers (known: %s)", path.name, ", ".join(unknown),
                        ", ".join(sorted(_OPTIONS)))
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise MlportError(f"cannot read {path.name}: {exc}") from None
        if size > MAX_FILE_BYTES:
            raise MlportError(f"{path.name} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        try:
            tok = Tokenizer.from_file(str(path))
            config = json.loads(tok.to_str())
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            raise MlportError(f"tokenizers could not load {path.name}: {lines[0][:500] if lines else exc!r}") from None
        truncation = tok.truncation or {}
        padding = tok.padding or {}

        max_length = _int_option(opts, "max_length", 1, MAX_LENGTH_LIMIT)
        if max_length is None:
            own = truncation.get("max_length")
            max_length = int(own) if isinstance(own, int) and 0 < own <= MAX_LENGTH_LIMIT else DEFAULT_MAX_LENGTH
        pad_id, pad_token = self._padding(tok, opts, padding)
        self.max_length = max_length
        self.pad_id = pad_id
        try:
            tok.enable_truncation(max_length, stride=0, strategy=str(truncation.get("strategy", "longest_first")),
                                  direction=str(truncation.get("direction", "right")))
            tok.enable_padding(direction=str(padding.get("direction", "right")), pad_id=pad_id,
                               pad_type_id=int(padding.get("pad_type_id", 0) or 0), pad_token=pad_token,
                               length=None, pad_to_multiple_of=padding.get("pad_to_multiple_of"))
        except Exception as exc:
            raise MlportError(f"{path.name}: cannot set truncation or padding: {exc}") from None
        self._tok = tok
        self._special = _bool_option(opts, "add_special_tokens") is not False
        types = _bool_option(opts, "token_type_ids")
        self._type_ids = _gives_type_ids(config.get("post_processor")) if types is None else types
        self._encode = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
        outputs = [TensorSpec("input_ids", DataType.INT64, (-1, -1)),
                   TensorSpec("attention_mask", DataType.INT64, (-1, -1))]
        if self._type_ids:
            outputs.append(TensorSpec("token_type_ids", DataType.INT64, (-1, -1)))
        self.signature = Signature((TensorSpec("text", DataType.BYTES, (-1,)),), tuple(outputs))

    @staticmethod
    def _padding(tok: Any, opts: dict[str, Any], own: dict[str, Any]) -> tuple[int, str]:
        pad_id = _int_option(opts, "pad_id", 0, 2**31 - 1)
        pad_token = opts.get("pad_token")
        if pad_token is not None and (not isinstance(pad_token, str) or not pad_token):
            raise InvalidInput(f"the option pad_token must be a non-empty string, got {pad_token!r}")
        if pad_token is not None and pad_id is None:
            pad_id = tok.token_to_id(pad_token)
            if pad_id is None:
                raise InvalidInput(f"the option pad_token names {pad_token!r}, which is not in the vocabulary")
        if pad_id is not None:
            return pad_id, pad_token or tok.id_to_token(pad_id) or "[PAD]"
        if own:
            return int(own.get("pad_id", 0)), str(own.get("pad_token", "[PAD]"))
        for token in _PAD_TOKENS:
            found = tok.token_to_id(token)
            if found is not None:
                return int(found), token
        return 0, tok.id_to_token(0) or "[PAD]"

    def predict(self, inputs: Arrays) -> Arrays:
        texts = inputs["text"]
        try:
            decoded = as_text(texts.reshape(-1))
        except UnicodeDecodeError:
            raise InvalidInput("input 'text' holds bytes that are not UTF-8 text") from None
        try:
            encodings = self._encode(decoded.tolist(), add_special_tokens=self._special)
        except Exception as exc:  # e.g. a value that is not text
            raise InvalidInput(f"input 'text' could not be tokenized: {exc}") from None
        out: Arrays = {
            "input_ids": _matrix([e.ids for e in encodings]),
            "attention_mask": _matrix([e.attention_mask for e in encodings]),
        }
        if self._type_ids:
            out["token_type_ids"] = _matrix([e.type_ids for e in encodings])
        return out

    def close(self) -> None:
        self.__dict__.pop("_tok", None)
        self.__dict__.pop("_encode", None)


class TokenizerFormat(ModelFormat):
    name: ClassVar[str] = "tokenizer"
    extra: ClassVar[str | None] = "tokenizer"
    requires: ClassVar[tuple[str, ...]] = ("tokenizers",)

    def detect(self, path: Path) -> bool:
        return path.name == FILE_NAME and path.is_file()

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        self.check_loadable(options)
        return TokenizerEvaluator(path, options)
