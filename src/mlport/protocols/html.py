"""A small, self-contained HTML page showing a model's outputs (no scripts, no external assets).

Scalars are shown as a value, vectors as one row, matrices as a table; higher ranks as one table
per leading index. Long outputs are cut after :data:`MAX_CELLS` values, with a note saying so.
Every value and name is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_CELLS", "ImageOutput", "render_outputs"]

#: Most values shown per output.
MAX_CELLS = 2000

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d1d1f;background:#fff}
h1{font-size:1.3rem;margin:0 0 1rem}h2{font-size:1.05rem;margin:1.6rem 0 .4rem}
.meta{color:#666;font-size:.85rem}.note{color:#8a5a00;font-size:.85rem}
table{border-collapse:collapse;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}th{background:#f4f4f4;color:#555}
img{image-rendering:pixelated;border:1px solid #ccc;max-width:100%;min-width:64px}
.scalar{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:1rem}
"""


@dataclass(frozen=True, slots=True)
class ImageOutput:
    """An output already encoded as an image, to embed as a ``data:`` URI."""

    media: str
    data: bytes


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _cell(value: Any) -> str:
    return f"<td>{html.escape(_text(value))}</td>"


def _matrix(arr: np.ndarray[Any, Any], budget: int) -> tuple[str, int]:
    """A 2-d array as a table, within ``budget`` cells; returns the HTML and the cells used."""
    rows, cols = arr.shape
    cols_shown = min(cols, max(1, budget))
    rows_shown = min(rows, max(1, budget // cols_shown))
    head = "".join(f"<th>{j}</th>" for j in range(cols_shown))
    body = []
    for i in range(rows_shown):
        cells = "".join(_cell(v) for v in arr[i, :cols_shown])
        body.append(f"<tr><th>{i}</th>{cells}</tr>")
    return (f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>", rows_shown * cols_shown)


def _slices(shape: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(n) for n in shape))


def _tensor(arr: np.ndarray[Any, Any]) -> str:
    if arr.ndim == 0:
        return f'<p class="scalar">{html.escape(_text(arr[()]))}</p>'
    if arr.size == 0:
        return '<p class="note">(empty)</p>'
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    parts: list[str] = []
    budget = MAX_CELLS
    lead = arr.shape[:-2]
    for index in _slices(lead):
        if budget <= 0:
            break
        table, used = _matrix(arr[index], budget)
        budget -= used
        if index:
            label = ", ".join(str(i) for i in index) + ", :, :"
            parts.append(f'<p class="meta">[{html.escape(label)}]</p>{table}')
        else:
            parts.append(table)
    shown = MAX_CELLS - budget
    if shown < arr.size:
        parts.append(f'<p class="note">showing {shown} of {arr.size} values</p>')
    return "\n".join(parts)


def _image(name: str, image: ImageOutput) -> str:
    uri = f"data:{image.media};base64,{base64.b64encode(image.data).decode('ascii')}"
    return f'<img alt="{html.escape(name)}" src="{html.escape(uri)}">'


def render_outputs(
    title: str,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    images: Mapping[str, ImageOutput] | None = None,
) -> str:
    """The page: a heading, then per output its name, type and shape and its values (or image)."""
    images = images or {}
    sections: list[str] = []
    for name, arr in outputs.items():
        kind = "string" if arr.dtype.kind in "OSU" else str(arr.dtype)
        meta = f"{kind} &middot; shape [{', '.join(str(d) for d in arr.shape)}]"
        shown = _image(name, images[name]) if name in images else _tensor(arr)
        sections.append(
            f'<section><h2>{html.escape(name)}</h2><p class="meta">{meta}</p>\n{shown}</section>'
        )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
