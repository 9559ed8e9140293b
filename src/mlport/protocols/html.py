"""A small, self-contained HTML page showing a model's outputs (no scripts, no external assets).

Scalars are shown as a value, vectors as one row, matrices as a table; higher ranks as one table
per leading index. Long outputs are cut after :data:`MAX_CELLS` values, with a note saying so.
The page is the template ``outputs.html``; every value and name is escaped by it.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlport.protocols.templating import render

__all__ = ["MAX_CELLS", "OUTPUTS_CSP", "ImageOutput", "render_outputs"]

#: Most values shown per output.
MAX_CELLS = 2000
#: The page runs nothing and loads nothing: its own style, and images inlined as ``data:`` URIs.
OUTPUTS_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


@dataclass(frozen=True, slots=True)
class ImageOutput:
    """An output already encoded as an image, to embed as a ``data:`` URI."""

    media: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _Table:
    """One 2-d slice: its leading index (``"1, :, :"``, empty for a matrix), column numbers and rows."""

    label: str
    columns: range
    rows: list[tuple[int, list[str]]]


@dataclass(slots=True)
class _Section:
    """What the template shows for one output."""

    name: str
    kind: str
    shape: str
    size: int
    image: str | None = None
    scalar: str | None = None
    tables: list[_Table] = field(default_factory=list)
    shown: int = 0


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _matrix(arr: np.ndarray[Any, Any], budget: int, label: str) -> _Table:
    """A 2-d array as a table of at most ``budget`` cells."""
    rows, cols = arr.shape
    cols_shown = min(cols, max(1, budget))
    rows_shown = min(rows, max(1, budget // cols_shown))
    body = [(i, [_text(v) for v in arr[i, :cols_shown]]) for i in range(rows_shown)]
    return _Table(label, range(cols_shown), body)


def _slices(shape: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(n) for n in shape))


def _fill_tables(section: _Section, arr: np.ndarray[Any, Any]) -> None:
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    budget = MAX_CELLS
    for index in _slices(arr.shape[:-2]):
        if budget <= 0:
            break
        label = ", ".join(str(i) for i in index) + ", :, :" if index else ""
        table = _matrix(arr[index], budget, label)
        budget -= len(table.rows) * len(table.columns)
        section.tables.append(table)
    section.shown = MAX_CELLS - budget


def _section(name: str, arr: np.ndarray[Any, Any], image: ImageOutput | None) -> _Section:
    kind = "string" if arr.dtype.kind in "OSU" else str(arr.dtype)
    section = _Section(name, kind, ", ".join(str(d) for d in arr.shape), int(arr.size))
    if image is not None:
        section.image = f"data:{image.media};base64,{base64.b64encode(image.data).decode('ascii')}"
    elif arr.ndim == 0:
        section.scalar = _text(arr[()])
    elif arr.size:
        _fill_tables(section, arr)
    return section


def render_outputs(
    title: str,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    images: Mapping[str, ImageOutput] | None = None,
) -> str:
    """The page: a heading, then per output its name, type and shape and its values (or image)."""
    images = images or {}
    sections = [_section(name, arr, images.get(name)) for name, arr in outputs.items()]
    return render("outputs.html", title=title, sections=sections)
