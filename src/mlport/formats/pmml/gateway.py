"""pypmml's gateway to a Java runtime started by :mod:`mlport.formats.pmml.jvm`, on py4j's public client.

pypmml talks to Java through a :class:`pypmml.jvm.JVMGateway`, its extension point for gateways; its own
py4j gateway launches a runtime it cannot stop for sure (no own process group, no authentication), so
this one only connects to a runtime started elsewhere. Imported only once pypmml is known to import.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from py4j.java_collections import JavaArray, JavaList
from py4j.java_gateway import GatewayParameters, JavaGateway, JavaObject
from py4j.protocol import Py4JJavaError
from pypmml.jvm import JVMGateway, PMMLError

__all__ = ["PmmlGateway"]

log = logging.getLogger(__name__)
_ids = itertools.count(1)


class PmmlGateway(JVMGateway):  # type: ignore[misc]
    """A py4j client of one Java runtime, in the shape pypmml calls.

    Its ``classpath`` and ``java_opts`` (pypmml's jars, ``JAVA_OPTS``) say how to start the runtime;
    :meth:`connect` then joins it.
    """

    def __init__(self, is_alive: Callable[[], bool]) -> None:
        super().__init__()
        self._is_alive = is_alive
        self._client: JavaGateway | None = None
        self._name = f"Py4j (mlport runtime {next(_ids)})"

    def connect(self, port: int, token: str, read_timeout: float) -> None:
        self._client = JavaGateway(gateway_parameters=GatewayParameters(
            port=port, auth_token=token, auto_convert=True, auto_close=True, read_timeout=read_timeout))

    def launch_gateway(self, java_opts: list[str] | None = None, java_path: str | None = None) -> None:
        raise PMMLError("this gateway connects to a Java runtime started by mlport; it launches none")

    def java2py(self, r: Any) -> Any:
        if isinstance(r, (JavaArray, JavaList)):
            return [self.java2py(x) for x in r]
        if isinstance(r, JavaObject):
            cls_name = r.getClass().getName()
            if cls_name == "scala.Some":
                return r.get()
            if cls_name == "scala.None$":
                return None
            if cls_name == "scala.Enumeration$Val":
                return r.toString()
        return r

    def call_java_static_func(self, class_name: str, func_name: str, *args: Any) -> Any:
        if self._client is None:
            raise PMMLError("the Java runtime of the PMML evaluator is stopped")
        try:
            return getattr(getattr(self._client.jvm, class_name), func_name)(*args)
        except Py4JJavaError as exc:
            java = exc.java_exception
            raise PMMLError(java.getClass().getSimpleName(), java.getMessage()) from None

    def detach(self, java_object: Any) -> None:
        """Nothing to do: py4j's memory management releases a Java object when its Python proxy is collected
        (and skips it when that proxy's runtime has stopped), which is also when pypmml calls this."""

    def shutdown(self) -> None:
        """Close the connections; a runtime still running is told to stop (idempotent)."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            # a runtime that exited cannot be told to stop: only the connections are closed
            client.shutdown() if self._is_alive() else client.close()
        except Exception as exc:
            log.debug("closing the Java gateway: %s", exc)

    def name(self) -> str:
        return self._name
