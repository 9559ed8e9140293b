"""The parts of the text presets on tiny data: the French tokenizer's elision, the embedding bag's negation and
intensifier rules, the English head's negation switch, and the catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from mlport import presets
from mlport.cli.presets import describe_presets
from mlport.presets import sentiment, sentiment_fr

WORDS = ["bon", "mal", "film", "hôtel", "est", "l'", "n'", "ne", "pas", "très", "jamais", "aujourd'hui", "!"]


def _bag(tmp_path: Path) -> tuple[object, ort.InferenceSession]:
    tok = sentiment_fr._tokenizer(WORDS, tmp_path / "tokenizer.json")
    vocab = tok.get_vocab()
    table = np.eye(4, dtype=np.float32)  # bon -> e0, mal -> e1, film -> e2, hôtel/est -> e3
    rows = {"bon": 0, "mal": 1, "film": 2, "hôtel": 3, "est": 3, "aujourd'hui": 2}
    sentiment_fr._bag_onnx(vocab, rows, table, {"est", "!"}, tmp_path / "bag.onnx")
    return tok, ort.InferenceSession(str(tmp_path / "bag.onnx"), providers=["CPUExecutionProvider"])


def _embed(tok: object, sess: ort.InferenceSession, text: str) -> np.ndarray:
    enc = tok.encode(text)  # type: ignore[attr-defined]
    ids = np.asarray([enc.ids], dtype=np.int64)
    mask = np.asarray([enc.attention_mask], dtype=np.int64)
    return np.asarray(sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0][0])


def test_the_tokenizer_splits_elisions_and_keeps_accents(tmp_path: Path) -> None:
    tok = sentiment_fr._tokenizer(WORDS, tmp_path / "tokenizer.json")
    assert tok.encode("L\u2019hôtel n'est pas bon!").tokens == ["l'", "hôtel", "n'", "est", "pas", "bon", "!"]
    assert tok.encode("aujourd'hui").tokens == ["aujourd'hui"]
    assert tok.encode("Très  BON").tokens == ["très", "bon"]
    assert tok.encode("inconnu").tokens == ["[UNK]"]


def test_the_bag_reverses_negated_words_and_weighs_intensified_ones(tmp_path: Path) -> None:
    tok, sess = _bag(tmp_path)
    np.testing.assert_allclose(_embed(tok, sess, "bon"), [1, 0, 0, 0])
    np.testing.assert_allclose(_embed(tok, sess, "pas bon"), [-1, 0, 0, 0])
    # the stop word "est" and "!" do not count; n' reverses the words up to 3 tokens after it
    np.testing.assert_allclose(_embed(tok, sess, "l'hôtel n'est pas bon !"), [-0.5, 0, 0, 0.5])
    np.testing.assert_allclose(_embed(tok, sess, "film pas mal"), [0, -0.5, 0.5, 0])
    # a word after an intensifier counts twice; the intensifier itself not at all
    np.testing.assert_allclose(_embed(tok, sess, "très bon film"), [2 / 3, 0, 1 / 3, 0])
    # the window: film 3 tokens after jamais is reversed, 4 tokens after ne it is not
    np.testing.assert_allclose(_embed(tok, sess, "jamais est est film"), [0, 0, -1, 0])
    np.testing.assert_allclose(_embed(tok, sess, "ne est est est film"), [0, 0, 1, 0])
    np.testing.assert_allclose(_embed(tok, sess, "inconnu"), [0, 0, 0, 0])


def test_the_english_head_switches_weights_on_a_negation_cue(tmp_path: Path) -> None:
    cues = np.zeros(5, dtype=np.float32)
    cues[4] = 1.0  # token 4 is a negation cue
    coef = np.asarray([1.0, 0.0, -3.0, 0.0, 0.5])  # w = [1, 0], v = [-3, 0], c = 0.5
    sentiment._head_onnx(coef, -0.2, cues, tmp_path / "head.onnx")
    sess = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    e = np.asarray([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    ids = np.asarray([[1, 2, 0], [1, 4, 2], [1, 2, 4]], dtype=np.int64)
    mask = np.asarray([[1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=np.int64)  # the last row's cue is padding
    label, score = sess.run(["label", "score"], {"embedding": e, "input_ids": ids, "attention_mask": mask})
    logits = np.asarray([1 - 0.2, 1 - 3 + 0.5 - 0.2, 1 - 0.2], dtype=np.float32)
    np.testing.assert_allclose(score, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    assert label.tolist() == [1, 0, 1]


def test_the_catalogue_lists_both_languages(tmp_path: Path) -> None:
    rows = {r["name"]: r for r in presets.catalogue(tmp_path)}
    assert rows["sentiment-en"]["languages"] == ["en"] and rows["sentiment-fr"]["languages"] == ["fr"]
    assert all(not r["built"] and r["size"] is None and r["figures"] == {} for r in rows.values())
    folder = tmp_path / "sentiment-fr"
    folder.mkdir()
    (folder / ".built").write_text("ok\n")
    (folder / "about.json").write_text('{"accuracy_hand_written_sentences": 0.95, "hand_written_sentences": 46}')
    row = {r["name"]: r for r in presets.catalogue(tmp_path)}["sentiment-fr"]
    assert row["built"] and row["size"] > 0 and row["figures"]["hand_written_sentences"] == 46
    text = describe_presets([row])
    assert "sentiment-fr   sentiment analysis (fr)" in text and "hand written sentences 0.950" in text
