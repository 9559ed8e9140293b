"""The manifest schema: a typed node tree, and errors that name the step as the loader does."""

from __future__ import annotations

from typing import Any

import pytest

from mlport.formats.manifest.schema import (
    EnsembleNodeSpec,
    FlowNodeSpec,
    ManifestError,
    ModelSpec,
    RouterNodeSpec,
    TransformerNodeSpec,
    parse_node,
)


def test_children_are_typed_nodes() -> None:
    spec = parse_node({"flow": [
        {"model": "a.onnx", "outputs": {"y": "z"}},
        {"router": {"strategy": "sticky", "children": [{"model": "b.onnx", "name": "b"}, {"flow": [{"model": "c"}]}]}},
        {"transformer": {"node": {"ensemble": {"children": [{"model": "d.onnx"}]}}}},
    ], "outputs": ["z"]}, "flow 'm'")
    assert isinstance(spec, FlowNodeSpec) and spec.outputs == ["z"]
    first, router, transformer = spec.flow
    assert isinstance(first, ModelSpec) and first.path == "a.onnx" and first.outputs == {"y": "z"}
    assert isinstance(router, RouterNodeSpec) and router.router.strategy == "sticky"
    assert isinstance(router.router.children[0], ModelSpec) and router.router.children[0].name == "b"
    assert isinstance(router.router.children[1], FlowNodeSpec)
    assert isinstance(transformer, TransformerNodeSpec)
    assert isinstance(transformer.transformer.node, EnsembleNodeSpec)


@pytest.mark.parametrize(("raw", "wanted"), [
    ({"flow": [{"model": "x1.onnx"}, {"predictor": "x2.onnx", "name": "second"}]},
     "flow 'm' step 2 'second': a step has exactly one of model, tokenizer, transform, manifest, flow, ensemble, "
     "router, cascade, transformer (unknown step type 'predictor')"),
    ({"flow": [{"model": "x1.onnx"}, {"predictor": "x2.onnx"}]}, "flow 'm' step 2: a step has exactly one of"),
    ({"flow": [{"model": "x1.onnx", "bogus": 1}]}, "flow 'm' step 1 'x1': unknown key bogus"),
    ({"flow": ["x1.onnx"]}, "flow 'm' step 1: expected a mapping with one of model"),
    ({"flow": [{"model": "x1.onnx", "inputs": {"x": 3}}]}, "flow 'm' step 1 'x1': inputs.x:"),
    ({"router": {"children": [{"model": "x1.onnx"}], "weights": [1, 2]}},
     "flow 'm': weights: give one weight per child"),
    ({"ensemble": {"children": [{"name": "inner", "flow": [{"model": "a"}, {"model": 3, "name": "deep"}]}]}},
     "flow 'm' child 1 'inner' step 2 'deep': model:"),
    ({"cascade": {"first": {"model": "a"}, "fallback": {"model": "b"}, "confidence": {"output": "p"}}},
     "flow 'm': confidence.threshold: Field required"),
    ({"transformer": {"node": {"model": "a"}, "pre": {"flow": [], "name": "prep"}}},
     "flow 'm' pre 'prep': flow: List should have at least 1 item"),
])
def test_errors_name_the_step(raw: dict[str, Any], wanted: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_node(raw, "flow 'm'")
    assert wanted in str(info.value)
