"""Scoring one part of the input: read its chunks, score each, and record each as a finished segment.

A part is scored by the run itself (one worker) or by a worker process, which reads the part from the input
on its own and writes its segments to the checkpoint folder: rows never travel between processes, only
counts. Each worker process loads the model once (as ``mlport serve`` does) and its own reader.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from mlport.batch.checkpoint import Checkpoint
from mlport.batch.readers import Reader, Want
from mlport.batch.scorer import Scorer
from mlport.batch.writers import write_segment
from mlport.errors import MlportError

__all__ = ["PartRun", "score_part"]

#: Seconds between a worker's checks that its run is still there.
PARENT_CHECK_S = 1.0


@dataclass
class PartRun:
    """What every part of a run shares: where it reads, how it scores, where it writes."""

    reader: Reader
    scorer: Scorer
    want: Want
    checkpoint: Checkpoint
    fmt: str
    batch_size: int
    fail_fast: bool
    #: The position where the input's first part starts (fail-fast counts the rows before a part from there).
    first: int


def score_part(run: PartRun, p: int, start: int, end: int, report: Callable[[int, int], None],
               stop: Callable[[], bool] = lambda: False) -> None:
    """Score part ``p`` (positions ``[start, end)``) from after its last finished chunk; ``report(scored,
    failed)`` after each chunk. Raises :class:`MlportError` at a bad row with fail-fast."""
    done = run.checkpoint.finished(p)
    position = done[-1]["next"] if done else start
    row = 1 + sum(int(r["read"]) for r in done)  # the next row's number in the part (from 1)
    j = len(done)
    for batch, after in run.reader.read(position, end, run.batch_size, run.want):
        result = run.scorer.score(batch, row)
        record = {"next": after, "read": batch.num_rows, "scored": result.table.num_rows, "errors": result.errors}
        run.checkpoint.save(p, j, record, partial(write_segment, fmt=run.fmt, table=result.table))
        report(result.table.num_rows, len(result.errors))
        if run.fail_fast and result.errors:
            local, reason = result.errors[0]
            before = run.reader.rows_between(run.first, start) if p else 0
            raise MlportError(f"row {before + local}: {reason} (stopped by --fail-fast)")
        row += batch.num_rows
        j += 1
        if stop():
            return


# ------------------------------------------------------------------------ worker processes
_state: dict[str, Any] = {}


def _watch_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (killed without its workers)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def init_worker(make: Callable[[Any, int], PartRun], job: Any, threads: int, parent: int, queue: Any,
                stop: Any) -> None:
    """A worker process's start: its model and reader (``make(job, threads)``), the queue its counts go to."""
    threading.Thread(target=_watch_parent, args=(parent,), name="mlport-parent-watch", daemon=True).start()
    _state.update(queue=queue, stop=lambda: stop.is_set() or os.getppid() != parent, event=stop)
    try:
        _state["run"] = make(job, threads)
    except MlportError as exc:  # said once by the parent, which checks the same things
        _state["error"] = exc


def score_part_in_worker(p: int, start: int, end: int) -> None:
    run: PartRun | None = _state.get("run")
    if run is None:
        raise _state.get("error") or MlportError("the scoring worker has no model")
    queue = _state["queue"]
    try:  # a part stops after its chunk when another part stopped the run, or when the run is gone
        score_part(run, p, start, end, lambda scored, failed: queue.put((scored, failed)), _state["stop"])
    except MlportError:
        _state["event"].set()
        raise


def start_method() -> multiprocessing.context.BaseContext:
    """Fork where there is one (the workers start without importing mlport again), else spawn."""
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")

