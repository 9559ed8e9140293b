"""A batch run: read chunks, score them (here or on worker processes), checkpoint each, then write the output.

Each worker process loads the model once (as ``mlport serve`` does) and scores the chunks it is sent;
at most two chunks per worker are in flight, so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlport.batch.checkpoint import Checkpoint, default_work_dir
from mlport.batch.columns import ColumnPlan, parse_maps
from mlport.batch.model import ScoringModel, load_model
from mlport.batch.progress import Progress
from mlport.batch.readers import open_reader
from mlport.batch.scorer import Scorer
from mlport.batch.storage import locate
from mlport.batch.writers import output_format, write_tables
from mlport.errors import InvalidInput, MlportError

__all__ = ["MAX_BATCH_SIZE", "ScoreJob", "Summary", "score"]

#: Largest mini-batch (rows per predict call and per checkpointed chunk).
MAX_BATCH_SIZE = 1_000_000
#: Most worker processes.
MAX_WORKERS = 256
#: Seconds between a worker's checks that its run is still there.
PARENT_CHECK_S = 1.0


@dataclass
class ScoreJob:
    """What to score with what, and how."""

    model: Path
    input: str
    output: str
    batch_size: int = 10_000
    maps: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    errors: str | None = None
    fail_fast: bool = False
    workers: int = 1
    resume: bool = False
    input_format: str | None = None
    output_format: str | None = None
    work_dir: Path | None = None
    name: str | None = None
    trusted: bool = False
    endpoint_url: str | None = None

    def checkpoint_settings(self) -> dict[str, Any]:
        keys = ("input", "batch_size", "maps", "keep", "input_format", "name")
        return {"model": str(self.model.resolve()), **{k: v for k, v in asdict(self).items() if k in keys}}


@dataclass
class Summary:
    rows_read: int
    rows_scored: int
    rows_failed: int
    seconds: float
    output: str
    errors: str | None
    #: Chunks a resumed run found finished in its checkpoint.
    resumed_chunks: int = 0

    def text(self) -> str:
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        errs = f"; bad rows in {self.errors}" if self.errors else ""
        resumed = f"resumed after {self.resumed_chunks} finished chunks; " if self.resumed_chunks else ""
        return (f"{resumed}read {self.rows_read} rows, scored {self.rows_scored}, failed {self.rows_failed} "
                f"in {self.seconds:.2f} s ({rate:,.0f} rows/s) -> {self.output}{errs}")


# ------------------------------------------------------------------------ worker processes
_worker: Scorer | None = None


def _scorer(model: ScoringModel, columns: list[str], job: ScoreJob) -> Scorer:
    missing = [c for c in job.keep if c not in columns]
    if missing:
        raise InvalidInput(f"--keep names column {', '.join(map(repr, missing))}, which the input does not have; "
                           f"it has: {', '.join(columns)}")
    return Scorer(model, ColumnPlan(model, columns, parse_maps(job.maps)), list(job.keep))


_worker_error: MlportError | None = None


def _watch_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (killed without its workers)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def _init_worker(job: ScoreJob, columns: list[str], threads: int, parent: int) -> None:
    global _worker, _worker_error
    threading.Thread(target=_watch_parent, args=(parent,), name="mlport-parent-watch", daemon=True).start()
    try:
        model = load_model(job.model, name=job.name, trusted=job.trusted, intra_op_threads=threads)
        _worker = _scorer(model, columns, job)
    except MlportError as exc:  # said once by the parent, which checks the same things
        _worker_error = exc


def _score_in_worker(folder: str, k: int, batch: pa.RecordBatch, first_row: int) -> tuple[int, int, list[Any]]:
    if _worker is None:
        raise _worker_error or MlportError("the scoring worker has no model")
    result = _worker.score(batch, first_row)
    Checkpoint(Path(folder)).save(k, result.table, result.errors)
    return batch.num_rows, result.table.num_rows, result.errors[:1]


# ------------------------------------------------------------------------ the run
def _chunks(job: ScoreJob, reader: Any, done: set[int]) -> Iterator[tuple[int, pa.RecordBatch | None, int]]:
    """``(k, chunk or None when finished already, first row number)``."""
    first = 1
    for k, batch in enumerate(reader.chunks(job.batch_size)):
        yield k, (None if k in done else batch), first
        first += batch.num_rows


def _check(job: ScoreJob) -> None:
    if not 1 <= job.batch_size <= MAX_BATCH_SIZE:
        raise InvalidInput(f"--batch-size must be 1 to {MAX_BATCH_SIZE}, got {job.batch_size}")
    if not 1 <= job.workers <= MAX_WORKERS:
        raise InvalidInput(f"--workers must be 1 to {MAX_WORKERS}, got {job.workers}")


def score(job: ScoreJob, progress: Progress | None = None) -> Summary:
    """Run ``job`` to the end; raises :class:`MlportError` on a refused input (or a bad row with fail-fast)."""
    _check(job)
    progress = progress or Progress()
    started = time.monotonic()
    out = locate(job.output, job.endpoint_url)
    fmt = output_format(out, job.output_format)
    reader = open_reader(locate(job.input, job.endpoint_url), job.input_format)
    parse_maps(job.maps)
    # the workers are forked before this process loads the model (no model library state is copied)
    pool = _start_pool(job, reader.columns) if job.workers > 1 else None
    try:
        model = load_model(job.model, name=job.name, trusted=job.trusted)
        try:
            scorer = _scorer(model, reader.columns, job)
            cp = Checkpoint.start(job.work_dir or default_work_dir(out.uri, out.remote), job.checkpoint_settings(),
                                  job.resume)
            progress.start(reader.total_rows)
            try:
                if pool is None:
                    count = _run_here(job, reader, scorer, cp, progress)
                else:
                    model.close()  # the workers score
                    count = _run_pool(pool, job, reader, cp, progress)
            finally:
                progress.close()
        finally:
            model.close()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return _finish(job, cp, count, fmt, scorer, started)


def _start_pool(job: ScoreJob, columns: list[str]) -> ProcessPoolExecutor:
    threads = max(1, (os.cpu_count() or 1) // job.workers)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(job.workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker, initargs=(job, columns, threads, os.getpid()))
    pool.submit(int)  # starts the workers now, while they load the model
    return pool


def _fail_fast(job: ScoreJob, errors: list[Any]) -> None:
    if job.fail_fast and errors:
        row, reason = errors[0]
        raise MlportError(f"row {row}: {reason} (stopped by --fail-fast)")


def _resumed(cp: Checkpoint, k: int, progress: Progress) -> None:
    progress.advance(cp.rows(k), len(cp.errors(k)))


def _run_here(job: ScoreJob, reader: Any, scorer: Scorer, cp: Checkpoint, progress: Progress) -> int:
    count = 0
    for k, batch, first in _chunks(job, reader, cp.done):
        count = k + 1
        if batch is None:
            _resumed(cp, k, progress)
            continue
        result = scorer.score(batch, first)
        cp.save(k, result.table, result.errors)
        progress.advance(result.table.num_rows, len(result.errors))
        _fail_fast(job, result.errors)
    return count


def _run_pool(pool: ProcessPoolExecutor, job: ScoreJob, reader: Any, cp: Checkpoint, progress: Progress) -> int:
    count = 0
    pending: set[Future[tuple[int, int, list[Any]]]] = set()
    try:
        for k, batch, first in _chunks(job, reader, cp.done):
            count = k + 1
            if batch is None:
                _resumed(cp, k, progress)
                continue
            pending.add(pool.submit(_score_in_worker, str(cp.folder), k, batch, first))
            while len(pending) >= 2 * job.workers:
                pending = _collect(job, pending, progress, FIRST_COMPLETED)
        while pending:
            pending = _collect(job, pending, progress, FIRST_COMPLETED)
    except BrokenProcessPool as exc:
        raise MlportError(f"a scoring worker process died: {exc}") from exc
    finally:
        for f in pending:
            f.cancel()
    return count


def _collect(job: ScoreJob, pending: set[Future[Any]], progress: Progress, when: str) -> set[Future[Any]]:
    done, rest = wait(pending, return_when=when)
    for f in done:
        read, scored, errors = f.result()
        progress.advance(scored, read - scored)
        _fail_fast(job, errors)
    return rest


def _finish(job: ScoreJob, cp: Checkpoint, count: int, fmt: str, scorer: Scorer, started: float) -> Summary:
    missing = cp.missing(count)
    if missing:
        raise MlportError(f"chunks {missing[:10]} of the checkpoint in {cp.folder} are missing")
    out = locate(job.output, job.endpoint_url)
    empty = pa.schema([])
    write_tables(out, fmt, cp.tables(count), empty)
    scored = sum(cp.rows(k) for k in range(count))
    failed = sum(len(cp.errors(k)) for k in range(count))
    err_uri = None
    if failed:
        err_loc = locate(job.errors or job.output + ".errors.csv", job.endpoint_url)
        write_tables(err_loc, "csv", _error_tables(cp, count), ERRORS_SCHEMA)
        err_uri = err_loc.uri
    cp.remove()
    return Summary(scored + failed, scored, failed, time.monotonic() - started, out.uri, err_uri, len(cp.done))


ERRORS_SCHEMA = pa.schema([("row", pa.int64()), ("reason", pa.string())])


def _error_tables(cp: Checkpoint, count: int) -> Iterator[pa.Table]:
    for k in range(count):
        errors = cp.errors(k)
        if errors:
            yield pa.table([pa.array([r for r, _ in errors], pa.int64()), pa.array([m for _, m in errors])],
                           schema=ERRORS_SCHEMA)

