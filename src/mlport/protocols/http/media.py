"""The eval API's non-JSON media types: images and multipart in, images, multipart and HTML out.

Importing this module registers its decoders and encoders in :mod:`negotiation`.

Requests:
  * ``image/png``, ``image/jpeg``: the body is one image for a model with exactly one
    image-shaped input; it is answered as a single instance.
  * ``multipart/form-data``: one part per input (or mapped field), named by it; each part is
    ``application/json``, ``text/plain`` (a JSON value, or the text itself for a string input),
    ``image/png`` or ``image/jpeg`` (one instance). Single/batch rules are those of JSON.

Responses (``Accept``):
  * ``image/png``, ``image/jpeg`` (and ``image/*``, answered as PNG): the one image-shaped output;
    ``; output=name`` picks one when several are.
  * ``multipart/form-data``: one ``application/json`` part per output; ``; name=image/png``
    (or ``image/jpeg``) sends that output as an image instead.
  * ``text/html``: a page with every output; ``; name=image/png`` shows that output as an image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import ErrorCode, InvalidInput, MlportError, UnsupportedMediaType
from mlport.formats.config import ModelConfig
from mlport.limits import Limits
from mlport.protocols.html import OUTPUTS_CSP, ImageOutput, render_outputs
from mlport.protocols.http.body import media_type
from mlport.protocols.http.negotiation import EvalEncoder, decoders, encoders
from mlport.protocols.images import (
    IMAGE_FORMATS,
    NotAnImage,
    decode_image,
    encode_image,
    image_layout,
    image_spec_problem,
    output_image_problem,
)
from mlport.protocols.jsonbody import loads
from mlport.protocols.jsontensors import jsonable
from mlport.protocols.multipart import Part, build_multipart, parse_multipart
from mlport.protocols.native import decode_eval_json, unbatch
from mlport.runtime.manager import LoadedVersion

__all__: list[str] = []

_MULTIPART = "multipart/form-data"
_TEXT_TYPES = frozenset({"", "text/plain"})
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def _not_acceptable(message: str) -> MlportError:
    return MlportError(message, ErrorCode.NOT_ACCEPTABLE)


# ---------------------------------------------------------------- requests


def _image_input(lv: LoadedVersion, media: str) -> TensorSpec:
    inputs = lv.signature.inputs
    if len(inputs) != 1:
        raise UnsupportedMediaType(
            f"{media} bodies need a model with exactly one input; model '{lv.model}' takes "
            f"{', '.join(lv.signature.input_names)}: send application/json or multipart/form-data"
        )
    spec = inputs[0]
    problem = image_spec_problem(spec)
    if problem is None and spec.name in lv.config.fields:
        problem = f"input '{spec.name}' is made of named fields"
    if problem is not None:
        raise UnsupportedMediaType(f"{media} bodies need an image-shaped input: {problem}")
    return spec


def _decode_single_image(
    body: bytes, spec: TensorSpec, config: ModelConfig, limits: Limits
) -> InferenceRequest:
    arr = decode_image(body, spec, config.image, limits)
    layout = image_layout(spec.shape)
    return InferenceRequest(inputs={spec.name: arr}, single=layout is not None and layout.batch)


async def _decode_image_body(
    body: bytes, request: Request, lv: LoadedVersion, limits: Limits
) -> InferenceRequest:
    spec = _image_input(lv, media_type(request))
    return await run_in_threadpool(_decode_single_image, body, spec, lv.config, limits)


def _spec_by_part_name(signature: Signature, config: ModelConfig) -> dict[str, TensorSpec]:
    """Input specs by the names a part may carry: input names and mapped field names."""
    found = {s.name: s for s in signature.inputs}
    for tensor, mapping in config.fields.items():
        spec = signature.input(tensor)
        if spec is not None:
            for field in mapping:
                found.setdefault(field, spec)
    return found


def _part_media(part: Part) -> str:
    if part.content_type == "application/octet-stream" or (part.content_type == "" and part.filename):
        for magic, media in _MAGIC:
            if part.data.startswith(magic):
                return media
    return part.content_type


def _json_part(part: Part) -> Any:
    return loads(part.data, f"part '{part.name}' is not valid JSON")


def _text_part(part: Part, spec: TensorSpec | None) -> Any:
    try:
        text = part.data.decode(part.charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        raise InvalidInput(f"part '{part.name}' is not text in {part.charset or 'utf-8'}") from None
    if spec is not None and spec.datatype is DataType.BYTES:
        if text.lstrip().startswith(("[", '"')):
            try:
                return loads(text)
            except InvalidInput:
                pass  # not JSON: the text itself is the string
        return text
    return loads(text, f"part '{part.name}' is not a number or a JSON value ({text[:40]!r})")


def _multipart_request(body: bytes, content_type: str, lv: LoadedVersion, limits: Limits) -> InferenceRequest:
    parts = parse_multipart(body, content_type, limits.max_multipart_parts)
    specs = _spec_by_part_name(lv.signature, lv.config)
    values: dict[str, Any] = {}
    images: dict[str, np.ndarray[Any, Any]] = {}
    image_singles: set[bool] = set()
    for part in parts:
        if part.name in values or part.name in images:
            raise InvalidInput(f"part '{part.name}' is sent twice")
        media = _part_media(part)
        spec = specs.get(part.name)
        if media in IMAGE_FORMATS:
            if spec is None or spec.name != part.name:
                raise InvalidInput(
                    f"image part '{part.name}' does not name an input; the model takes: "
                    f"{', '.join(lv.signature.input_names)}"
                )
            try:
                images[part.name] = decode_image(part.data, spec, lv.config.image, limits)
            except MlportError as exc:
                raise type(exc)(f"part '{part.name}': {exc.message}", exc.code) from None
            layout = image_layout(spec.shape)
            image_singles.add(layout is not None and layout.batch)
        elif media == "application/json" or media.endswith("+json"):
            values[part.name] = _json_part(part)
        elif media in _TEXT_TYPES:
            values[part.name] = _text_part(part, spec)
        else:
            raise UnsupportedMediaType(
                f"part '{part.name}' has Content-Type {media!r}; parts may be application/json, "
                "text/plain, image/png or image/jpeg"
            )
    request = decode_eval_json(values, lv.signature, lv.config, limits)
    singles = set(image_singles)
    if request.inputs:
        singles.add(request.single)
    if len(singles) > 1:
        raise InvalidInput(
            "mix of single values and batches: an image part is one instance, so send the other inputs "
            "as one instance too"
        )
    request.inputs.update(images)
    request.single = singles == {True}
    return request


async def _decode_multipart(
    body: bytes, request: Request, lv: LoadedVersion, limits: Limits
) -> InferenceRequest:
    content_type = request.headers.get("content-type", "")
    return await run_in_threadpool(_multipart_request, body, content_type, lv, limits)


# ---------------------------------------------------------------- responses


def _outputs(response: InferenceResponse, single: bool) -> dict[str, np.ndarray[Any, Any]]:
    return unbatch(response) if single else dict(response.outputs)


def _image_of(name: str, arr: np.ndarray[Any, Any], media: str, lv: LoadedVersion) -> bytes:
    spec = lv.signature.output(name)
    try:
        return encode_image(arr, media, lv.config.image.scale, spec.shape if spec is not None else None)
    except NotAnImage as exc:
        raise _not_acceptable(f"output '{name}' cannot be sent as {media}: {exc}") from None


def _pick_image_output(
    outputs: dict[str, np.ndarray[Any, Any]], wanted: str | None, media: str, signature: Signature
) -> str:
    if wanted is not None:
        if wanted not in outputs:
            raise _not_acceptable(f"no output '{wanted}'; the outputs are {', '.join(outputs)}")
        return wanted
    if len(outputs) == 1:
        return next(iter(outputs))
    problems: dict[str, str | None] = {}
    for n, a in outputs.items():
        spec = signature.output(n)
        problems[n] = output_image_problem(a.shape, a.dtype, spec.shape if spec is not None else None)
    images = [n for n, p in problems.items() if p is None]
    if len(images) == 1:
        return images[0]
    if images:
        raise _not_acceptable(
            f"several outputs are images ({', '.join(images)}); "
            f"pick one with 'Accept: {media}; output={images[0]}'"
        )
    why = "; ".join(f"'{n}': {p}" for n, p in problems.items())
    raise _not_acceptable(f"no output can be sent as {media} ({why})")


def _image_encoder(media: str) -> EvalEncoder:
    def encode(
        response: InferenceResponse, single: bool, lv: LoadedVersion, params: dict[str, str]
    ) -> Response:
        outputs = _outputs(response, single)
        name = _pick_image_output(outputs, params.get("output"), media, lv.signature)
        return Response(_image_of(name, outputs[name], media, lv), media_type=media)

    return encode


def _image_requests(params: dict[str, str], outputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, str]:
    """Outputs that Accept parameters ask to show as images: ``name=image/png``."""
    wanted: dict[str, str] = {}
    for key, value in params.items():
        media = value.lower()
        if media in IMAGE_FORMATS:
            if key not in outputs:
                raise _not_acceptable(
                    f"Accept asks for output '{key}' as {media}; the outputs are {', '.join(outputs)}"
                )
            wanted[key] = media
    return wanted


def _encode_multipart(
    response: InferenceResponse, single: bool, lv: LoadedVersion, params: dict[str, str]
) -> Response:
    outputs = _outputs(response, single)
    as_image = _image_requests(params, outputs)
    parts: list[Part] = []
    for name, arr in outputs.items():
        if name in as_image:
            media = as_image[name]
            ext = "png" if media == "image/png" else "jpg"
            parts.append(Part(name, media, _image_of(name, arr, media, lv), filename=f"{name}.{ext}"))
        else:
            data = orjson.dumps(jsonable(arr, name), option=orjson.OPT_SERIALIZE_NUMPY)
            parts.append(Part(name, "application/json", data))
    body, content_type = build_multipart(parts)
    return Response(body, media_type=content_type)


def _encode_html(
    response: InferenceResponse, single: bool, lv: LoadedVersion, params: dict[str, str]
) -> Response:
    outputs = _outputs(response, single)
    as_image = _image_requests(params, outputs)
    images = {n: ImageOutput(m, _image_of(n, outputs[n], m, lv)) for n, m in as_image.items()}
    title = f"{response.model_name} (version {response.model_version})"
    return Response(render_outputs(title, outputs, images), media_type="text/html",
                    headers={"Content-Security-Policy": OUTPUTS_CSP})


for _media in IMAGE_FORMATS:
    decoders[_media] = _decode_image_body
    encoders[_media] = _image_encoder(_media)
encoders["image/*"] = _image_encoder("image/png")
decoders[_MULTIPART] = _decode_multipart
encoders[_MULTIPART] = _encode_multipart
encoders["text/html"] = _encode_html
