"""The reference profile of a model from a data file (``mlport profile``): the data read and mapped to the model's
inputs exactly as ``mlport score`` does (columns of the inputs' names, the config's ``fields``, ``--map``), the
model run on it for the distribution of its outputs, and the whole summed up by
:func:`mlport.observability.drift.build_profile`.

Features fed by named columns (``fields`` or ``--map``) are named after those columns. A row that cannot feed
the model is left out; an empty value counts in its feature's missing rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlport.batch.columns import ColumnPlan, parse_maps
from mlport.batch.model import ScoringModel, load_model
from mlport.batch.readers import open_reader
from mlport.batch.storage import locate
from mlport.core.validate import check_inputs
from mlport.errors import InvalidInput
from mlport.observability.drift import Profile, build_profile
from mlport.observability.drift.features import Column, columns_of

__all__ = ["MAX_PROFILE_ROWS", "ProfileJob", "profile_data"]

Array = np.ndarray[Any, Any]

#: Most rows a profile reads (the first ones of the file).
MAX_PROFILE_ROWS = 1_000_000


@dataclass
class ProfileJob:
    model: Path
    data: str
    maps: list[str] = field(default_factory=list)
    input_format: str | None = None
    max_rows: int = 100_000
    batch_size: int = 10_000
    name: str | None = None
    trusted: bool = False
    endpoint_url: str | None = None


def profile_data(job: ProfileJob) -> Profile:
    """The profile of the first ``job.max_rows`` rows of ``job.data`` as inputs of ``job.model``."""
    if not 1 <= job.max_rows <= MAX_PROFILE_ROWS:
        raise InvalidInput(f"--max-rows must be 1..{MAX_PROFILE_ROWS}, not {job.max_rows}")
    if not 1 <= job.batch_size <= MAX_PROFILE_ROWS:
        raise InvalidInput(f"--batch-size must be 1..{MAX_PROFILE_ROWS}, not {job.batch_size}")
    model = load_model(job.model, name=job.name, trusted=job.trusted)
    try:
        reader = open_reader(locate(job.data, job.endpoint_url), job.input_format)
        plan = ColumnPlan(model, reader.columns, parse_maps(job.maps))
        features, feeders = _features(model, plan)
        inputs: dict[str, list[Array]] = {}
        outputs: dict[str, list[Array]] = {}
        missing: Counter[str] = Counter()
        rows = 0
        for batch in _limited(reader.chunks(job.batch_size), job.max_rows):
            rows += batch.num_rows
            for name, column in feeders.items():
                missing[name] += batch.column(column).null_count
            prepared = plan.prepare(batch)
            if len(prepared.good) == 0:
                continue
            for key, arr in prepared.feed.items():
                inputs.setdefault(key, []).append(arr)
            for key, arr in model.evaluator.predict(check_inputs(model.signature, prepared.feed)).items():
                outputs.setdefault(key, []).append(np.asarray(arr))
        if not inputs:
            raise InvalidInput(f"{job.data}: no row could feed model '{model.name}' ({rows} rows read)")
        arrays = {"input": _joined(inputs), "output": _joined(outputs)}
        return build_profile(features, arrays, rows, missing, model=model.name, version=model.version)
    finally:
        model.close()


def _features(model: ScoringModel, plan: ColumnPlan) -> tuple[list[Column], dict[str, str]]:
    """The profiled features (inputs, then outputs), and ``{feature: data column}`` for those one column feeds."""
    features: list[Column] = []
    feeders: dict[str, str] = {}
    for src in plan.sources:
        cols = columns_of("input", src.spec.name, src.spec.shape, model.config.fields.get(src.spec.name))
        if src.image:
            continue
        if not src.whole and len(src.columns) == len(cols):
            cols = [Column(name, c.tensor, c.column, c.role) for name, c in zip(src.columns, cols, strict=True)]
        for c in cols:
            feeders[c.name] = src.columns[0] if src.whole else c.name
        features.extend(cols)
    for spec in model.signature.outputs:
        features.extend(columns_of("output", spec.name, spec.shape))
    return features, feeders


def _limited(chunks: Iterator[pa.RecordBatch], max_rows: int) -> Iterator[pa.RecordBatch]:
    left = max_rows
    for batch in chunks:
        if left <= 0:
            return
        yield batch if batch.num_rows <= left else batch.slice(0, left)
        left -= batch.num_rows


def _joined(parts: dict[str, list[Array]]) -> dict[str, Array]:
    return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in parts.items()}
