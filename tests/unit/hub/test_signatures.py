"""What differs between two versions' signatures, as the hub's experiment check names it."""

from __future__ import annotations

from typing import Any

from mlport.hub.signatures import signature_difference


def _sig(inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]]) -> dict[str, Any]:
    def rows(ts: list[tuple[str, str, list[int]]]) -> list[dict[str, Any]]:
        return [{"name": n, "datatype": d, "shape": s} for n, d, s in ts]

    return {"inputs": rows(inputs), "outputs": rows(outputs)}


BASE = _sig([("x", "FP32", [-1, 4])], [("label", "INT64", [-1]), ("p", "FP32", [-1, 3])])


def test_same_signature_or_unknown_is_no_difference() -> None:
    assert signature_difference(BASE, _sig([("x", "FP32", [-1, 4])],
                                           [("label", "INT64", [-1]), ("p", "FP32", [-1, 3])])) is None
    assert signature_difference(BASE, None) is None and signature_difference(None, BASE) is None


def test_every_kind_of_difference_is_named() -> None:
    other = _sig([("x", "FP64", [-1, 5]), ("extra", "FP32", [-1])], [("p", "FP32", [-1, 3])])
    text = signature_difference(BASE, other)
    assert text is not None
    assert "input 'x' datatype is FP64, not FP32" in text and "input 'x' shape is [-1, 5], not [-1, 4]" in text
    assert "input 'extra' is new" in text and "output 'label' is missing" in text


def test_a_long_list_is_cut() -> None:
    many = _sig([(f"i{k}", "FP32", [1]) for k in range(9)], [])
    text = signature_difference(many, _sig([], []))
    assert text is not None and text.endswith("(and 4 more)") and text.count("is missing") == 5
