"""PMML models (``*.pmml``, and ``*.xml`` files whose root element is ``PMML``), evaluated by pypmml.

pypmml runs the PMML4S evaluator in a Java runtime: regression, trees, mining models (forests, gradient
boosting, model chains), neural networks, with their transformations and missing-value treatments. It
needs ``pip install 'mlport[pmml]'`` and a Java runtime (``$JAVA_HOME/bin/java``, else ``java`` on
``PATH``; e.g. ``apt-get install default-jre-headless``). ``JAVA_OPTS`` is passed to that runtime.

Signature:

- inputs are the model's active fields (its MiningSchema), named by the field, each of shape ``[-1]``
  (one value per row), typed by the DataDictionary: ``string`` is BYTES, ``double`` FP64, ``float`` FP32,
  ``integer`` INT64, ``boolean`` BOOL; dates and times are BYTES (their PMML text form);
- outputs are the model's OutputFields (predicted values, probabilities...), named by the field, each of
  shape ``[-1]``, typed by the field's datatype as above. A target whose predicted value no OutputField
  gives (a model without an Output element, or one that only lists probabilities) is an output too,
  named by the target field. A model without targets and without an Output element serves the
  evaluator's default outputs.

Missing values, on the wire:

- a numeric (FP32/FP64) input value is missing when it is NaN or infinite: send ``NaN`` in TF Serving JSON
  (which accepts the token) or in binary tensors (the OIP binary extension, gRPC); the plain JSON of
  ``/eval`` and OIP has no NaN and refuses ``null``, so there a row without a value needs a binary tensor;
- a string (BYTES) input value is missing when it is the empty string ``""``;
- INT64 and BOOL inputs cannot carry a missing value.

Missing values reach the evaluator as missing, so the model's own treatment applies
(``missingValueReplacement``, ``missingValueStrategy``...). An output the model gives no value for is
NaN in a float output (``null`` in JSON answers) and ``""`` in a string output; an integer or boolean
output without a value (the evaluator writes the smallest INT64 for it) fails the request with a 400 that
names the output and the row.

Prediction is one call per batch: the rows travel to the Java runtime as one JSON document (the
``split`` orientation pypmml uses for DataFrames, encoded here with full float precision) and come back
as one; PMML4S evaluates the rows one after another inside the Java runtime, and the Python side
encodes and decodes the columns with numpy. Calls on one model are serialised (PMML4S models are not
documented as safe for concurrent scoring); different models score in parallel.

One Java runtime serves every PMML model of the process. It starts with the first model loaded, in its
own process group (a Ctrl-C for the server does not kill it mid-request), listening on 127.0.0.1 only
with an authentication token, and it stops when the last PMML model is closed (and at exit); it also
exits by itself when the server process dies, as its standard input closes. Should it exit while the
server runs (killed for memory...), the request that finds it gone starts a new one and loads the model
on it again (each model keeps its checked document in memory for that).

PMML files hold no code, so they load without trust. The XML is checked before the evaluator sees it:
the file is read up to a size limit, must be well-formed with a ``PMML`` root, and may not declare a
DTD (no entities, so no external entity can be read and no entity expansion can blow up); the
evaluator then parses those same checked bytes.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import select
import shutil
import subprocess
import threading
import time
import xml.parsers.expat
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import orjson

from mlport.core.types import DataType, Signature, TensorSpec
from mlport.errors import ErrorCode, InvalidInput, MlportError
from mlport.formats.base import Arrays, Evaluator, LoadOptions, MissingExtra, ModelFormat, as_text

__all__ = ["MAX_PMML_BYTES", "PmmlEvaluator", "PmmlFormat", "java_runtime", "running_java_pid"]

log = logging.getLogger(__name__)

PMML_SUFFIXES = (".pmml",)
XML_SUFFIXES = (".xml",)
#: Largest PMML file loaded.
MAX_PMML_BYTES = 256 * 1024 * 1024
#: Bytes read from the head of an ``.xml`` file to tell whether its root element is PMML.
_SNIFF_BYTES = 4096
#: Most fields a model's signature may have (inputs, and outputs).
MAX_FIELDS = 10_000
#: Longest one call into the Java runtime may take before its connection is dropped (seconds).
JAVA_CALL_TIMEOUT_S = 600.0
#: Longest the Java runtime may take to start listening (seconds).
JAVA_START_TIMEOUT_S = 60.0
#: Most output read from the Java runtime before it says where it listens.
_MAX_HANDSHAKE_BYTES = 64 * 1024
#: How long the Java runtime gets to exit after it is told to, before it is killed (seconds).
_STOP_TIMEOUT_S = 10.0
#: Longest message from the evaluator kept in an error.
_MAX_MESSAGE = 400
#: How the evaluator writes a missing integer.
_NO_LONG = np.iinfo(np.int64).min
#: Compared with an object array, elementwise: where it holds None.
_NONE = np.array([None], dtype=object)
_JAVA_HINT = "install a Java runtime, e.g. apt-get install default-jre-headless"

_TYPES = {
    "string": DataType.BYTES,
    "double": DataType.FP64,
    "real": DataType.FP64,
    "float": DataType.FP32,
    "integer": DataType.INT64,
    "boolean": DataType.BOOL,
}

#: The root element's start tag, with or without a namespace prefix.
_ROOT_TAG = re.compile(r"<(?:[A-Za-z_][\w.\-]*:)?PMML[\s/>]")


def _datatype(pmml_type: str | None) -> DataType:
    """The tensor datatype of a PMML ``dataType``; dates, times and unknown types travel as text."""
    return _TYPES.get((pmml_type or "").strip(), DataType.BYTES)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def _java_message(exc: BaseException) -> str:
    """One readable line from an evaluator error (pypmml wraps Java exceptions as (class, message))."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            return _one_line(f"{java.getClass().getSimpleName()}: {java.getMessage()}")
        except Exception:  # the runtime may be gone
            pass
    args = [str(a) for a in getattr(exc, "args", ()) if a is not None and str(a)]
    return _one_line(": ".join(args) if args else type(exc).__name__)


# ------------------------------------------------------------------ detection and safe reading
def _head_text(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="ignore")
    return head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="ignore")


def has_pmml_root(head: bytes) -> bool:
    """True when ``head`` (the start of an XML document) opens a ``PMML`` root element.

    The prologue (whitespace, the XML declaration, processing instructions, comments) is skipped in one
    pass, so the time is linear in the head's length.
    """
    text = _head_text(head)
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        for start, end in (("<?", "?>"), ("<!--", "-->")):
            if text.startswith(start, pos):
                close = text.find(end, pos + len(start))
                if close < 0:
                    return False
                pos = close + len(end)
                break
        else:
            return _ROOT_TAG.match(text, pos) is not None


def _bom_text(data: bytes) -> str | None:
    """The document as text when it starts with a byte order mark (which the evaluator's parser refuses)."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise MlportError(f"the document starts with a {codec} byte order mark but is not {codec}: "
                                  f"{exc.reason} at byte {exc.start}") from None
    return None


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise MlportError(f"{path.name} is {size} bytes; PMML files are loaded up to {limit} bytes")
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise MlportError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise MlportError(f"{path.name} is larger than {limit} bytes; PMML files are loaded up to that size")
    return data


class _Refused(Exception):
    pass


def check_pmml_xml(data: bytes, name: str) -> None:
    """Refuse a document that is not well-formed XML, declares a DTD or has a root other than ``PMML``.

    The standard library's expat parser checks the whole document; it resolves no external entity, and
    any DTD (the only place entities can be declared) is refused as soon as it starts.
    """
    parser = xml.parsers.expat.ParserCreate()
    root: list[str] = []

    def refuse_dtd(*_: Any) -> None:
        raise _Refused("declares a DTD (<!DOCTYPE ...>), which PMML does not use; remove it")

    def refuse_entity(*_: Any) -> int:
        raise _Refused("refers to an external entity, which is not loaded")

    def first_element(tag: str, _attrs: Any) -> None:
        root.append(tag)
        if tag.rpartition(":")[2] != "PMML":
            raise _Refused(f"has the root element <{tag}>, not <PMML>")
        parser.StartElementHandler = None

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_entity
    parser.StartElementHandler = first_element
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise MlportError(f"{name} {exc}") from None
    except xml.parsers.expat.ExpatError as exc:
        raise MlportError(
            f"{name} is not well-formed XML: {xml.parsers.expat.errors.messages.get(exc.code, str(exc))} "
            f"(line {exc.lineno}, column {exc.offset + 1})"
        ) from None
    if not root:
        raise MlportError(f"{name} has no root element")


# ------------------------------------------------------------------ the Java runtime
def java_runtime() -> str | None:
    """The ``java`` executable pypmml will run: ``$JAVA_HOME/bin/java``, else ``java`` on ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def _read_handshake(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str, list[str]]:
    """The port and token the gateway prints once it listens; any other line before them is kept."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    lines: list[str] = []
    while True:
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            lines.append(raw.decode("utf-8", errors="replace").strip())
        digits = [i for i, line in enumerate(lines) if line.isdigit()]
        if digits and len(lines) > digits[0] + 1:
            i = digits[0]
            return int(lines[i]), lines[i + 1], lines[:i]
        if len(buffer) + sum(len(line) for line in lines) > _MAX_HANDSHAKE_BYTES:
            raise MlportError(f"unexpected output: {_one_line(' '.join(lines))}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MlportError(f"it did not start within {timeout:g} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            proc.wait(_STOP_TIMEOUT_S)
            said = _one_line(" ".join([*lines, buffer.decode("utf-8", errors="replace")]))
            raise MlportError(f"it exited with status {proc.returncode}" + (f": {said}" if said else ""))
        buffer += chunk


def _drain(stream: Any, tail: deque[str]) -> None:
    """Read what the runtime prints after it started (so that it never blocks on a full pipe)."""
    with contextlib.suppress(OSError, ValueError):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            tail.append(line)
            log.debug("java: %s", line)


def _gateway_class() -> Any:
    """A pypmml gateway on a Java process started here, so that it can be stopped for sure.

    The process is started with ``start_new_session`` (its own process group: a Ctrl-C meant for the
    server does not reach it; unlike a ``preexec_fn`` this is safe while other threads run), with the
    gateway's ``--die-on-broken-pipe`` (it exits when its standard input closes, so also when this
    process dies) and ``--enable-auth`` (only a client holding the token it prints may use it).
    """
    from py4j.java_gateway import GatewayParameters, JavaGateway, find_jar_path
    from pypmml.jvm import Py4jGateway

    class Gateway(Py4jGateway):  # type: ignore[misc]
        def __init__(self, java: str) -> None:
            super().__init__()
            self._java = java
            self._client: Any = None
            self._jvm: Any = None
            self.proc: subprocess.Popen[bytes] | None = None
            self.output: deque[str] = deque(maxlen=20)

        def launch_gateway(self, java_opts: list[str] | None = None, java_path: str | None = None) -> None:
            jar = find_jar_path()
            if not jar:
                raise MlportError("the Java part of py4j (py4j*.jar) is not installed: "
                                  "pip install --force-reinstall py4j")
            command = [self._java, "-classpath", os.pathsep.join((jar, self.classpath)), *self.java_opts,
                       *(java_opts or []), "py4j.GatewayServer", "--die-on-broken-pipe", "--enable-auth", "0"]
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
            self.proc = proc
            try:
                port, token, before = _read_handshake(proc, JAVA_START_TIMEOUT_S)
                self.output.extend(before)
                threading.Thread(target=_drain, args=(proc.stdout, self.output), name="mlport-pmml-java",
                                 daemon=True).start()
                self._client = JavaGateway(gateway_parameters=GatewayParameters(
                    port=port, auth_token=token, auto_convert=True, auto_close=True,
                    read_timeout=JAVA_CALL_TIMEOUT_S))
                self._jvm = self._client.jvm
            except BaseException:
                self._stop_process()
                raise

        def detach(self, java_object: Any) -> None:
            # objects of a runtime that exited (or of another gateway) have nothing left to free
            client = self._client
            if client is None or self.proc is None or self.proc.poll() is not None:
                return
            if getattr(java_object, "_gateway_client", None) is client._gateway_client:
                client.detach(java_object)

        def shutdown(self) -> None:
            client, self._client = self._client, None
            if client is not None:
                alive = self.proc is not None and self.proc.poll() is None
                try:
                    # a runtime that exited cannot be told to stop: only the connections are closed
                    client.shutdown() if alive else client.close()
                except Exception as exc:
                    log.debug("closing the Java gateway: %s", exc)
            self._stop_process()

        def _stop_process(self) -> None:
            proc = self.proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    if proc.stdin is not None:
                        proc.stdin.close()  # the runtime exits when its standard input closes
                try:
                    proc.wait(_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(_STOP_TIMEOUT_S)
                log.info("stopped the Java runtime of the PMML evaluator (pid %d)", proc.pid)
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()

        def name(self) -> str:
            return "Py4j"

    return Gateway


class _Jvm:
    """One running Java runtime and the evaluators using it."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.users = 0

    @property
    def pid(self) -> int:
        return int(self.gateway.proc.pid)

    def alive(self) -> bool:
        return bool(self.gateway.proc is not None and self.gateway.proc.poll() is None)

    @classmethod
    def start(cls, java: str) -> _Jvm:
        from pypmml import PMMLContext

        gateway = _gateway_class()(java)
        try:
            gateway.launch_gateway()
        except Exception as exc:
            detail = str(exc) if isinstance(exc, MlportError) else _java_message(exc)
            raise MlportError(f"the Java runtime {java} could not start the PMML evaluator: {detail}") from None
        PMMLContext.shutdown()  # a context left by a runtime that died
        PMMLContext(gateway_instance=gateway)
        log.info("started a Java runtime for the PMML evaluator (pid %d)", gateway.proc.pid)
        return cls(gateway)

    def stop(self) -> None:
        from pypmml import PMMLContext

        if PMMLContext._gateway is self.gateway:
            PMMLContext.shutdown()
        else:
            self.gateway.shutdown()


_lock = threading.Lock()
_current: _Jvm | None = None


def _acquire(java: str) -> _Jvm:
    """The running Java runtime (started when there is none, or when the last one died), one more user."""
    global _current
    with _lock:
        if _current is not None and not _current.alive():
            log.warning("the Java runtime of the PMML evaluator (pid %d) exited; starting another", _current.pid)
            _current.stop()
            _current = None
        if _current is None:
            _current = _Jvm.start(java)
        _current.users += 1
        return _current


def _release(jvm: _Jvm) -> None:
    """One user fewer; the runtime stops with its last user."""
    global _current
    with _lock:
        jvm.users -= 1
        if jvm.users > 0:
            return
        if _current is jvm:
            _current = None
        jvm.stop()


@atexit.register
def _stop_at_exit() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
            _current = None


def running_java_pid() -> int | None:
    """The process id of the Java runtime serving PMML models in this process (``None``: none runs)."""
    with _lock:
        return _current.pid if _current is not None and _current.alive() else None


# ------------------------------------------------------------------ evaluator
@dataclass(frozen=True, slots=True)
class _Output:
    spec: TensorSpec
    #: The column of the evaluator's answer that holds it.
    column: str


def _outputs(model: Any, name: str) -> list[_Output]:
    """The served outputs: OutputFields, then targets without a predicted value, else the defaults."""
    own_output = model.call("output") is not None
    # a mining model without its own Output element answers with its segments' OutputFields (the last
    # segment's, in a model chain); any other model without one gets outputs the evaluator makes up
    declared = own_output or model.modelElement == "MiningModel"
    fields = [f for f in model.outputFields if bool(f.call("isFinalResult"))] if declared else []
    targets = [(t.name, t.dataType) for t in model.targetFields]
    generated = {} if own_output else {f"predicted_{t}": t for t, _ in targets}
    found = []
    for f in fields:
        served = generated.get(f.name, f.name) if f.feature == "predictedValue" else f.name
        found.append(_Output(TensorSpec(served, _datatype(f.dataType), (-1,)), f.name))
    predicted = {f.targetField for f in fields if f.feature == "predictedValue"}
    uncovered = [t for t in targets if t[0] not in predicted and not (None in predicted and len(targets) == 1)]
    if uncovered:
        # the evaluator's supplementary outputs hold a predicted value per target
        model.setSupplementOutput(True)
        extra = [f for f in model.outputFields if f.feature == "predictedValue"]
        taken = {o.spec.name for o in found}
        for target, dtype in uncovered:
            mine = [f for f in extra if f.targetField in (target, None) and f.name not in taken]
            if not mine:
                raise MlportError(f"{name}: the evaluator gives no predicted value for the target '{target}'")
            served = target if target not in taken else mine[0].name
            found.append(_Output(TensorSpec(served, _datatype(dtype), (-1,)), mine[0].name))
            taken.add(served)
    if not found:
        found = [_Output(TensorSpec(f.name, _datatype(f.dataType), (-1,)), f.name) for f in model.outputFields]
    if len({o.spec.name for o in found}) < len(found):  # a target named like an output: the evaluator's names
        found = [_Output(TensorSpec(o.column, o.spec.datatype, o.spec.shape), o.column) for o in found]
    if not found:
        raise MlportError(f"{name}: the model has no output fields and no target")
    return found


def _open_model(data: bytes, name: str) -> Any:
    """The pypmml model of the checked document, on the running Java runtime."""
    from pypmml import Model

    try:
        text = _bom_text(data)
        return Model.fromBytes(data) if text is None else Model.fromString(text)
    except MlportError:
        raise
    except Exception as exc:
        raise MlportError(f"pypmml could not load {name}: {_java_message(exc)}") from None


class PmmlEvaluator(Evaluator):
    platform = "pmml"

    def __init__(self, data: bytes, name: str, java: str) -> None:
        self._data = data
        self._name = name
        self._java = java
        self._lock = threading.Lock()
        self._closed = False
        self._jvm = _acquire(java)
        try:
            self._model: Any = _open_model(data, name)
            try:
                inputs = [TensorSpec(f.name, _datatype(f.dataType), (-1,)) for f in self._model.inputFields]
                outputs = _outputs(self._model, name)
                self._supplement = bool(self._model.call("supplementOutput"))
            except MlportError:
                raise
            except Exception as exc:
                raise MlportError(f"pypmml could not read the fields of {name}: {_java_message(exc)}") from None
            if not inputs:
                raise MlportError(f"{name}: the model has no active input field, so it cannot score rows")
            if len(inputs) > MAX_FIELDS or len(outputs) > MAX_FIELDS:
                raise MlportError(f"{name} has more than {MAX_FIELDS} input or output fields")
        except BaseException:
            self._model = None
            _release(self._jvm)
            raise
        self._columns = [s.name for s in inputs]
        self._outputs = outputs
        self.signature = Signature(tuple(inputs), tuple(o.spec for o in outputs))

    def _revive(self) -> None:
        """Load the model again on a new Java runtime, after the one it was on exited (called under the lock)."""
        jvm = _acquire(self._java)
        try:
            model = _open_model(self._data, self._name)
            if self._supplement:
                model.setSupplementOutput(True)
        except BaseException:
            _release(jvm)
            raise
        old, self._jvm, self._model = self._jvm, jvm, model
        _release(old)
        log.info("model %s loaded again on the new Java runtime", self._name)

    # -------------------------------------------------------------- encoding
    def _encode(self, spec: TensorSpec, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """One input column as JSON-ready values; missing values become None (JSON null)."""
        if spec.datatype is DataType.BYTES:
            try:
                text = as_text(arr)
            except UnicodeDecodeError:
                raise InvalidInput(f"input '{spec.name}' holds bytes that are not UTF-8 text") from None
            text[text == ""] = None
            return text
        if spec.datatype in (DataType.FP32, DataType.FP64):
            # NaN and infinities are written as null: missing
            return arr.astype(np.float64, copy=False)
        return arr

    def _decode(self, out: _Output, column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        spec = out.spec
        missing = np.asarray(np.equal(column, _NONE), dtype=bool)
        try:
            if spec.datatype is DataType.BYTES:
                if missing.any():
                    column = np.where(missing, "", column)
                return column.astype(str).astype(object)
            if spec.datatype in (DataType.FP32, DataType.FP64):
                if missing.any():
                    column = np.where(missing, np.nan, column)
                return column.astype(spec.datatype.numpy)
            values = np.where(missing, 0, column).astype(spec.datatype.numpy)
            if spec.datatype is DataType.INT64:
                # the evaluator answers a missing integer as the smallest long
                missing |= values == _NO_LONG
            if missing.any():
                row = int(np.argmax(missing))
                raise InvalidInput(
                    f"the model gives no value for output '{spec.name}' (row {row}): a missing or invalid "
                    "input value it has no treatment for"
                )
            return values
        except (TypeError, ValueError) as exc:
            raise MlportError(f"output '{spec.name}': the evaluator answered values that are not "
                              f"{spec.datatype.value}: {_one_line(str(exc))}") from None

    def predict(self, inputs: Arrays) -> Arrays:
        n = int(inputs[self._columns[0]].shape[0])
        if n == 0:
            return {o.spec.name: np.empty((0,), dtype=o.spec.datatype.numpy) for o in self._outputs}
        table = np.empty((n, len(self._columns)), dtype=object)
        for j, spec in enumerate(self.signature.inputs):
            table[:, j] = self._encode(spec, inputs[spec.name])
        request = orjson.dumps({"columns": self._columns, "data": table.tolist()},
                               option=orjson.OPT_SERIALIZE_NUMPY).decode("utf-8")
        answer = self._call(request)
        try:
            doc = orjson.loads(answer)
            columns = {str(c): i for i, c in enumerate(doc["columns"])}
            rows = doc["data"]
            result = np.empty((n, len(columns)), dtype=object)
            result[...] = rows
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise MlportError(f"the PMML evaluator gave an answer that is not a table of {n} rows: "
                              f"{_one_line(str(exc))}") from None
        out: Arrays = {}
        for o in self._outputs:
            index = columns.get(o.column)
            if index is None:
                raise MlportError(f"the PMML evaluator's answer has no column '{o.column}'")
            out[o.spec.name] = self._decode(o, result[:, index])
        return out

    def _call(self, request: str) -> str:
        from py4j.protocol import Py4JJavaError

        with self._lock:
            if self._closed:
                raise MlportError("the model is closed", ErrorCode.UNAVAILABLE)
            if not self._jvm.alive():
                try:
                    self._revive()
                except MlportError as exc:
                    raise MlportError(str(exc), ErrorCode.UNAVAILABLE) from None
            try:
                answer = self._model.call("predict", request)
            except Py4JJavaError as exc:
                raise InvalidInput(f"the PMML evaluator refused the rows: {_java_message(exc)}") from None
            except Exception as exc:
                if not self._jvm.alive():
                    raise MlportError("the Java runtime of the PMML evaluator exited while scoring; the next "
                                      "request starts a new one", ErrorCode.UNAVAILABLE) from None
                raise MlportError(f"the PMML evaluator failed: {_java_message(exc)}") from None
        if not isinstance(answer, str):
            raise MlportError("the PMML evaluator gave no answer")
        return answer

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._model = None
            self._data = b""
        _release(self._jvm)


class PmmlFormat(ModelFormat):
    name: ClassVar[str] = "pmml"
    extra: ClassVar[str | None] = "pmml"
    requires: ClassVar[tuple[str, ...]] = ("pypmml", "py4j")
    runs_code: ClassVar[bool] = False

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        suffix = path.suffix.lower()
        if suffix in PMML_SUFFIXES:
            return True
        if suffix not in XML_SUFFIXES:
            return False
        with path.open("rb") as f:
            return has_pmml_root(f.read(_SNIFF_BYTES))

    def load(self, path: Path, options: LoadOptions) -> Evaluator:
        self.check_loadable(options)
        try:
            import py4j.java_gateway  # noqa: F401
            import pypmml  # noqa: F401
        except ImportError as exc:
            raise MissingExtra(f"the {self.name} format could not import pypmml ({_one_line(str(exc))}): "
                               f"pip install 'mlport[{self.extra}]'") from None
        java = java_runtime()
        if java is None:
            raise MissingExtra(f"the {self.name} format needs a Java runtime (none in $JAVA_HOME or on PATH): "
                               f"{_JAVA_HINT}")
        data = _read_bounded(path, MAX_PMML_BYTES)
        check_pmml_xml(data, path.name)
        return PmmlEvaluator(data, path.name, java)
