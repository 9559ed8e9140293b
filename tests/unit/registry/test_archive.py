"""Archive extraction refuses everything that could escape the folder or fill the disk."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from mlport.errors import InvalidInput, PayloadTooLarge
from mlport.registry.archive import archive_stem, extract_archive, is_archive


def _tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _tar_special(path: Path, name: str, kind: bytes, linkname: str = "") -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)
    return path


def _zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar"])
def test_tar_extracts_files_and_folders(tmp_path: Path, suffix: str) -> None:
    mode = "w" if suffix == ".tar" else "w:gz"
    archive = _tar(tmp_path / f"m{suffix}", [("./m/model.onnx", b"onnx"), ("m/sub/vocab.txt", b"a\nb\n")], mode)
    dest = extract_archive(archive, tmp_path / "out")
    assert _files(dest) == {"m/model.onnx": b"onnx", "m/sub/vocab.txt": b"a\nb\n"}


def test_zip_extracts_files_and_folders(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "m.zip", [("m/", b""), ("m/model.onnx", b"onnx"), ("m/a/b.txt", b"b")])
    dest = extract_archive(archive, tmp_path / "out")
    assert _files(dest) == {"m/model.onnx": b"onnx", "m/a/b.txt": b"b"}


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil.txt", "a\\..\\evil.txt",
                                  "C:/evil.txt"])
def test_zip_slip_is_refused(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "bad.zip", [("ok.txt", b"fine"), (name, b"evil")])
    dest = tmp_path / "out" / "inner"
    with pytest.raises(InvalidInput, match=r"bad\.zip"):
        extract_archive(archive, dest)
    assert not dest.exists()
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize("name", ["../evil.txt", "x/../../evil.txt", "/tmp/evil.txt"])
def test_tar_with_dotdot_or_absolute_names_is_refused(tmp_path: Path, name: str) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", [("ok.txt", b"fine"), (name, b"evil")])
    with pytest.raises(InvalidInput, match=r"bad\.tar\.gz"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize(("kind", "linkname"), [
    (tarfile.SYMTYPE, "/etc/passwd"), (tarfile.SYMTYPE, "../outside"), (tarfile.LNKTYPE, "other.txt"),
    (tarfile.CHRTYPE, ""), (tarfile.FIFOTYPE, ""),
])
def test_tar_links_and_devices_are_refused(tmp_path: Path, kind: bytes, linkname: str) -> None:
    archive = _tar_special(tmp_path / "bad.tar", "entry", kind, linkname)
    with pytest.raises(InvalidInput, match="only files and folders"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(tmp_path / "bad.zip", [(info, b"/etc/passwd")])
    with pytest.raises(InvalidInput, match="link"):
        extract_archive(archive, tmp_path / "out")


def test_too_many_files(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "many.tar.gz", [(f"f{i}.txt", b"x") for i in range(11)])
    with pytest.raises(PayloadTooLarge, match="more than 10 files"):
        extract_archive(archive, tmp_path / "out", max_files=10)
    assert not (tmp_path / "out").exists()
    extract_archive(archive, tmp_path / "ok", max_files=11)
    assert len(_files(tmp_path / "ok")) == 11


def test_too_many_zip_files(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "many.zip", [(f"f{i}.txt", b"x") for i in range(11)])
    with pytest.raises(PayloadTooLarge):
        extract_archive(archive, tmp_path / "out", max_files=10)


def test_too_big_declared(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "big.tar", [("a.bin", b"0" * 600), ("b.bin", b"0" * 600)], "w")
    with pytest.raises(PayloadTooLarge, match="more than 1000 bytes"):
        extract_archive(archive, tmp_path / "out", max_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_zip_bomb_is_stopped_by_bytes_written(tmp_path: Path) -> None:
    """A member that lies about its size is still cut off by the bytes actually written."""
    archive = _zip(tmp_path / "bomb.zip", [("big.bin", b"\0" * 5_000_000)])
    raw = bytearray(archive.read_bytes())
    # shrink the declared size in the local header and the central directory to 10 bytes
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("big.bin")
    local = raw.find(b"PK\x03\x04")
    central = raw.find(b"PK\x01\x02")
    raw[local + 22:local + 26] = (10).to_bytes(4, "little")
    raw[central + 24:central + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    assert info.file_size == 5_000_000
    with pytest.raises((PayloadTooLarge, InvalidInput)):
        extract_archive(archive, tmp_path / "out", max_bytes=1_000_000)
    assert not (tmp_path / "out").exists()


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "dup.tar.gz", [("a.txt", b"1"), ("a.txt", b"2")])
    with pytest.raises(InvalidInput, match="appears twice"):
        extract_archive(archive, tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    fake = tmp_path / "fake.tar.gz"
    fake.write_bytes(b"definitely not gzip")
    with pytest.raises(InvalidInput, match=r"fake\.tar\.gz is not a readable archive"):
        extract_archive(fake, tmp_path / "out")
    fakezip = tmp_path / "fake.zip"
    fakezip.write_bytes(b"PK nope")
    with pytest.raises(InvalidInput, match=r"fake\.zip is not a readable archive"):
        extract_archive(fakezip, tmp_path / "out2")
    with pytest.raises(InvalidInput, match="not an archive"):
        extract_archive(tmp_path / "model.onnx", tmp_path / "out3")


def test_destination_must_be_empty(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "m.tar", [("a.txt", b"1")], "w")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "other").write_text("x")
    with pytest.raises(InvalidInput, match="not an empty folder"):
        extract_archive(archive, dest)
    assert (dest / "other").read_text() == "x"


def test_names() -> None:
    assert is_archive("m.TAR.GZ") and is_archive("m.tgz") and is_archive("m.zip") and is_archive("m.tar")
    assert not is_archive("m.onnx") and not is_archive("m.keras")
    assert archive_stem("iris.tar.gz") == "iris"
    assert archive_stem("iris.tgz") == "iris"
    assert archive_stem("iris.onnx") == "iris.onnx"
