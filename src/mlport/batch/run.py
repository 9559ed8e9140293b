"""A batch run: split the input into parts, score each part (here or on worker processes), then join the output.

With one worker the run scores its one part itself. With several, each worker process reads its own part
of the input and writes its own segments (:mod:`mlport.batch.parts`): rows never travel between processes.
Every chunk is checkpointed as it is finished, so a killed run resumes where each part stopped; the output
and the error file (with the input's row numbers) are put together from the segments in order at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlport.batch.checkpoint import Checkpoint, Segment, default_work_dir
from mlport.batch.columns import ColumnPlan, parse_maps
from mlport.batch.model import ScoringModel, load_model
from mlport.batch.parts import PartRun, init_worker, score_part, score_part_in_worker, start_method
from mlport.batch.progress import Progress
from mlport.batch.readers import Reader, Want, open_reader
from mlport.batch.scorer import Scorer
from mlport.batch.storage import locate
from mlport.batch.writers import SEGMENT_EXT, output_format, write_segments, write_tables
from mlport.errors import InvalidInput, MlportError

__all__ = ["MAX_BATCH_SIZE", "ScoreJob", "Summary", "score"]

#: Largest mini-batch (rows per predict call and per checkpointed chunk).
MAX_BATCH_SIZE = 1_000_000
#: Most worker processes.
MAX_WORKERS = 256
#: The model runtime's threads per worker: a run scores rows side by side in worker processes (one per core
#: by default), and one thread each wastes no time waiting on the others (it is also the floor's setting).
INTRA_OP_THREADS = 1


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


# ------------------------------------------------------------------------ the run
def _scorer(model: ScoringModel, columns: list[str], job: ScoreJob) -> Scorer:
    missing = [c for c in job.keep if c not in columns]
    if missing:
        raise InvalidInput(f"--keep names column {', '.join(map(repr, missing))}, which the input does not have; "
                           f"it has: {', '.join(columns)}")
    return Scorer(model, ColumnPlan(model, columns, parse_maps(job.maps)), list(job.keep))


def _part_run(job: ScoreJob, threads: int, reader: Reader | None = None, start: bool = False) -> PartRun:
    """What a process scoring parts of ``job`` needs: the model loaded, the reader, the checkpoint (started
    afresh or resumed with ``start``: by the run itself, never by its workers)."""
    reader = reader or open_reader(locate(job.input, job.endpoint_url), job.input_format)
    model = load_model(job.model, name=job.name, trusted=job.trusted, intra_op_threads=threads)
    try:
        scorer = _scorer(model, reader.columns, job)
    except BaseException:
        model.close()
        raise
    out = locate(job.output, job.endpoint_url)
    fmt = output_format(out, job.output_format)
    folder, ext = job.work_dir or default_work_dir(out.uri, out.remote), SEGMENT_EXT[fmt]
    cp = Checkpoint.start(folder, {**job.checkpoint_settings(), "segments": ext}, job.resume, ext) if start \
        else Checkpoint(folder, ext)
    plan = scorer.plan
    want = Want(frozenset([*plan.used, *job.keep]), plan.numeric - set(job.keep))
    return PartRun(reader, scorer, want, cp, fmt, job.batch_size, job.fail_fast, reader.parts(1)[0][0])


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
    output_format(out, job.output_format)
    reader = open_reader(locate(job.input, job.endpoint_url), job.input_format)
    parse_maps(job.maps)
    ctx = start_method()
    queue, stop = ctx.SimpleQueue(), ctx.Event()
    # the workers are forked before this process loads the model (no model library state is copied)
    pool = _start_pool(job, ctx, queue, stop) if job.workers > 1 else None
    try:
        run = _part_run(job, INTRA_OP_THREADS, reader, start=True)
        try:
            plan = run.checkpoint.plan(lambda: reader.parts(job.workers))
            resumed = _resumed(run.checkpoint, len(plan), progress)
            progress.start(reader.total_rows)
            try:
                if pool is None:
                    for p, (a, b) in enumerate(plan):
                        score_part(run, p, a, b, progress.advance)
                else:
                    run.scorer.model.close()  # the workers score
                    _run_pool(pool, plan, queue, progress)
            finally:
                progress.close()
        finally:
            run.scorer.model.close()
    finally:
        if pool is not None:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
    return _finish(job, run, plan, started, resumed)


def _start_pool(job: ScoreJob, ctx: Any, queue: Any, stop: Any) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(job.workers, mp_context=ctx, initializer=init_worker,
                               initargs=(_part_run, job, INTRA_OP_THREADS, os.getpid(), queue, stop))
    pool.submit(int)  # starts the workers now, while they load the model
    return pool


def _resumed(cp: Checkpoint, parts: int, progress: Progress) -> int:
    """The chunks a resumed run finds finished (counted as progress)."""
    count = 0
    for p in range(parts):
        for rec in cp.finished(p):
            progress.advance(int(rec["scored"]), int(rec["read"]) - int(rec["scored"]))
            count += 1
    return count


def _run_pool(pool: ProcessPoolExecutor, plan: list[tuple[int, int]], queue: Any, progress: Progress) -> None:
    futures = [pool.submit(score_part_in_worker, p, a, b) for p, (a, b) in enumerate(plan)]
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            _drain(queue, progress)
            for f in done:
                f.result()
        _drain(queue, progress)
    except BrokenProcessPool as exc:
        raise MlportError(f"a scoring worker process died: {exc}") from exc
    finally:
        for f in futures:
            f.cancel()


def _drain(queue: Any, progress: Progress) -> None:
    while not queue.empty():
        scored, failed = queue.get()
        progress.advance(scored, failed)


def _finish(job: ScoreJob, run: PartRun, plan: list[tuple[int, int]], started: float, resumed: int) -> Summary:
    cp = run.checkpoint
    records = list(cp.segments(len(plan)))
    for p, (_, end) in enumerate(plan):
        last = [rec for q, _, rec in records if q == p][-1:]
        if last and end >= 0 and last[0]["next"] != end:
            raise MlportError(f"part {p} of the checkpoint in {cp.folder} is not finished")
    out = locate(job.output, job.endpoint_url)
    write_segments(out, run.fmt, ((cp.data(p, j), rec) for p, j, rec in records))
    read = sum(int(rec["read"]) for _, _, rec in records)
    scored = sum(int(rec["scored"]) for _, _, rec in records)
    err_uri = None
    if read > scored:
        err_loc = locate(job.errors or job.output + ".errors.csv", job.endpoint_url)
        write_tables(err_loc, "csv", _error_tables(records), ERRORS_SCHEMA)
        err_uri = err_loc.uri
    cp.remove()
    return Summary(read, scored, read - scored, time.monotonic() - started, out.uri, err_uri, resumed)


ERRORS_SCHEMA = pa.schema([("row", pa.int64()), ("reason", pa.string())])


def _error_tables(records: list[tuple[int, int, Segment]]) -> Iterator[pa.Table]:
    """The bad rows with their row numbers in the input (a part's rows are numbered from its first)."""
    read: dict[int, int] = {}
    for p, _, rec in records:
        read[p] = read.get(p, 0) + int(rec["read"])
    for p, _, rec in records:
        errors = rec["errors"]
        if errors:
            offset = sum(n for q, n in read.items() if q < p)
            yield pa.table([pa.array([offset + int(r) for r, _ in errors], pa.int64()),
                            pa.array([str(m) for _, m in errors])], schema=ERRORS_SCHEMA)
