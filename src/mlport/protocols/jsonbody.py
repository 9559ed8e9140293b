"""The one reader of JSON request bodies: every API that takes JSON parses it here.

orjson refuses documents nested deeper than :data:`MAX_DEPTH` levels ("depth limit exceeded"), so a hostile
body never reaches code that recurses over it.
"""

from __future__ import annotations

from typing import Any

import orjson

from mlport.errors import InvalidInput

__all__ = ["DEPTH_MESSAGE", "MAX_DEPTH", "check_parameters", "loads"]

#: Deepest nesting of arrays and objects accepted in a JSON body (orjson's own, fixed limit).
MAX_DEPTH = 1024
DEPTH_MESSAGE = f"depth limit exceeded: JSON bodies may nest at most {MAX_DEPTH} levels"


def loads(data: bytes | bytearray | memoryview | str, what: str = "malformed JSON") -> Any:
    """Parse JSON; a malformed or too deeply nested document is a 400 whose message starts with ``what``."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what}: {exc}") from None
    except RecursionError:  # not raised by orjson today; kept so that no reader can answer 500 for depth
        raise InvalidInput(f"{what}: {DEPTH_MESSAGE}") from None



def check_parameters(params: dict[str, Any], where: str = "'parameters'") -> None:
    """Refuse request parameters that could not be written back as JSON (too deep, integers too large).

    Parameters travel on (to a routed model, to gRPC's string parameters, into logs); only those holding
    arrays or objects are checked, once, by writing them with orjson (which stops at 254 levels).
    """
    if not params or not any(isinstance(v, list | dict) for v in params.values()):
        return
    try:
        orjson.dumps(params)
    except orjson.JSONEncodeError as exc:
        raise InvalidInput(f"{where} cannot be used: {exc}") from None
