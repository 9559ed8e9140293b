"""What the scikit-learn presets share: the held-out split, the ONNX export, and how a trained model is saved."""

from __future__ import annotations

import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SEED", "TEST_SIZE", "Embedder", "Trained", "framed", "logistic_head_onnx", "package_versions", "save",
           "score", "split", "to_onnx", "write", "write_about"]

SEED = 0
#: The share of rows held out to measure accuracy.
TEST_SIZE = 0.25
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True, slots=True)
class Trained:
    """A trained model, exported to ONNX, and what to write beside it."""

    onnx_model: Any
    accuracy: float
    train_rows: int
    test_rows: int
    #: Where the rows came from.
    data: str
    #: The model's ``model.yaml``.
    config: str
    #: More about the data, for the preset's ABOUT.md.
    notes: str = ""


def split(x: Any, y: np.ndarray[Any, Any], test_size: float = TEST_SIZE) -> tuple[Any, Any, Any, Any]:
    """``(x_train, x_test, y_train, y_test)``, stratified with a fixed seed; no split when ``test_size`` is 0
    (the test rows are then the training rows)."""
    if not test_size:
        return x, x, y, y
    from sklearn.model_selection import train_test_split

    parts: list[Any] = train_test_split(x, y, test_size=test_size, random_state=SEED, stratify=y)
    return parts[0], parts[1], parts[2], parts[3]


def to_onnx(model: Any, initial_types: list[tuple[str, Any]]) -> Any:
    """A scikit-learn classifier as ONNX: ``label`` and ``probabilities`` (a tensor, not a list of maps)."""
    from skl2onnx import to_onnx as convert

    return convert(model, initial_types=initial_types, options={"zipmap": False}, target_opset=TARGET_OPSET)


def score(model: Any, x_test: Any, y_test: np.ndarray[Any, Any]) -> float:
    return float(np.mean(model.predict(x_test) == y_test))


def write(path: Path, data: bytes) -> None:
    """Write through a temporary file, so a half-written file is never seen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save(name: str, trained: Trained, folder: Path) -> Path:
    """Write ``folder/1/model.onnx`` (same bytes for the same model), ``model.yaml`` and ``ABOUT.md``."""
    import onnx

    split_text = f"{trained.train_rows} train / {trained.test_rows} test, stratified, seed {SEED}"
    onnx.helper.set_model_props(trained.onnx_model, {
        "mlport.preset": name, "mlport.preset.data": trained.data,
        "mlport.preset.accuracy": f"{trained.accuracy:.4f}", "mlport.preset.split": split_text,
    })
    # the converter lists opsets in set order; sort them so equal models serialize to equal bytes
    opsets = sorted((o.domain, o.version) for o in trained.onnx_model.opset_import)
    del trained.onnx_model.opset_import[:]
    trained.onnx_model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets)
    onnx.checker.check_model(trained.onnx_model)
    write(folder / "model.yaml", trained.config.encode())
    about = (f"# {name}\n\nData: {trained.data}.\n\nHeld-out accuracy {trained.accuracy:.4f} ({split_text}; the "
             f"test rows were never trained on).\n" + (f"\n{trained.notes}\n" if trained.notes else ""))
    write(folder / "ABOUT.md", about.encode())
    figures = {"accuracy_held_out_rows": round(trained.accuracy, 4), "train_rows": trained.train_rows,
               "test_rows": trained.test_rows}
    write(folder / "about.json", (json.dumps(figures, indent=2) + "\n").encode())
    path = folder / "1" / "model.onnx"
    write(path, trained.onnx_model.SerializeToString())
    return path


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each distribution (what a build was made from); missing ones are left out."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def logistic_head_onnx(weights: np.ndarray[Any, Any], bias: float, out: Path) -> None:
    """A logistic regression as ONNX: ``embedding`` [batch, n] -> ``label`` (1 when positive) and ``score``."""
    from onnx import TensorProto, checker, helper, numpy_helper

    w = numpy_helper.from_array(weights.astype(np.float32).reshape(-1, 1), "w")
    b = numpy_helper.from_array(np.asarray([bias], dtype=np.float32), "b")
    half = numpy_helper.from_array(np.asarray(0.5, dtype=np.float32), "half")
    shape = numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "flat")
    nodes = [
        helper.make_node("MatMul", ["embedding", "w"], ["logit2d"]),
        helper.make_node("Add", ["logit2d", "b"], ["logit2db"]),
        helper.make_node("Reshape", ["logit2db", "flat"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
        helper.make_node("Greater", ["score", "half"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["label"], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes, "sentiment_head",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", int(weights.size)])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [w, b, half, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    checker.check_model(model)
    write(out, model.SerializeToString())


#: The held-out figures a text preset reports: key -> how ABOUT.md names the set (``{n}`` its size).
_TEXT_FIGURES = (
    ("accuracy_held_out_words", "held_out_words", "{n} lexicon entries never trained on"),
    ("accuracy_held_out_words_in_frames", "held_out_frames", "the same entries in {n} unseen sentence frames"),
    ("accuracy_hand_written_sentences", "hand_written_sentences", "{n} hand-written, hand-labelled sentences"),
    ("accuracy_negation_sentences", "negation_sentences", "{n} hand-written sentences with a negation"),
)


def write_about(folder: Path, name: str, figures: dict[str, Any], training: str, limits: str) -> None:
    """``about.json`` (the figures) and ``ABOUT.md`` (the same for people) of a text preset."""
    write(folder / "about.json", (json.dumps(figures, indent=2) + "\n").encode())
    rows = "".join(f"| {label.format(n=figures[size])} | {figures[key]:.3f} |\n"
                   for key, size, label in _TEXT_FIGURES if key in figures)
    built = ", ".join(f"{k} {v}" for k, v in figures.get("built_from", {}).items())
    text = (f"# {name}\n\nText in; `label` (positive/negative) and `score` (probability of positive) out.\n\n"
            f"{training}\n\n| held-out set | accuracy |\n|---|---|\n{rows}\n{limits}\n"
            + (f"\nBuilt from: {built}.\n" if built else ""))
    write(folder / "ABOUT.md", text.encode())


def framed(words: list[tuple[str, int]], frames: tuple[tuple[str, bool], ...]) -> list[tuple[str, int]]:
    """Each ``(word, label)`` in each ``(frame, negated)``, its label reversed in a negated frame."""
    return [(f.format(w=w), 1 - y if flip else y) for w, y in words for f, flip in frames]


class Embedder:
    """A tokenizer (``tokenizers``) and an ONNX model from ``input_ids``/``attention_mask`` to ``embedding``, run
    as the served flow runs them: what a text preset's head is trained on."""

    def __init__(self, tok: Any, model: Path, batch: int = 256) -> None:
        import onnxruntime as ort

        self.tok = tok
        self.batch = batch
        self.sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str]) -> np.ndarray[Any, Any]:
        parts = []
        for i in range(0, len(texts), self.batch):
            enc = self.tok.encode_batch(texts[i:i + self.batch])
            ids = np.asarray([e.ids for e in enc], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            parts.append(self.sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0])
        return np.concatenate(parts)
