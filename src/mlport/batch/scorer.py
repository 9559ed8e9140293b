"""Score one chunk: its good rows through the model in one predict call, its bad rows to the error list.

A chunk the model refuses as a whole is split in halves until the rows it refuses are found (at most about
``2 * rows`` calls, and only for chunks holding such rows): the other rows are still scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlport.batch.columns import ColumnPlan
from mlport.batch.model import ScoringModel
from mlport.batch.readers import BAD_LINE_COLUMN
from mlport.batch.writers import output_columns
from mlport.core.validate import check_inputs
from mlport.errors import MlportError

__all__ = ["ChunkResult", "Scorer"]

Array = np.ndarray[Any, Any]


@dataclass
class ChunkResult:
    """The scored rows (kept columns, then outputs) and ``(row number, reason)`` for the rows that failed."""

    table: pa.Table
    errors: list[tuple[int, str]]


class Scorer:
    def __init__(self, model: ScoringModel, plan: ColumnPlan, keep: list[str]) -> None:
        self.model = model
        self.plan = plan
        self.keep = keep

    def score(self, batch: pa.RecordBatch, first_row: int) -> ChunkResult:
        """Score ``batch``, whose first row is row ``first_row`` (1-based) of the input."""
        bad_lines: dict[int, str] = {}
        if BAD_LINE_COLUMN in batch.schema.names:
            col = batch.column(BAD_LINE_COLUMN)
            if col.null_count < len(col):
                for i, reason in enumerate(col.to_pylist()):
                    if reason is not None:
                        bad_lines[i] = reason
        prepared = self.plan.prepare(batch)
        bad = {**prepared.bad, **bad_lines}
        good = prepared.good
        feed = prepared.feed
        if bad_lines:
            keep_mask = ~np.isin(good, np.fromiter(bad_lines, dtype=np.int64))
            good = good[keep_mask]
            feed = {k: v[keep_mask] for k, v in feed.items()}
        outputs, failed = self._predict(feed, np.arange(len(good)))
        for pos, reason in failed.items():
            bad[int(good[pos])] = reason
        scored = good if not failed else np.delete(good, list(failed))
        every = len(scored) == batch.num_rows
        kept = [batch.column(c) if every else batch.column(c).take(pa.array(scored)) for c in self.keep]
        names = self.model.signature.output_names
        cols = output_columns({n: outputs[n] for n in names if n in outputs})
        table = pa.table([*kept, *cols.values()], names=[*self.keep, *cols])
        errors = [(first_row + i, bad[i]) for i in sorted(bad)]
        return ChunkResult(table, errors)

    def _predict(self, feed: dict[str, Array], rows: Array) -> tuple[dict[str, Array], dict[int, str]]:
        """Outputs for the rows of ``feed`` (at positions ``rows`` of the chunk) that the model takes, and
        ``{position: reason}`` for those it refuses."""
        if len(rows) == 0:
            return {}, {}
        try:
            out = self.model.evaluator.predict(check_inputs(self.model.signature, feed))
            return {k: np.asarray(v) for k, v in out.items()}, {}
        except Exception as exc:
            if len(rows) == 1:
                text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
                reason = text if isinstance(exc, MlportError) else f"the model failed on this row: {text}"
                return {}, {int(rows[0]): reason}
        half = len(rows) // 2
        first, bad_first = self._predict({k: v[:half] for k, v in feed.items()}, rows[:half])
        second, bad_second = self._predict({k: v[half:] for k, v in feed.items()}, rows[half:])
        if not first or not second:
            return first or second, {**bad_first, **bad_second}
        return {k: np.concatenate([first[k], second[k]]) for k in first}, {**bad_first, **bad_second}
