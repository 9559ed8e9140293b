"""The model registry against real stores: a local folder and a real S3-protocol server process."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlport.core.sqlitedb import Database
from mlport.errors import Conflict, InvalidInput, MlportError, ModelNotFound
from mlport.registry import ArtifactStore, KeyNotFound, LocalStore, ModelRegistry, S3Store, open_store
from mlport.registry.registry import MARKER_NAME
from mlport.registry.store import StoreUnavailable
from tests.builders import iris_onnx
from tests.conftest import Server
from tests.s3server import S3Server, make_bucket, s3_server  # noqa: F401 - the session fixture

IRIS_INPUTS = [("input", [-1, 4])]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _folder_sha(folder: Path) -> str:
    lines = sorted(f"{p.relative_to(folder).as_posix()}\0{_sha(p.read_bytes())}\n"
                   for p in folder.rglob("*") if p.is_file())
    return _sha("".join(lines).encode())


def _io(sig: dict[str, list[dict[str, object]]] | None, side: str) -> list[tuple[object, object]]:
    assert sig is not None
    return [(t["name"], t["shape"]) for t in sig[side]]


@pytest.fixture(scope="module")
def iris_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iris_onnx(tmp_path_factory.mktemp("models") / "iris.onnx")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    return S3Store(make_bucket(server), "hub/artifacts", **server.options())


@pytest.fixture
def registry(store: ArtifactStore, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(Database(tmp_path / "hub.db"), store, describe_timeout_s=120)


def _iris_folder(root: Path, iris_file: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copyfile(iris_file, root / "model.onnx")
    (root / "docs").mkdir()
    (root / "docs" / "README.txt").write_text("iris classifier\n")
    return root


# ------------------------------------------------------------------------------------------------ S3Store


@pytest.fixture
def s3(request: pytest.FixtureRequest) -> S3Store:
    server: S3Server = request.getfixturevalue("s3_server")
    return S3Store(make_bucket(server), "pre/fix", **server.options())


def test_s3_store_roundtrip(s3: S3Store, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(17 * 1024 * 1024 + 3))  # above the multipart threshold
    s3.put_file("models/a/1/big.bin", big)
    s3.put_bytes("models/a/1/small.txt", b"hello")
    assert s3.exists("models/a/1/big.bin") and s3.exists("models/a/1/small.txt")
    assert not s3.exists("models/a/1/nope") and not s3.exists("models/a")
    assert s3.size("models/a/1/big.bin") == big.stat().st_size
    out = tmp_path / "out" / "deep" / "big.bin"
    s3.get_file("models/a/1/big.bin", out)
    assert out.read_bytes() == big.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["big.bin"]  # no temporary files left
    with s3.open_read("models/a/1/small.txt") as f:
        assert f.read() == b"hello"
    with s3.open_read("models/a/1/big.bin") as f:
        assert _sha(f.read()) == _sha(big.read_bytes())
    assert s3.list("models/a") == ["models/a/1/big.bin", "models/a/1/small.txt"]
    assert s3.list("") == ["models/a/1/big.bin", "models/a/1/small.txt"]
    assert s3.list("models/a/1/big.bin") == []
    for missing in (lambda: s3.get_file("nope", tmp_path / "x"), lambda: s3.open_read("nope"),
                    lambda: s3.size("nope")):
        with pytest.raises(KeyNotFound):
            missing()
    assert not (tmp_path / "x").exists()
    for bad in ("../x", "/abs", "a//b", "a\\b"):
        with pytest.raises(InvalidInput):
            s3.put_bytes(bad, b"x")


def test_s3_prefix_keeps_stores_apart(s3: S3Store, request: pytest.FixtureRequest) -> None:
    server: S3Server = request.getfixturevalue("s3_server")
    other = S3Store(s3.bucket, "pre/fixed", **server.options())
    root = open_store(f"s3://{s3.bucket}", **server.options())
    s3.put_bytes("k/1", b"mine")
    other.put_bytes("k/1", b"theirs")
    assert s3.list("") == ["k/1"]
    assert other.list("") == ["k/1"]
    assert root.list("") == ["pre/fix/k/1", "pre/fixed/k/1"]
    assert s3.delete_prefix("k") == 1
    with other.open_read("k/1") as f:
        assert f.read() == b"theirs"


def test_s3_list_pages_and_deletes_in_batches(s3: S3Store) -> None:
    s3.page_size = 7
    s3.delete_batch = 5
    keys = sorted(f"m/x/{i:03d}" for i in range(23))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_bytes(k, k.encode()), keys))
    s3.put_bytes("m/xy/keep", b"1")
    s3.put_bytes("m/x", b"the prefix itself as a key")
    assert s3.list("m/x") == keys
    assert s3.delete_prefix("m/x") == 24
    assert s3.list("m") == ["m/xy/keep"]
    assert s3.delete_prefix("m/x") == 0
    with pytest.raises(InvalidInput):
        s3.delete_prefix("")


@pytest.mark.slow
def test_s3_more_than_one_page_of_real_size(s3: S3Store) -> None:
    keys = sorted(f"many/{i:05d}" for i in range(1205))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_bytes(k, b"x"), keys))
    assert s3.list("many") == keys
    assert s3.delete_prefix("many") == 1205
    assert s3.list("") == []


def test_s3_missing_bucket_is_unavailable(request: pytest.FixtureRequest) -> None:
    server: S3Server = request.getfixturevalue("s3_server")
    store = open_store("s3://no-such-bucket/p", **server.options())
    with pytest.raises(StoreUnavailable, match="no-such-bucket"):
        store.put_bytes("a", b"x")
    with pytest.raises(StoreUnavailable, match="no-such-bucket"):
        store.put_file("a", Path(__file__))
    with pytest.raises(StoreUnavailable):
        store.list("")


def test_s3_unreachable_endpoint_is_unavailable() -> None:
    from tests.conftest import free_port

    store = S3Store("b", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1", access_key="k",
                    secret_key="s")
    with pytest.raises(StoreUnavailable):
        store.exists("a")


# ---------------------------------------------------------------------------------------- the registry


def test_models_names_and_duplicates(registry: ModelRegistry) -> None:
    registry.create_model("iris", description="flowers", labels={"team": "ml"}, created_by="alice")
    with pytest.raises(Conflict):
        registry.create_model("iris", created_by="bob")
    for bad in ["Iris", "../iris", "iris/1", "", "-iris", "i" * 64]:
        with pytest.raises(InvalidInput):
            registry.create_model(bad, created_by="bob")
    assert [(m.name, m.labels, m.latest_version) for m in registry.list_models()] == [("iris", {"team": "ml"}, None)]
    with pytest.raises(ModelNotFound):
        registry.get_model("other")


def test_versions_file_folder_archive(registry: ModelRegistry, store: ArtifactStore, iris_file: Path,
                                      tmp_path: Path) -> None:
    registry.create_model("iris", created_by="alice")
    data = iris_file.read_bytes()

    v1 = registry.add_version("iris", iris_file, created_by="alice", description="first", tags=["prod", "prod"])
    assert (v1.model, v1.version, v1.format, v1.kind, v1.filename) == ("iris", 1, "onnx", "file", "iris.onnx")
    assert (v1.size, v1.sha256) == (len(data), _sha(data))
    assert (v1.created_by, v1.description, v1.tags, v1.source) == ("alice", "first", ["prod"], str(iris_file))
    assert v1.store_key == "models/iris/1/iris.onnx"
    assert _io(v1.signature, "inputs") == IRIS_INPUTS
    assert sorted(n for n, _ in _io(v1.signature, "outputs")) == ["label", "probabilities"]
    assert store.list("models/iris/1") == ["models/iris/1/iris.onnx"]

    folder = _iris_folder(tmp_path / "src" / "iris-folder", iris_file)
    v2 = registry.add_version("iris", folder, created_by="bob")
    assert (v2.version, v2.format, v2.kind, v2.filename) == (2, "onnx", "folder", "iris-folder")
    assert v2.sha256 == _folder_sha(folder)
    assert v2.size == len(data) + len("iris classifier\n")
    assert v2.signature == v1.signature
    assert v2.store_key == "models/iris/2/iris-folder"
    assert store.list("models/iris/2") == ["models/iris/2/iris-folder/docs/README.txt",
                                           "models/iris/2/iris-folder/model.onnx"]

    packed = tmp_path / "src" / "upload.bin"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(folder, arcname="packed")
    v3 = registry.add_version("iris", packed, filename="iris.tar.gz", created_by="bob")
    assert (v3.version, v3.kind, v3.filename, v3.format) == (3, "folder", "packed", "onnx")
    assert v3.sha256 == v2.sha256  # same files, same digest
    assert v3.signature == v1.signature

    zipped = tmp_path / "src" / "flat.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.write(iris_file, "model.onnx")
        zf.writestr("notes.txt", "two files at the top")
    v4 = registry.add_version("iris", zipped, created_by="bob")
    assert (v4.version, v4.kind, v4.filename, v4.format) == (4, "folder", "flat", "onnx")

    raw = tmp_path / "src" / "tmp-upload-1234"
    raw.write_bytes(data)
    v5 = registry.add_version("iris", raw, filename="iris.onnx", created_by="carol")
    assert (v5.version, v5.kind, v5.filename, v5.sha256) == (5, "file", "iris.onnx", v1.sha256)

    assert registry.list_versions("iris") == [v1, v2, v3, v4, v5]
    assert registry.get_version("iris", 2) == v2
    assert registry.get_model("iris").latest_version == 5
    with pytest.raises(ModelNotFound):
        registry.get_version("iris", 6)

    dest = tmp_path / "cache"
    p1 = registry.fetch("iris", 1, dest)
    assert p1 == dest / "iris" / "1" / "iris.onnx"
    assert p1.read_bytes() == data
    assert (dest / "iris" / "1" / MARKER_NAME).read_text().strip() == v1.sha256
    p2 = registry.fetch("iris", 2, dest)
    assert p2 == dest / "iris" / "2" / "iris-folder"
    assert _folder_sha(p2) == v2.sha256
    p3 = registry.fetch("iris", 3, dest)
    assert (p3 / "model.onnx").read_bytes() == data
    assert sorted(p.name for p in (dest / "iris").iterdir()) == ["1", "2", "3"]  # no temporary folders

    stream, size, name = registry.open_artifact("iris", 1)
    with stream:
        assert (stream.read(), size, name) == (data, len(data), "iris.onnx")
    stream, size, name = registry.open_artifact("iris", 2)
    with stream, tarfile.open(fileobj=stream) as tar:
        assert name == "iris-folder.tar"
        assert sorted(tar.getnames()) == ["iris-folder/docs/README.txt", "iris-folder/model.onnx"]
        member = tar.extractfile("iris-folder/model.onnx")
        assert member is not None and member.read() == data


def test_fetch_reuses_verified_copies_and_detects_corruption(registry: ModelRegistry, store: ArtifactStore,
                                                             iris_file: Path, tmp_path: Path) -> None:
    registry.create_model("iris", created_by="alice")
    v1 = registry.add_version("iris", iris_file, created_by="alice")
    v2 = registry.add_version("iris", _iris_folder(tmp_path / "f", iris_file), created_by="alice")
    dest = tmp_path / "cache"
    path = registry.fetch("iris", 1, dest)
    marker = dest / "iris" / "1" / MARKER_NAME

    # a copy without its marker, or with a marker of other content, is downloaded again
    path.write_bytes(b"damaged")
    marker.unlink()
    assert registry.fetch("iris", 1, dest).read_bytes() == iris_file.read_bytes()
    path.write_bytes(b"damaged")
    marker.write_text("0" * 64)
    assert registry.fetch("iris", 1, dest).read_bytes() == iris_file.read_bytes()
    assert marker.read_text().strip() == v1.sha256

    # the store's copy is changed behind the registry's back: the download is refused and removed
    store.put_bytes(v1.store_key, b"tampered")
    marker.unlink()
    with pytest.raises(MlportError, match="corrupt"):
        registry.fetch("iris", 1, dest)
    assert not (dest / "iris" / "1").exists()
    assert os.listdir(dest / "iris") == []

    store.put_bytes(f"{v2.store_key}/extra.txt", b"slipped in")
    with pytest.raises(MlportError, match="corrupt"):
        registry.fetch("iris", 2, dest)
    assert os.listdir(dest / "iris") == []

    store.delete_prefix(v2.store_key)
    with pytest.raises(KeyNotFound):
        registry.fetch("iris", 2, dest)
    assert os.listdir(dest / "iris") == []


def test_concurrent_fetches_agree(registry: ModelRegistry, iris_file: Path, tmp_path: Path) -> None:
    registry.create_model("iris", created_by="alice")
    v = registry.add_version("iris", _iris_folder(tmp_path / "f", iris_file), created_by="alice")
    # two registries over the same database and store: their in-process locks do not see each other
    other = ModelRegistry(registry.db, registry.store)
    dest = tmp_path / "cache"
    barrier = threading.Barrier(6)

    def fetch(reg: ModelRegistry) -> Path:
        barrier.wait(timeout=30)
        return reg.fetch("iris", v.version, dest)

    with ThreadPoolExecutor(6) as pool:
        paths = list(pool.map(fetch, [registry, other] * 3))
    assert len(set(paths)) == 1
    assert _folder_sha(paths[0]) == v.sha256
    assert sorted(os.listdir(dest / "iris")) == ["1"]
    assert sorted(os.listdir(dest / "iris" / "1")) == sorted([MARKER_NAME, "f"])


def test_register_path(registry: ModelRegistry, store: ArtifactStore, iris_file: Path, tmp_path: Path) -> None:
    registry.create_model("iris", created_by="alice")
    store.put_file("incoming/iris.onnx", iris_file)
    store.put_file("incoming/bundle/model.onnx", iris_file)
    store.put_bytes("incoming/bundle/labels.txt", b"setosa\nversicolor\nvirginica\n")

    v1 = registry.register_path("iris", "incoming/iris.onnx", created_by="bob", tags=["external"])
    assert (v1.version, v1.kind, v1.filename, v1.format, v1.store_key) == \
        (1, "file", "iris.onnx", "onnx", "incoming/iris.onnx")
    assert v1.sha256 == _sha(iris_file.read_bytes())
    assert _io(v1.signature, "inputs") == IRIS_INPUTS
    assert v1.source.endswith("/incoming/iris.onnx") and v1.source.startswith(store.url)

    v2 = registry.register_path("iris", "incoming/bundle/", created_by="bob")
    assert (v2.version, v2.kind, v2.filename, v2.store_key) == (2, "folder", "bundle", "incoming/bundle")
    labels = b"setosa\nversicolor\nvirginica\n"
    expected = sorted([f"labels.txt\0{_sha(labels)}\n", f"model.onnx\0{_sha(iris_file.read_bytes())}\n"])
    assert v2.sha256 == _sha("".join(expected).encode())
    assert store.list("models") == []  # nothing copied

    with pytest.raises(KeyNotFound):
        registry.register_path("iris", "incoming/nothing", created_by="bob")
    for bad in ("../etc/passwd", "/abs", "models/iris/1/x.onnx"):
        with pytest.raises(InvalidInput):
            registry.register_path("iris", bad, created_by="bob")
    store.put_bytes("incoming/junk.bin", b"junk")
    with pytest.raises(InvalidInput, match=r"junk\.bin"):
        registry.register_path("iris", "incoming/junk.bin", created_by="bob")
    assert [v.version for v in registry.list_versions("iris")] == [1, 2]

    cache = tmp_path / "cache"
    assert registry.fetch("iris", 1, cache).read_bytes() == iris_file.read_bytes()
    assert _folder_sha(registry.fetch("iris", 2, cache)) == v2.sha256
    # deleting the model keeps artifacts the registry did not upload
    registry.delete_model("iris", in_use=lambda m: False)
    assert store.list("incoming") == ["incoming/bundle/labels.txt", "incoming/bundle/model.onnx",
                                      "incoming/iris.onnx", "incoming/junk.bin"]


def test_delete_model(registry: ModelRegistry, store: ArtifactStore, iris_file: Path, tmp_path: Path) -> None:
    registry.create_model("iris", created_by="alice")
    registry.create_model("other", created_by="alice")
    registry.add_version("iris", iris_file, created_by="alice")
    registry.add_version("iris", _iris_folder(tmp_path / "f", iris_file), created_by="alice")
    registry.add_version("other", iris_file, created_by="alice")
    asked: list[str] = []

    def deployed(name: str) -> bool:
        asked.append(name)
        return True

    with pytest.raises(Conflict, match="'iris' is deployed"):
        registry.delete_model("iris", in_use=deployed)
    assert asked == ["iris"]
    assert len(store.list("models/iris")) == 3
    assert [v.version for v in registry.list_versions("iris")] == [1, 2]

    registry.delete_model("iris", in_use=lambda m: False)
    assert store.list("models/iris") == []
    assert store.list("models") == ["models/other/1/iris.onnx"]
    with pytest.raises(ModelNotFound):
        registry.get_model("iris")
    with pytest.raises(ModelNotFound):
        registry.get_version("iris", 1)
    assert [m.name for m in registry.list_models()] == ["other"]


def test_fetched_folder_serves(serve: Callable[..., Server], iris_file: Path, tmp_path: Path) -> None:
    """What fetch returns is what `mlport serve` takes, under the name the hub gives it."""
    registry = ModelRegistry(Database(tmp_path / "hub.db"), LocalStore(tmp_path / "store"))
    registry.create_model("iris", created_by="alice")
    packed = tmp_path / "iris.tgz"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(_iris_folder(tmp_path / "f", iris_file), arcname="bundle")
    v = registry.add_version("iris", packed, created_by="alice")
    path = registry.fetch("iris", v.version, tmp_path / "cache")
    server = serve(path, "--grpc-port", "0", "--name", "deployed-iris")
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
    with server.client() as c:
        r = c.post("/v2/models/deployed-iris/infer", json=body)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["label"]["data"] == [0]
