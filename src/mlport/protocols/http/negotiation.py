"""Content negotiation for the eval API: request decoders by Content-Type, response encoders by Accept.

Each codec module registers itself here; the eval route only looks them up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from mlport.core.inference import InferenceRequest, InferenceResponse
from mlport.errors import ErrorCode, MlportError, UnsupportedMediaType
from mlport.limits import Limits
from mlport.runtime.manager import LoadedVersion

__all__ = ["Accept", "EvalDecoder", "EvalEncoder", "decoders", "encoders", "parse_accept", "pick_encoder"]

#: body, request, model, limits -> request
EvalDecoder = Callable[[bytes, Request, LoadedVersion, Limits], Awaitable[InferenceRequest]]
#: response, single, model, accept params -> HTTP response
EvalEncoder = Callable[[InferenceResponse, bool, LoadedVersion, dict[str, str]], Response]

decoders: dict[str, EvalDecoder] = {}
encoders: dict[str, EvalEncoder] = {}


@dataclass(frozen=True, slots=True)
class Accept:
    media: str
    q: float
    params: dict[str, str]


def parse_accept(header: str) -> list[Accept]:
    found: list[Accept] = []
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        q = 1.0
        params: dict[str, str] = {}
        for p in pieces[1:]:
            key, _, value = p.partition("=")
            key = key.strip()
            value = value.strip().strip('"')
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key:
                params[key] = value
        if q > 0:
            found.append(Accept(media, q, params))
    found.sort(key=lambda a: -a.q)
    return found


def pick_encoder(header: str | None) -> tuple[EvalEncoder, dict[str, str]]:
    if not header:
        return encoders["application/json"], {}
    for acc in parse_accept(header):
        if acc.media in encoders:
            return encoders[acc.media], acc.params
        if acc.media in ("*/*", "application/*"):
            return encoders["application/json"], acc.params
    raise MlportError(
        f"cannot answer with {header!r}; available: {', '.join(sorted(encoders))}", ErrorCode.NOT_ACCEPTABLE
    )


def pick_decoder(media: str) -> EvalDecoder:
    if not media:
        return decoders["application/json"]
    dec = decoders.get(media)
    if dec is None:
        raise UnsupportedMediaType(f"unsupported Content-Type {media!r}; accepted: {', '.join(sorted(decoders))}")
    return dec
