"""Store keys and store URLs: what is accepted and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlport.errors import InvalidInput
from mlport.registry.store import MAX_KEY_BYTES, LocalStore, S3Store, check_key, open_store


@pytest.mark.parametrize("key", ["a", "models/iris/1/model.onnx", "a/b.c/d-e_f", "x/.hidden", "ünï/códe"])
def test_good_keys_are_returned_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", [
    "", "/abs", "/", "a/../b", "..", "../a", "a/..", "./a", "a/./b", "a//b", "a/", "a\\b", "..\\x", "a\x00b",
    "C:/windows", "c:x", "a\nb", "x" * (MAX_KEY_BYTES + 1),
])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidInput):
        check_key(key)


def test_non_string_key_is_refused() -> None:
    with pytest.raises(InvalidInput):
        check_key(None)  # type: ignore[arg-type]


def test_open_store_local_forms(tmp_path: Path) -> None:
    for url in (str(tmp_path / "a"), (tmp_path / "b").as_uri(), f"file://localhost{tmp_path / 'c'}"):
        store = open_store(url)
        assert isinstance(store, LocalStore)
        assert store.url.startswith("file:///")
        assert Path(store.root).is_dir()


def test_open_store_s3_builds_a_client_without_calling_it() -> None:
    store = open_store("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:1", region="us-east-1",
                       access_key="k", secret_key="s")
    assert isinstance(store, S3Store)
    assert store.url == "s3://bucket/some/prefix"
    assert store.bucket == "bucket"
    assert store.prefix == "some/prefix"
    assert open_store("s3://bucket", region="us-east-1").url == "s3://bucket"


@pytest.mark.parametrize("url", ["", "ftp://host/x", "s3:///prefix", "file://otherhost/x", "s3://b/../x"])
def test_open_store_refuses_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInput):
        open_store(url)


def test_open_store_refuses_unknown_s3_options() -> None:
    with pytest.raises(InvalidInput, match="unknown S3 store options: color"):
        open_store("s3://bucket", color="red")
