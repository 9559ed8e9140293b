"""Request ids: random, in the form of a version 4 UUID's hex, without a system call each.

``uuid.uuid4()`` reads the operating system's randomness for every id, a system call that costs more than a
refusal's own work.  A request id need only be unique, not unpredictable: Python's generator (seeded from the
system's randomness at start, and again in each forked worker) gives its 128 bits.
"""

from __future__ import annotations

import os
import random

__all__ = ["new_request_id"]

_random = random.Random()
#: The version (4) and variant (RFC 9562) bits of a version 4 UUID.
_CLEAR = ~((0xF << 76) | (0x3 << 62))
_SET = (0x4 << 76) | (0x2 << 62)


def new_request_id() -> str:
    """32 lower-case hex digits, as ``uuid.uuid4().hex`` gives."""
    return f"{(_random.getrandbits(128) & _CLEAR) | _SET:032x}"


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)
