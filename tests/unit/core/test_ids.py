"""Request ids: the form of a version 4 UUID's hex, distinct, and distinct again in a forked child."""

from __future__ import annotations

import os
import uuid

from mlport.core.ids import new_request_id


def test_ids_are_version_4_uuids_in_hex() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:100]:
        parsed = uuid.UUID(hex=rid)
        assert parsed.hex == rid and len(rid) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_draws_other_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, to the parent
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != new_request_id()
