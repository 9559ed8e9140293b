"""Tokenizers trained here (WordPiece and byte-level BPE), served for real, checked against ``tokenizers``."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from mlport.errors import InvalidInput
from mlport.formats.base import LoadOptions, MissingExtra
from mlport.formats.registry import FormatRegistry
from mlport.formats.tokenizer import TokenizerFormat
from mlport.formats.xgboost import XGBoostFormat
from tests.integration.test_formats_tabular import describe

pytestmark = pytest.mark.slow

SUBJECTS = ["the cat", "a small dog", "my neighbour", "the old sailor", "every student", "our teacher",
            "the quick fox", "a tired runner", "the mayor", "this robot"]
VERBS = ["reads", "paints", "watches", "carries", "finds", "builds", "repairs", "sells", "forgets", "follows"]
OBJECTS = ["a red book", "the long river", "three green apples", "an empty box", "the broken clock",
           "a quiet garden", "the morning train", "two wooden chairs", "a bright lamp", "the winter coat"]
ENDINGS = ["", "before dinner", "in the rain", "near the station", "without a word", "every single day"]

TEXTS = [
    "The cat reads a red book.",
    "a tired runner finds the broken clock near the station every single day, before dinner, in the rain",
    "Naïve café sailors repair lamps!",
    "ok",
]


def _sentences(n: int = 400) -> list[str]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        words = [SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))],
                 OBJECTS[rng.integers(len(OBJECTS))], ENDINGS[rng.integers(len(ENDINGS))]]
        out.append(" ".join(w for w in words if w).capitalize() + ".")
    return out


def _wordpiece(path: Path) -> Path:
    """BERT-like: WordPiece, lower-casing, [CLS] ... [SEP] with type ids for pairs, truncation at 16."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_sentences(), trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.enable_truncation(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def _bpe(path: Path) -> Path:
    """GPT-like: byte-level BPE, <pad> not at id 0, no post-processor (no type ids)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_sentences(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def _reference(path: Path, texts: list[str], max_length: int, pad_token: str) -> dict[str, np.ndarray]:
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=tok.token_to_id(pad_token), pad_token=pad_token)
    encs = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in encs]), "attention_mask": np.array([e.attention_mask for e in encs]),
            "token_type_ids": np.array([e.type_ids for e in encs])}


def _check_tokenizer(c: Any, name: str, texts: list[str], want: dict[str, np.ndarray], single: dict[str, Any]) -> None:
    outputs = list(want)
    # eval: a batch, padded to its longest row
    r = c.post(f"/models/{name}/eval", json={"text": texts})
    assert r.status_code == 200, r.text
    assert set(r.json()) == set(outputs)
    for out in outputs:
        assert r.json()[out] == want[out].tolist(), out
    # eval: one instance, without the batch axis (and without padding)
    r = c.post(f"/models/{name}/eval", json={"text": texts[0]})
    assert r.status_code == 200, r.text
    for out in outputs:
        assert r.json()[out] == single[out], out
    # OIP v2, BYTES as JSON strings
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    r = c.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 200, r.text
    got = {o["name"]: o for o in r.json()["outputs"]}
    assert set(got) == set(outputs)
    for out in outputs:
        assert got[out]["datatype"] == "INT64" and got[out]["shape"] == list(want[out].shape)
        assert got[out]["data"] == want[out].ravel().tolist()
    # TF Serving row format
    r = c.post(f"/v1/models/{name}:predict", json={"instances": texts})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    for out in outputs:
        assert [row[out] for row in rows] == want[out].tolist()


def test_tokenizers_match_the_library(serve, tmp_path: Path) -> None:
    root = tmp_path / "models"
    bert = _wordpiece(root / "bert" / "tokenizer.json")
    bpe = _bpe(root / "gpt" / "1" / "tokenizer.json")
    (root / "gpt" / "model.yaml").write_text("options: {max_length: 8, pad_token: <pad>}\n")

    server = serve(root)
    with server.client() as c:
        assert c.get("/v2/models/bert").json()["platform"] == "tokenizers"
        matrix = {"type": "int64", "shape": [-1, -1]}
        assert describe(c, "bert") == {
            "inputs": [{"name": "text", "type": "string", "shape": [-1]}],
            "outputs": [{"name": n, **matrix} for n in ("input_ids", "attention_mask", "token_type_ids")]}
        assert describe(c, "gpt")["outputs"] == [{"name": n, **matrix} for n in ("input_ids", "attention_mask")]

        # bert: truncation from the file (16), [PAD] found in the vocabulary
        want = _reference(bert, TEXTS, 16, "[PAD]")
        assert want["input_ids"].shape == (4, 16) and want["attention_mask"][-1].sum() < 16  # truncated, padded
        assert want["input_ids"][0, 0] == Tokenizer.from_file(str(bert)).token_to_id("[CLS]")
        one = Tokenizer.from_file(str(bert)).encode(TEXTS[0])
        single = {"input_ids": one.ids, "attention_mask": one.attention_mask, "token_type_ids": one.type_ids}
        _check_tokenizer(c, "bert", TEXTS, want, single)

        # gpt: options from model.yaml (max_length 8, <pad> is id 2)
        want = _reference(bpe, TEXTS, 8, "<pad>")
        del want["token_type_ids"]
        assert want["input_ids"].shape == (4, 8) and (want["input_ids"][-1] == 2).any()
        ref = Tokenizer.from_file(str(bpe))
        ref.enable_truncation(8)
        one = ref.encode(TEXTS[0])
        _check_tokenizer(c, "gpt", TEXTS, want, {"input_ids": one.ids, "attention_mask": one.attention_mask})

        # text that is not UTF-8 is refused with 400, in every protocol that can carry raw bytes
        bad = base64.b64encode(b"caf\xe9 \xff").decode()
        r = c.post("/v1/models/bert:predict", json={"instances": [{"b64": bad}]})
        assert r.status_code == 400 and r.json()["error"] == "input 'text' holds bytes that are not UTF-8 text"
        r = c.post("/models/bert/eval", json={"text": []})
        assert r.status_code == 200 and r.json()["input_ids"] == []
    client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    inp = triton_http.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([b"fine", b"\xc3\x28"], dtype=object), binary_data=True)
    with pytest.raises(triton_http.InferenceServerException) as err:
        client.infer("bert", [inp])
    assert err.value.status() == "400" and "not UTF-8" in str(err.value)
    inp = triton_http.InferInput("text", [len(TEXTS)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object), binary_data=True)
    got = client.infer("bert", [inp], outputs=[triton_http.InferRequestedOutput("input_ids", binary_data=True)])
    np.testing.assert_array_equal(got.as_numpy("input_ids"), _reference(bert, TEXTS, 16, "[PAD]")["input_ids"])
    client.close()


def test_xgboost_detection_leaves_tokenizer_json_alone(tmp_path: Path) -> None:
    path = _wordpiece(tmp_path / "tokenizer.json")
    assert not XGBoostFormat().detect(path)
    assert TokenizerFormat().detect(path)
    found = FormatRegistry.discover().detect(path)
    assert found is not None and found.name == "tokenizer"
    # a JSON file named otherwise is not a tokenizer
    other = tmp_path / "vocab.json"
    other.write_text(path.read_text())
    assert not TokenizerFormat().detect(other)
    done = subprocess.run([sys.executable, "-m", "mlport.cli.main", "describe", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"format": "tokenizer"' in done.stdout


def test_tokenizer_options_are_checked(tmp_path: Path) -> None:
    path = _wordpiece(tmp_path / "tokenizer.json")
    for options, message in (
        ({"max_length": 0}, "the option max_length must be an integer from 1 to 65536, got 0"),
        ({"max_length": "long"}, "the option max_length must be an integer"),
        ({"pad_token": "<nope>"}, "the option pad_token names '<nope>', which is not in the vocabulary"),
        ({"token_type_ids": "yes"}, "the option token_type_ids must be true or false"),
    ):
        with pytest.raises(InvalidInput, match=message):
            TokenizerFormat().load(path, LoadOptions(options=options))
    ev = TokenizerFormat().load(path, LoadOptions(options={"token_type_ids": False, "add_special_tokens": False,
                                                           "max_length": 4, "pad_id": 4}))
    assert ev.signature.output_names == ["input_ids", "attention_mask"]
    out = ev.predict({"text": np.array(["the cat reads a red book", "ok"], dtype=object)})
    ref = Tokenizer.from_file(str(path))
    ids = ref.encode("the cat reads a red book", add_special_tokens=False).ids[:4]
    assert out["input_ids"][0].tolist() == ids
    assert out["input_ids"].shape == (2, 4) and out["input_ids"][1, -1] == 4 and out["attention_mask"][1, -1] == 0
    broken = tmp_path / "x" / "tokenizer.json"
    broken.parent.mkdir()
    broken.write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    with pytest.raises(Exception, match=r"tokenizers could not load tokenizer\.json"):
        TokenizerFormat().load(broken, LoadOptions())


def test_missing_tokenizers_gives_the_install_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _wordpiece(tmp_path / "tokenizer.json")
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    assert not TokenizerFormat.available()
    with pytest.raises(MissingExtra) as err:
        TokenizerFormat().load(path, LoadOptions())
    assert str(err.value) == "the tokenizer format needs tokenizers: pip install 'mlport[tokenizer]'"


def test_missing_tokenizers_through_the_cli(tmp_path: Path) -> None:
    path = _wordpiece(tmp_path / "tokenizer.json")
    hide = ("import sys; sys.modules['tokenizers'] = None; from mlport.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", hide, "describe", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "the tokenizer format needs tokenizers: pip install 'mlport[tokenizer]'" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
