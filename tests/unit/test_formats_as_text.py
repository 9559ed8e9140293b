"""as_text: string tensors as object arrays of str, whatever they arrive as."""

from __future__ import annotations

import numpy as np
import pytest

from mlport.formats.base import as_text


def test_text_stays_text_in_a_new_array() -> None:
    arr = np.array([["a"], ["bé"], [""]], dtype=object)
    out = as_text(arr)
    assert out.shape == (3, 1) and out.dtype == object and out.tolist() == [["a"], ["bé"], [""]]
    out[0, 0] = "changed"
    assert arr[0, 0] == "a"  # the caller's array is not the one returned


def test_bytes_and_mixed_values_are_decoded() -> None:
    assert as_text(np.array([b"x", "y", "\u00e9".encode()], dtype=object)).tolist() == ["x", "y", "é"]
    assert as_text(np.array(["a", "b"])).tolist() == ["a", "b"]
    with pytest.raises(UnicodeDecodeError):
        as_text(np.array([b"\xff"], dtype=object))
