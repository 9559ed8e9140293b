"""The PMML format without a server or a Java runtime: detection, the XML checks, missing extras, datatypes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mlport.core.types import DataType
from mlport.errors import MlportError
from mlport.formats import pmml
from mlport.formats.base import LoadOptions, MissingExtra
from mlport.formats.pmml import PmmlFormat, check_pmml_xml, has_pmml_root
from mlport.formats.pmml.evaluator import pmml_datatype
from mlport.formats.registry import FormatRegistry

DOC = (b'<?xml version="1.0" encoding="UTF-8"?>\n<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">'
       b'<Header/></PMML>\n')


# ------------------------------------------------------------------------- detection
def test_registry_finds_the_pmml_format() -> None:
    assert "pmml" in {f.name for f in FormatRegistry.discover().formats}


@pytest.mark.parametrize("head", [
    DOC,
    b"\xef\xbb\xbf" + DOC,
    b'<?xml version="1.0"?>\n<!-- written by an exporter -->\n<?pi data?>\n  <PMML version="4.4"/>',
    b"<pmml:PMML xmlns:pmml='http://www.dmg.org/PMML-4_4'>",
    '<?xml version="1.0" encoding="UTF-16"?><PMML version="4.4">'.encode("utf-16"),
])
def test_pmml_root_is_recognised(head: bytes) -> None:
    assert has_pmml_root(head)


@pytest.mark.parametrize("head", [
    b'<?xml version="1.0"?>\n<project><PMML/></project>',
    b"<PMMLX/>",
    b"<!DOCTYPE PMML><PMML/>",
    b"PMML",
    b"",
    b"\x00\x01\x02<PMML>",
])
def test_other_xml_is_not_pmml(head: bytes) -> None:
    assert not has_pmml_root(head)


@pytest.mark.parametrize("head", [b" " * 4095 + b"x", b"<?a?>" * 819 + b"x", b"<!--a-->" * 511 + b"x",
                                  b"<?" + b"?" * 4000, b"<!--" + b"-" * 4000])
def test_sniffing_takes_linear_time(head: bytes) -> None:
    started = time.perf_counter()
    assert not has_pmml_root(head)
    assert time.perf_counter() - started < 0.5


def test_detection_by_suffix_and_bounded_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = PmmlFormat()
    (tmp_path / "a.pmml").write_bytes(b"anything")  # claimed by its suffix; loading tells what is wrong
    (tmp_path / "b.PMML").write_bytes(DOC)
    (tmp_path / "c.xml").write_bytes(DOC)
    (tmp_path / "d.xml").write_bytes(b"<settings/>")
    (tmp_path / "e.txt").write_bytes(DOC)
    (tmp_path / "f.pmml").mkdir()
    found = {p.name for p in tmp_path.iterdir() if fmt.detect(p)}
    assert found == {"a.pmml", "b.PMML", "c.xml"}

    big = tmp_path / "big.xml"
    big.write_bytes(b"<!--" + b"x" * 10_000_000 + b"--><PMML/>")
    reads: list[int] = []
    real_open = Path.open

    def spy(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read

        def read(n: int = -1) -> bytes:
            reads.append(n)
            return real_read(n)

        handle.read = read
        return handle

    monkeypatch.setattr(Path, "open", spy)
    assert not fmt.detect(big)  # the root is past the sniffed head: not claimed, and not read whole
    assert reads and all(0 < n <= 4096 for n in reads)


# ------------------------------------------------------------------------- the XML checks
def test_well_formed_pmml_passes() -> None:
    check_pmml_xml(DOC, "m.pmml")
    check_pmml_xml(b"\xef\xbb\xbf" + DOC, "m.pmml")


@pytest.mark.parametrize(("data", "message"), [
    (b"", "m.pmml is not well-formed XML: no element found (line 1, column 1)"),
    (DOC[:-10], "m.pmml is not well-formed XML"),
    (b"<model/>", "m.pmml has the root element <model>, not <PMML>"),
    (b"<PMML><a></b></PMML>", "mismatched tag"),
    (b'<!DOCTYPE PMML [<!ENTITY x "y">]><PMML>&x;</PMML>', "m.pmml declares a DTD"),
    (b'<!DOCTYPE PMML SYSTEM "http://example.invalid/pmml.dtd"><PMML/>', "m.pmml declares a DTD"),
    (b"<PMML>&undefined;</PMML>", "undefined entity"),
])
def test_bad_xml_is_refused_with_one_line(data: bytes, message: str) -> None:
    with pytest.raises(MlportError) as err:
        check_pmml_xml(data, "m.pmml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_entity_expansion_is_refused_before_it_grows() -> None:
    laughs = b'<!DOCTYPE PMML [<!ENTITY a "' + b"x" * 1000 + b'">' + b"".join(
        f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">'.encode() for i in range(8)) + \
        b"]><PMML>&a7;</PMML>"
    with pytest.raises(MlportError, match="declares a DTD"):
        check_pmml_xml(laughs, "m.pmml")


def test_external_entity_file_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the-secret-value")
    doc = f'<!DOCTYPE PMML [<!ENTITY s SYSTEM "file://{secret}">]><PMML><Header description="&s;"/></PMML>'
    with pytest.raises(MlportError) as err:
        check_pmml_xml(doc.encode(), "m.pmml")
    assert "the-secret-value" not in str(err.value)


def test_files_over_the_limit_are_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pmml, "MAX_PMML_BYTES", 100)
    path = tmp_path / "m.pmml"
    path.write_bytes(DOC + b" " * 200)
    monkeypatch.setattr(pmml, "java_runtime", lambda: "/usr/bin/java")
    fmt = PmmlFormat()
    with pytest.raises(MlportError, match=r"m.pmml is \d+ bytes; PMML files are loaded up to 100 bytes"):
        fmt.load(path, LoadOptions())
    assert fmt.runtime.pid() is None


# ------------------------------------------------------------------------- missing extras and Java
class _NoPypmml(PmmlFormat):
    requires: ClassVar[tuple[str, ...]] = ("mlport_test_absent_module", "py4j")


def test_missing_library_gives_the_install_line(tmp_path: Path) -> None:
    path = tmp_path / "m.pmml"
    path.write_bytes(DOC)
    with pytest.raises(MissingExtra) as err:
        _NoPypmml().load(path, LoadOptions())
    assert str(err.value) == "the pmml format needs mlport_test_absent_module: pip install 'mlport[pmml]'"
    assert not _NoPypmml.available()
    assert PmmlFormat.available()


def test_missing_java_names_the_runtime_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.pmml"
    path.write_bytes(DOC)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert pmml.java_runtime() is None
    fmt = PmmlFormat()
    with pytest.raises(MissingExtra) as err:
        fmt.load(path, LoadOptions())
    assert "install a Java runtime, e.g. apt-get install default-jre-headless" in str(err.value)
    assert fmt.runtime.pid() is None


def test_java_home_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text("#!/bin/sh\nexit 1\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(home))
    assert pmml.java_runtime() == str(java)
    java.chmod(0o644)  # not executable: the one on PATH (if any) is used
    assert pmml.java_runtime() != str(java)


def test_a_java_that_cannot_start_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(pmml, "java_runtime", lambda: str(fake))
    path = tmp_path / "m.pmml"
    path.write_bytes(DOC)
    fmt = PmmlFormat()
    with pytest.raises(MlportError) as err:
        fmt.load(path, LoadOptions())
    message = str(err.value)
    assert message.startswith(f"the Java runtime {fake} could not start the PMML evaluator: it exited with status 1")
    assert "could not create the Java Virtual Machine" in message and "\n" not in message
    assert fmt.runtime.pid() is None


# ------------------------------------------------------------------------- datatypes
@pytest.mark.parametrize(("pmml_type", "datatype"), [
    ("string", DataType.BYTES), ("double", DataType.FP64), ("float", DataType.FP32),
    ("integer", DataType.INT64), ("boolean", DataType.BOOL), ("date", DataType.BYTES),
    ("dateTime", DataType.BYTES), (None, DataType.BYTES),
])
def test_pmml_datatypes(pmml_type: str | None, datatype: DataType) -> None:
    assert pmml_datatype(pmml_type) is datatype
