"""LocalStore: whole-file writes, listing, deletion, and keys that never leave the root."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mlport.errors import InvalidInput
from mlport.registry.store import ArtifactStore, KeyNotFound, LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_is_an_artifact_store(store: LocalStore) -> None:
    assert isinstance(store, ArtifactStore)
    assert store.url == (store.root).as_uri()


def test_put_get_roundtrip(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    store.put_file("models/a/1/model.onnx", src)
    store.put_bytes("models/a/1/extra.txt", b"hello")
    assert store.exists("models/a/1/model.onnx")
    assert not store.exists("models/a/1/missing")
    assert store.size("models/a/1/model.onnx") == src.stat().st_size
    out = tmp_path / "deep" / "down" / "copy.bin"
    store.get_file("models/a/1/model.onnx", out)
    assert out.read_bytes() == src.read_bytes()
    with store.open_read("models/a/1/extra.txt") as f:
        assert f.read() == b"hello"
    # overwriting replaces the whole content
    store.put_bytes("models/a/1/extra.txt", b"bye")
    with store.open_read("models/a/1/extra.txt") as f:
        assert f.read() == b"bye"


def test_no_temporary_files_remain(store: LocalStore, tmp_path: Path) -> None:
    store.put_bytes("a/b", b"1")
    store.get_file("a/b", tmp_path / "out" / "b")
    leftovers = [p.name for p in Path(store.root).rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b"]


def test_missing_keys(store: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(KeyNotFound):
        store.get_file("nope", tmp_path / "x")
    with pytest.raises(KeyNotFound):
        store.open_read("nope")
    with pytest.raises(KeyNotFound):
        store.size("nope")
    assert not (tmp_path / "x").exists()


def test_list_is_sorted_and_folder_scoped(store: LocalStore) -> None:
    for key in ["m/b/2", "m/a/1", "m/a/sub/3", "m/ab/4", "other/5"]:
        store.put_bytes(key, b"x")
    assert store.list("m/a") == ["m/a/1", "m/a/sub/3"]
    assert store.list("m/a/") == ["m/a/1", "m/a/sub/3"]
    assert store.list("m") == ["m/a/1", "m/a/sub/3", "m/ab/4", "m/b/2"]
    assert store.list("") == ["m/a/1", "m/a/sub/3", "m/ab/4", "m/b/2", "other/5"]
    assert store.list("nothing/here") == []
    assert store.list("m/a/1") == []  # a file is not a folder


def test_delete_prefix(store: LocalStore) -> None:
    for key in ["m/a/1", "m/a/sub/3", "m/ab/4", "m/file"]:
        store.put_bytes(key, b"x")
    assert store.delete_prefix("m/a") == 2
    assert store.list("m") == ["m/ab/4", "m/file"]
    assert store.delete_prefix("m/file") == 1
    assert store.delete_prefix("m/none") == 0
    assert store.delete_prefix("m/ab/") == 1
    assert store.list("") == []
    assert not (Path(store.root) / "m").exists()  # empty folders pruned
    with pytest.raises(InvalidInput):
        store.delete_prefix("")


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/etc/passwd", "a\\b"])
def test_bad_keys_never_touch_the_disk(store: LocalStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidInput):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidInput):
        store.get_file(key, tmp_path / "out")
    with pytest.raises(InvalidInput):
        store.delete_prefix(key)
    assert not (tmp_path / "escape").exists()


def test_symlinks_leading_out_are_refused(store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, Path(store.root) / "link")
    os.symlink(outside / "secret.txt", Path(store.root) / "secret-link")
    with pytest.raises(InvalidInput, match="outside the store"):
        store.open_read("link/secret.txt")
    with pytest.raises(InvalidInput, match="outside the store"):
        store.get_file("secret-link", tmp_path / "copy")
    with pytest.raises(InvalidInput, match="outside the store"):
        store.put_bytes("link/new.txt", b"x")
    with pytest.raises(InvalidInput, match="outside the store"):
        store.delete_prefix("link")
    assert store.list("") == []  # links are not listed
    assert not (outside / "new.txt").exists()
    assert (outside / "secret.txt").read_text() == "secret"


def test_concurrent_writers_leave_one_whole_file(store: LocalStore) -> None:
    blobs = [bytes([i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=store.put_bytes, args=("same/key", b)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.open_read("same/key") as f:
        assert f.read() in blobs
    assert store.list("same") == ["same/key"]
