"""The Java runtime PMML models are evaluated in: started with the first model, stopped with the last one
or when the server that owns it stops (:meth:`JavaRuntime.close`, through the format's ``close``).

The process is started here rather than with py4j's ``launch_gateway``: that one reads the port with a
blocking ``readline`` (no start deadline), starts the process group with a ``preexec_fn`` (not safe while
other threads run), and loses the process (so its exit status and message) when it fails to start.
The runtime is py4j's own ``GatewayServer``, started with ``start_new_session`` (its own process group: a
Ctrl-C meant for the server does not reach it), ``--die-on-broken-pipe`` (it exits when its standard
input closes, so also when the server process dies) and ``--enable-auth`` (only a client holding the
token it prints may use it), listening on 127.0.0.1; py4j's public client then connects to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from mlport.errors import MlportError
from mlport.formats.pmml.document import one_line

__all__ = ["JAVA_CALL_TIMEOUT_S", "JAVA_START_TIMEOUT_S", "JavaProcess", "JavaRuntime", "java_message",
           "java_runtime"]

log = logging.getLogger(__name__)

#: Longest one call into the Java runtime may take before its connection is dropped (seconds).
JAVA_CALL_TIMEOUT_S = 600.0
#: Longest the Java runtime may take to start listening (seconds).
JAVA_START_TIMEOUT_S = 60.0
#: Most output read from the Java runtime before it says where it listens.
_MAX_HANDSHAKE_BYTES = 64 * 1024
#: How long the Java runtime gets to exit after it is told to, before it is killed (seconds).
_STOP_TIMEOUT_S = 10.0


def java_runtime() -> str | None:
    """The ``java`` executable to run: ``$JAVA_HOME/bin/java``, else ``java`` on ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def java_message(exc: BaseException) -> str:
    """One readable line from an evaluator error (pypmml wraps Java exceptions as (class, message))."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            return one_line(f"{java.getClass().getSimpleName()}: {java.getMessage()}")
        except Exception:  # the runtime may be gone
            pass
    args = [str(a) for a in getattr(exc, "args", ()) if a is not None and str(a)]
    return one_line(": ".join(args) if args else type(exc).__name__)


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
            raise MlportError(f"unexpected output: {one_line(' '.join(lines))}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MlportError(f"it did not start within {timeout:g} s")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            proc.wait(_STOP_TIMEOUT_S)
            said = one_line(" ".join([*lines, buffer.decode("utf-8", errors="replace")]))
            raise MlportError(f"it exited with status {proc.returncode}" + (f": {said}" if said else ""))
        buffer += chunk


def _drain(stream: IO[bytes], tail: deque[str]) -> None:
    """Read what the runtime prints after it started (so that it never blocks on a full pipe)."""
    with contextlib.suppress(OSError, ValueError):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            tail.append(line)
            log.debug("java: %s", line)


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
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


class JavaProcess:
    """One running Java runtime, pypmml's context on it, and how many models use it."""

    def __init__(self, proc: subprocess.Popen[bytes], gateway: Any) -> None:
        self.proc = proc
        self.gateway = gateway
        self.users = 0
        self.output: deque[str] = deque(maxlen=20)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    @classmethod
    def start(cls, java: str) -> JavaProcess:
        """Start a runtime with ``java`` and make it pypmml's context (pypmml has one per process)."""
        from py4j.java_gateway import find_jar_path
        from pypmml import PMMLContext

        from mlport.formats.pmml.gateway import PmmlGateway

        procs: list[subprocess.Popen[bytes]] = []
        gateway = PmmlGateway(lambda: bool(procs) and procs[0].poll() is None)
        jar = find_jar_path()
        if not jar:
            raise MlportError(f"the Java runtime {java} could not start the PMML evaluator: the Java part of py4j "
                              "(py4j*.jar) is not installed: pip install --force-reinstall py4j")
        command = [java, "-classpath", os.pathsep.join((jar, gateway.classpath)), *gateway.java_opts,
                   "py4j.GatewayServer", "--die-on-broken-pipe", "--enable-auth", "0"]
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise MlportError(f"the Java runtime {java} could not start the PMML evaluator: {exc}") from None
        procs.append(proc)
        self = cls(proc, gateway)
        try:
            port, token, before = _read_handshake(proc, JAVA_START_TIMEOUT_S)
            self.output.extend(before)
            assert proc.stdout is not None
            threading.Thread(target=_drain, args=(proc.stdout, self.output), name="mlport-pmml-java",
                             daemon=True).start()
            gateway.connect(port, token, JAVA_CALL_TIMEOUT_S)
        except BaseException as exc:
            gateway.shutdown()
            _stop_process(proc)
            if isinstance(exc, Exception):
                detail = str(exc) if isinstance(exc, MlportError) else java_message(exc)
                raise MlportError(f"the Java runtime {java} could not start the PMML evaluator: {detail}") from None
            raise
        PMMLContext.shutdown()  # a context left by a runtime that stopped
        PMMLContext(gateway_instance=gateway)
        log.info("started a Java runtime for the PMML evaluator (pid %d)", proc.pid)
        return self

    def stop(self) -> None:
        """Close pypmml's context when it is this runtime's, then stop the runtime."""
        from pypmml import PMMLContext

        if PMMLContext.gateway() == self.gateway.name():
            PMMLContext.shutdown()
        self.gateway.shutdown()
        _stop_process(self.proc)


class JavaRuntime:
    """The Java runtime of one server's PMML models: started with the first model that needs it, stopped with
    the last one and by :meth:`close` (when the server stops); should it exit while models use it, the
    next :meth:`acquire` starts another."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: JavaProcess | None = None

    def acquire(self, java: str) -> JavaProcess:
        """The running Java runtime (started when there is none, or when the last one died), one more user."""
        with self._lock:
            current = self._current
            if current is not None and not current.alive():
                log.warning("the Java runtime of the PMML evaluator (pid %d) exited; starting another", current.pid)
                current.stop()
                current = self._current = None
            if current is None:
                current = self._current = JavaProcess.start(java)
            current.users += 1
            return current

    def release(self, process: JavaProcess) -> None:
        """One user fewer; the runtime stops with its last user."""
        with self._lock:
            process.users -= 1
            if process.users > 0:
                return
            if self._current is process:
                self._current = None
            process.stop()

    def pid(self) -> int | None:
        """The process id of the running Java runtime (``None``: none runs)."""
        with self._lock:
            current = self._current
            return current.pid if current is not None and current.alive() else None

    def close(self) -> None:
        """Stop the runtime, whoever still uses it; a later :meth:`acquire` starts a new one."""
        with self._lock:
            current, self._current = self._current, None
            if current is not None:
                current.stop()
