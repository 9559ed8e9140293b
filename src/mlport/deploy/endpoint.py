"""One ready replica as the gateway sees it: its address, its requests in flight and its health."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Endpoint"]


@dataclass(eq=False)
class Endpoint:
    """One ready replica as the gateway sees it.

    ``inflight`` counts the requests the gateway is forwarding to it: wrap each forwarded request in
    ``with endpoint.track(): ...`` (or call :meth:`acquire` before and :meth:`release` after, also on errors).
    The replica set reads it to drain a replica before stopping it and to sample the load for autoscaling.
    Use it from the event loop's thread only.  ``healthy`` turns False when the process exited, failed its
    health checks or is being removed; ``draining`` marks a replica that gets no new requests.
    """

    url: str
    pid: int
    port: int = 0
    #: the replica's gRPC port on the host of ``url`` (0: it opens none)
    grpc_port: int = 0
    inflight: int = 0
    healthy: bool = False
    draining: bool = False

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the replica's gRPC port (a gRPC channel's target); empty when it opens none."""
        if not self.grpc_port:
            return ""
        return f"{self.url.partition('://')[2].rpartition(':')[0]}:{self.grpc_port}"

    def acquire(self) -> None:
        self.inflight += 1

    def release(self) -> None:
        if self.inflight > 0:
            self.inflight -= 1

    @contextlib.contextmanager
    def track(self) -> Iterator[Endpoint]:
        """Count one request in flight for the duration of the ``with`` block."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()
