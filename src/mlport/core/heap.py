"""The garbage collector's settings for a long-running server process (the runtime's, the hub's)."""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle"]

#: Net allocations of objects the collector tracks that start a collection of the youngest generation.
#: Python's default, 700, suits a script; a server with dozens of requests in flight, each holding a dozen such
#: objects (its task, coroutines, futures, dicts) for the time of a prediction, then starts one every few
#: requests, and every tenth of those walks the middle generation: several microseconds per request, more than
#: a small model's prediction.  The objects a request leaves behind are freed by their reference counts; only
#: cycles wait for a collection, and they are rare on the request path.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """What is alive now lives as long as the server: moved out of the collector's passes for good; from now on
    the youngest generation is collected every :data:`YOUNG_THRESHOLD` net allocations."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
