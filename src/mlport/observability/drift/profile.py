"""The reference profile of a model version (``profile.json``): what its training or validation data looked like.

Per feature (see :mod:`.features`), inputs and outputs alike: the share of missing values, and

- numeric: mean, standard deviation, quantiles, a histogram over the reference's deciles (PSI compares a window's
  shares of rows per bin with these), and a uniform sample of up to :data:`SAMPLE_SIZE` values (the
  Kolmogorov-Smirnov test compares a window with it);
- categorical: the frequency of each category (the :data:`MAX_CATEGORIES` most frequent; the rest as
  :data:`OTHER`).

It also holds what outlier scores need (see :mod:`.outliers`). A profile is data: it is read with a size limit
and checked field by field, never executed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlport.errors import InvalidInput
from mlport.observability.drift.features import Column, categories, is_categorical, values

__all__ = [
    "FORMAT",
    "MAX_PROFILE_BYTES",
    "OTHER",
    "FeatureProfile",
    "OutlierReference",
    "Profile",
    "build_profile",
    "find_profile",
    "read_profile",
]

FORMAT: Literal["mlport-profile/1"] = "mlport-profile/1"
PROFILE_NAME = "profile.json"
MAX_PROFILE_BYTES = 32 * 1024 * 1024
#: Values kept per numeric feature for the Kolmogorov-Smirnov test.
SAMPLE_SIZE = 2000
#: Histogram bins of a numeric feature (at most; fewer when deciles coincide).
BINS = 10
#: Categories kept per categorical feature; the others are counted together under :data:`OTHER`.
MAX_CATEGORIES = 100
OTHER = "__other__"
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
#: The quantile of the reference rows' outlier scores that is the default outlier threshold.
OUTLIER_QUANTILE = 0.999


class Histogram(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Inner bin edges: bin ``i`` holds values ``edges[i-1] < x <= edges[i]`` (the outer bins are open).
    edges: list[float] = Field(max_length=BINS * 10)
    fractions: list[float] = Field(max_length=BINS * 10 + 1)


class FeatureProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=512)
    tensor: str = Field(min_length=1, max_length=512)
    column: int | None = Field(default=None, ge=0)
    role: Literal["input", "output"]
    kind: Literal["numeric", "categorical"]
    count: int = Field(ge=0)
    missing_rate: float = Field(ge=0.0, le=1.0)
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = Field(default_factory=dict, max_length=64)
    histogram: Histogram | None = None
    sample: list[float] | None = Field(default=None, max_length=SAMPLE_SIZE * 5)
    frequencies: dict[str, float] | None = Field(default=None, max_length=MAX_CATEGORIES * 10 + 1)

    @property
    def key(self) -> Column:
        return Column(self.name, self.tensor, self.column, self.role)


class OutlierReference(BaseModel):
    """The Mahalanobis distance of a row's numeric inputs, each scaled by the reference's mean and standard
    deviation, under the reference's correlation: ``sqrt(z . precision . z)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[str] = Field(min_length=1, max_length=1024)
    mean: list[float]
    scale: list[float]
    #: The (pseudo-)inverse of the correlation matrix of the scaled reference rows.
    precision: list[list[float]]
    threshold: float = Field(gt=0.0)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["mlport-profile/1"] = FORMAT
    model: str | None = None
    version: int | None = None
    rows: int = Field(ge=0)
    created_at: float = 0.0
    features: list[FeatureProfile] = Field(max_length=4096)
    outliers: OutlierReference | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def read_profile(path: Path) -> Profile:
    """The profile in ``path``, checked; :class:`InvalidInput` naming the file and the problem otherwise."""
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise InvalidInput(f"{path.name} is larger than {MAX_PROFILE_BYTES // (1024 * 1024)} MiB")
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read the profile {path.name}: {exc}") from None
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path.name} is not an mlport profile: {where}: {first['msg']}") from None


def find_profile(model_path: Path) -> Path | None:
    """The profile of the model at ``model_path`` (a model file or folder): ``profile.json`` in its version
    folder, else beside the model's ``model.yaml`` above it, else ``<stem>.profile.json`` beside a single file."""
    folder = model_path if model_path.is_dir() else model_path.parent
    candidates = [folder / PROFILE_NAME]
    if folder.name.isdigit():
        candidates.append(folder.parent / PROFILE_NAME)
    if model_path.is_file():
        candidates.append(model_path.with_name(f"{model_path.name.split('.')[0]}.{PROFILE_NAME}"))
    return next((c for c in candidates if c.is_file()), None)


# ------------------------------------------------------------------------------------------------ building
def build_profile(columns: list[Column], arrays: Mapping[str, Mapping[str, Any]], rows: int,
                  missing: Mapping[str, int] | None = None, *, model: str | None = None,
                  version: int | None = None, seed: int = 0) -> Profile:
    """The profile of ``rows`` reference rows: ``arrays[role][tensor]`` holds the good rows' values (inputs and
    model outputs), ``missing[name]`` the rows whose value of feature ``name`` was empty (left out of ``arrays``)."""
    rng = np.random.default_rng(seed)
    features = []
    numeric: list[tuple[str, np.ndarray[Any, Any]]] = []
    for col in columns:
        vals = values(arrays.get(col.role, {}), col)
        if vals is None:
            continue
        empty = (missing or {}).get(col.name, 0)
        feature = _feature(col, vals, rows, empty, rng)
        features.append(feature)
        if feature.kind == "numeric" and col.role == "input":
            numeric.append((col.name, vals.astype(np.float64)))
    return Profile(model=model, version=version, rows=rows, created_at=time.time(), features=features,
                   outliers=_outlier_reference(numeric))


def _feature(col: Column, vals: np.ndarray[Any, Any], rows: int, empty: int,
             rng: np.random.Generator) -> FeatureProfile:
    base: dict[str, Any] = {"name": col.name, "tensor": col.tensor, "column": col.column, "role": col.role}
    if is_categorical(vals):
        keys = categories(vals)
        present = keys[keys != ""]
        found, counts = np.unique(present.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        total = max(int(counts.sum()), 1)
        freq = {str(found[i]): int(counts[i]) / total for i in order[:MAX_CATEGORIES]}
        rest = int(counts[order[MAX_CATEGORIES:]].sum())
        if rest:
            freq[OTHER] = rest / total
        return FeatureProfile(**base, kind="categorical", count=len(present),
                              missing_rate=_rate(empty + len(keys) - len(present), rows), frequencies=freq)
    x = vals.astype(np.float64)
    finite = x[np.isfinite(x)]
    nan = len(x) - len(finite)
    if len(finite) == 0:
        return FeatureProfile(**base, kind="numeric", count=0, missing_rate=_rate(empty + nan, rows))
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, BINS + 1))[1:-1])
    counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(edges) + 1)
    sample = finite if len(finite) <= SAMPLE_SIZE else rng.choice(finite, SAMPLE_SIZE, replace=False)
    return FeatureProfile(
        **base, kind="numeric", count=len(finite), missing_rate=_rate(empty + nan, rows),
        mean=float(finite.mean()), std=float(finite.std()),
        quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(finite, QUANTILES), strict=True)},
        histogram=Histogram(edges=edges.tolist(), fractions=(counts / len(finite)).tolist()),
        sample=sample.tolist(),
    )


def _rate(part: int, whole: int) -> float:
    return min(1.0, part / whole) if whole else 0.0


def _outlier_reference(numeric: list[tuple[str, np.ndarray[Any, Any]]]) -> OutlierReference | None:
    """Mean, scale and correlation of the numeric inputs over the rows where all are finite."""
    if not numeric:
        return None
    x = np.column_stack([v for _, v in numeric])
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 2:
        return None
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    precision = np.linalg.pinv(np.atleast_2d(np.cov(z, rowvar=False)))
    scores = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, precision, z), 0.0))
    threshold = float(np.quantile(scores, OUTLIER_QUANTILE)) or 1.0
    return OutlierReference(features=[n for n, _ in numeric], mean=mean.tolist(), scale=scale.tolist(),
                            precision=precision.tolist(), threshold=threshold)
