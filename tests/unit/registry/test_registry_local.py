"""ModelRegistry rules that need no S3: names, limits, trust, atomic versions and clean failures."""

from __future__ import annotations

import io
import sqlite3
import tarfile
from pathlib import Path

import pytest

from mlport.core.sqlitedb import Database
from mlport.errors import Conflict, InvalidInput, ModelNotFound, PayloadTooLarge
from mlport.registry import LocalStore, ModelRegistry
from mlport.registry.store import StoreUnavailable

PY_MODEL = '''
from pathlib import Path
Path({marker!r}).write_text("imported")

class Model:
    signature = {{
        "inputs": [{{"name": "x", "datatype": "FP32", "shape": [-1, 2]}}],
        "outputs": [{{"name": "y", "datatype": "FP32", "shape": [-1, 2]}}],
    }}

    def predict(self, inputs):
        return {{"y": inputs["x"] * 2}}
'''


class FailingStore(LocalStore):
    """A real LocalStore whose disk "fills up" after some writes."""

    def __init__(self, root: Path, fail_after: int) -> None:
        super().__init__(root)
        self.fail_after = fail_after
        self.puts = 0

    def put_file(self, key: str, local: Path) -> None:
        self.puts += 1
        if self.puts > self.fail_after:
            raise StoreUnavailable("artifact store: no space left on device")
        super().put_file(key, local)


def _registry(tmp_path: Path, store: LocalStore | None = None, **kw: int) -> ModelRegistry:
    return ModelRegistry(Database(tmp_path / "hub.db"), store or LocalStore(tmp_path / "store"), **kw)


def _python_folder(root: Path, marker: Path) -> Path:
    root.mkdir(parents=True)
    (root / "model.py").write_text(PY_MODEL.format(marker=str(marker)))
    return root


def test_models_crud_and_names(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    info = reg.create_model("iris", description="flowers", labels={"team": "a"}, created_by="alice")
    assert (info.name, info.description, info.labels, info.created_by, info.latest_version) == \
        ("iris", "flowers", {"team": "a"}, "alice", None)
    with pytest.raises(Conflict, match="iris"):
        reg.create_model("iris", created_by="bob")
    for bad in ["", "Iris", "-x", "a/b", "../x", "a" * 64, "x..y", "spa ce"]:
        with pytest.raises(InvalidInput):
            reg.create_model(bad, created_by="alice")
    with pytest.raises(InvalidInput):
        reg.create_model("ok", labels={"bad key!": "v"}, created_by="alice")
    with pytest.raises(InvalidInput):
        reg.create_model("ok", description="x" * 5000, created_by="alice")
    assert [m.name for m in reg.list_models()] == ["iris"]
    assert reg.get_model("iris") == info
    with pytest.raises(ModelNotFound):
        reg.get_model("nope")
    with pytest.raises(ModelNotFound):
        reg.get_version("iris", 1)
    with pytest.raises(ModelNotFound):
        reg.list_versions("nope")


def test_unknown_format_names_the_file(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.create_model("m", created_by="a")
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(InvalidInput, match=r"weights\.bin is not a model of a known format"):
        reg.add_version("m", junk, created_by="a")
    with pytest.raises(InvalidInput, match=r"upload-name\.dat"):
        reg.add_version("m", junk, filename="upload-name.dat", created_by="a")
    assert reg.list_versions("m") == []
    assert reg.store.list("") == []


@pytest.mark.parametrize("filename", ["../x.onnx", "a/b.onnx", ".hidden.onnx", "x" * 300 + ".onnx", "a\\b.onnx"])
def test_bad_filenames(tmp_path: Path, filename: str) -> None:
    reg = _registry(tmp_path)
    reg.create_model("m", created_by="a")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"x")
    with pytest.raises(InvalidInput):
        reg.add_version("m", src, filename=filename, created_by="a")


def test_bad_tags_and_missing_source(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.create_model("m", created_by="a")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"x")
    with pytest.raises(InvalidInput, match="tag"):
        reg.add_version("m", src, created_by="a", tags=["no spaces allowed"])
    with pytest.raises(InvalidInput, match="does not exist"):
        reg.add_version("m", tmp_path / "gone.onnx", created_by="a")
    with pytest.raises(ModelNotFound):
        reg.add_version("other", src, created_by="a")


def test_upload_limits(tmp_path: Path) -> None:
    reg = _registry(tmp_path, max_upload_bytes=1000, max_files=3)
    reg.create_model("m", created_by="a")
    big = tmp_path / "big.onnx"
    big.write_bytes(b"0" * 1001)
    with pytest.raises(PayloadTooLarge, match="1000 bytes"):
        reg.add_version("m", big, created_by="a")
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.txt").write_text("x")
    with pytest.raises(PayloadTooLarge, match="more than 3 files"):
        reg.add_version("m", folder, created_by="a")
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(4):
            info = tarfile.TarInfo(f"many/f{i}.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(PayloadTooLarge, match="more than 3 files"):
        reg.add_version("m", archive, created_by="a")
    assert reg.store.list("") == []
    assert reg.list_versions("m") == []


def test_folder_with_symlink_is_refused(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.create_model("m", created_by="a")
    folder = _python_folder(tmp_path / "pm", tmp_path / "marker")
    (folder / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match=r"symbolic link|link or special file"):
        reg.add_version("m", folder, created_by="a")


def test_code_formats_are_not_described_unless_trusted(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.create_model("py", created_by="a")
    marker = tmp_path / "imported"
    folder = _python_folder(tmp_path / "pymodel", marker)
    v1 = reg.add_version("py", folder, created_by="a")
    assert (v1.version, v1.format, v1.signature, v1.kind, v1.filename) == (1, "python", None, "folder", "pymodel")
    assert not marker.exists(), "the hub ran the model's code for an untrusted upload"
    v2 = reg.add_version("py", folder, created_by="a", trusted=True)
    assert marker.exists()  # describe ran, in a child process
    assert v2.signature is not None
    assert [t["name"] for t in v2.signature["inputs"]] == ["x"]
    assert [t["name"] for t in v2.signature["outputs"]] == ["y"]
    assert v1.sha256 == v2.sha256


def test_a_model_cannot_trust_itself(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.create_model("py", created_by="a")
    marker = tmp_path / "imported"
    folder = _python_folder(tmp_path / "pymodel", marker)
    (folder / "model.yaml").write_text("trusted: true\n")
    with pytest.raises(InvalidInput, match="trusted: true"):
        reg.add_version("py", folder, created_by="a")
    assert not marker.exists()
    assert reg.add_version("py", folder, created_by="a", trusted=True).version == 1


def test_failed_upload_leaves_nothing_and_the_number_is_reused(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "store", fail_after=1)
    reg = _registry(tmp_path, store)
    reg.create_model("py", created_by="a")
    folder = _python_folder(tmp_path / "pymodel", tmp_path / "marker")
    (folder / "weights.txt").write_text("1 2 3")
    (folder / "vocab.txt").write_text("a b c")
    with pytest.raises(StoreUnavailable, match="no space"):
        reg.add_version("py", folder, created_by="a")
    assert store.puts == 2
    assert store.list("") == []
    assert reg.list_versions("py") == []
    assert reg.get_model("py").latest_version is None
    store.fail_after = 100
    v = reg.add_version("py", folder, created_by="a")
    assert v.version == 1
    assert store.list("") == [f"models/py/1/pymodel/{n}" for n in ("model.py", "vocab.txt", "weights.txt")]


def test_versions_are_immutable_in_the_database(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.create_model("py", created_by="a")
    reg.add_version("py", _python_folder(tmp_path / "pm", tmp_path / "marker"), created_by="a")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        reg.db.execute("UPDATE registry_versions SET sha256 = 'x' WHERE model = 'py'")
    assert reg.get_version("py", 1).sha256 != "x"


def test_numbers_are_unique_under_concurrent_adds(tmp_path: Path) -> None:
    import threading

    reg = _registry(tmp_path)
    reg.create_model("py", created_by="a")
    folder = _python_folder(tmp_path / "pm", tmp_path / "marker")
    got: list[int] = []
    errors: list[BaseException] = []

    def add() -> None:
        try:
            got.append(reg.add_version("py", folder, created_by="a").version)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert [v.version for v in reg.list_versions("py")] == [1, 2, 3, 4, 5, 6]
    assert reg.get_model("py").latest_version == 6


def test_delete_model(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    reg.create_model("py", created_by="a")
    reg.add_version("py", _python_folder(tmp_path / "pm", tmp_path / "marker"), created_by="a")
    with pytest.raises(Conflict, match="deployed"):
        reg.delete_model("py", in_use=lambda name: name == "py")
    assert reg.store.list("models/py")
    reg.delete_model("py", in_use=lambda name: False)
    assert reg.store.list("") == []
    with pytest.raises(ModelNotFound):
        reg.get_model("py")
    with pytest.raises(ModelNotFound):
        reg.delete_model("py", in_use=lambda name: False)
    # the name is free again, and numbering starts over
    reg.create_model("py", created_by="a")
    assert reg.add_version("py", tmp_path / "pm", created_by="a").version == 1


def test_describe_that_fails_or_hangs_gives_no_signature(tmp_path: Path) -> None:
    reg = _registry(tmp_path, describe_timeout_s=2)
    reg.create_model("py", created_by="a")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.py").write_text("raise RuntimeError('cannot load')\n")
    v1 = reg.add_version("py", broken, created_by="a", trusted=True)
    assert (v1.version, v1.format, v1.signature) == (1, "python", None)
    hangs = tmp_path / "hangs"
    hangs.mkdir()
    (hangs / "model.py").write_text("import time\ntime.sleep(600)\n")
    v2 = reg.add_version("py", hangs, created_by="a", trusted=True)
    assert (v2.version, v2.signature) == (2, None)
    assert reg.store.list("models/py/2") == ["models/py/2/hangs/model.py"]
