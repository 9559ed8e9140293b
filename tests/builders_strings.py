"""Tiny ONNX models with string and integer tensors, built with the onnx helper API."""

from __future__ import annotations

from pathlib import Path

from tests.builders import save_graph


def string_concat_onnx(path: Path) -> Path:
    """Inputs 'text' BYTES [-1] and 'n' INT64 [-1]; outputs 'echo' BYTES [-1] (text + "!") and 'twice' INT64 [-1]."""
    from onnx import TensorProto, helper

    text = helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, ["N"])
    echo = helper.make_tensor_value_info("echo", TensorProto.STRING, ["N"])
    twice = helper.make_tensor_value_info("twice", TensorProto.INT64, ["N"])
    bang = helper.make_tensor("bang", TensorProto.STRING, [1], [b"!"])
    two = helper.make_tensor("two", TensorProto.INT64, [], [2])
    nodes = [
        helper.make_node("StringConcat", ["text", "bang"], ["echo"]),
        helper.make_node("Mul", ["n", "two"], ["twice"]),
    ]
    graph = helper.make_graph(nodes, "strings", [text, n], [echo, twice], [bang, two])
    return save_graph(graph, path, opset=20, ir_version=9)
