"""The runtime's HTTP/1.1 protocol: OIP infer requests served by the protocol itself, the rest by the app.

uvicorn hands every request to the app through its ASGI objects: a scope, a request-response cycle with its
event, ``receive`` and ``send`` coroutines, message dictionaries, and an answer head checked header by header.
For a small model that machinery costs more than the prediction.  Here an OIP infer request
(``POST /v2/models/{name}[/versions/{v}]/infer``) takes a shorter lane: its body is held as it arrives
(:class:`~mlport.protocols.http.early.Held`), and once it is all in, a task runs it through
:func:`mlport.protocols.http.fast.infer` (the same call, codec, errors and headers as the ASGI route) and
writes the answer, head and body, in one write.  While the server's gates have refused requests lately, a
request its model would refuse is refused before it is read (:mod:`mlport.protocols.http.early`).

What the lane keeps from uvicorn's protocol: keep-alive and its timeout (one idle timer per connection, set
again only when it fires, instead of a timer made and cancelled per request), ``Connection: close`` and HTTP/1.0,
requests pipelined behind an answer still being written (they wait for it, then go to the app), the server's
default headers (``date``), flow control on writes, graceful shutdown (the answer is written, then the
connection closed) and the request counted; a client that goes away ends a queued request as the app's
``http.disconnect`` does.

The app gets: any other request, a body larger than :data:`LANE_MAX_BYTES` or the server's body limit (the
app refuses it with 413), a request that expects ``100 Continue``, an upgrade, one pipelined behind another,
every request while uvicorn writes its text access log (which only the app's answers reach), and all of them
when the app is mounted under a root path or uvicorn limits concurrency.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlport.protocols.http.early import Held, answer_bytes, infer_target, refusal_answer
from mlport.protocols.http.fast import InferHead, answered, failed
from mlport.protocols.http.routes_oip import run_infer
from mlport.protocols.http.state import AppState
from mlport.protocols.http.wire import CoalescingHttpProtocol, write_now
from mlport.protocols.refusal import would_refuse

__all__ = ["LANE_MAX_BYTES", "RuntimeHttpProtocol", "runtime_protocol"]

#: Bodies held for the lane, at most; a larger one goes to the app as it comes.
LANE_MAX_BYTES = 1024 * 1024
#: URLs whose target (model and version, or none) is remembered, per server.
_MAX_TARGETS = 256
_DISCONNECT = {"type": "http.disconnect"}


class _Lane:
    """The request the lane serves, as uvicorn's protocol sees its current cycle: whether its answer is complete,
    whether the client left (``disconnected``, then ``message_event.set()``), whether the connection is kept."""

    __slots__ = ("disconnected", "gone", "keep_alive", "response_complete", "task")

    def __init__(self, keep_alive: bool) -> None:
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = keep_alive
        self.gone: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def message_event(self) -> _Lane:
        """What uvicorn sets when the connection is lost: the lane itself (a property: an attribute would make
        each lane a reference cycle, left to the garbage collector with its task)."""
        return self

    def set(self) -> None:
        """The connection was lost (uvicorn sets its cycle's event)."""
        gone = self.gone
        if gone is not None and not gone.done():
            gone.set_result(None)

    async def receive(self) -> dict[str, Any]:
        """As the ASGI ``receive`` after the body: returns once the client went away."""
        if not self.disconnected:
            if self.gone is None:
                self.gone = asyncio.get_running_loop().create_future()
            await self.gone
        return _DISCONNECT


class RuntimeHttpProtocol(CoalescingHttpProtocol):
    """The lane and early refusals (see the module's description); :attr:`state` is set by
    :func:`runtime_protocol`."""

    state: AppState | None = None
    #: The targets of URLs seen (shared by the connections of one server: see :func:`runtime_protocol`).
    _targets: dict[bytes, tuple[str, str, str | None] | None] = {}

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._held: Held | None = None
        #: When the connection became idle (its last answer written), ``None`` while a request is under way.
        self._idle_from: float | None = None
        self._idle_check: asyncio.TimerHandle | None = None
        #: The server is stopping: the request being read is answered, then the connection closed.
        self._stopping = False
        state = self.state
        self._lane_open = state is not None and not self.root_path and self.limit_concurrency is None
        self._hold_max = min(LANE_MAX_BYTES, state.limits.max_body_bytes) if state is not None else 0

    # -- httptools callbacks ---------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        # uvicorn's ASGI scope is made only for a request that goes to the app (see _scope)
        self._idle_from = None
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        state = self.state
        if state is not None and self._may_hold():
            held = self._target(self.url)
            if held is not None and (self._lane_open or self._refusing(state, held)):
                self._held = held
                return
        self._scope()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        held = self._held
        if held is None:
            super().on_body(body)
            return
        held.chunks.append(body)
        held.size += len(body)
        if held.size > self._hold_max:
            self._hand_on(held)

    def on_message_complete(self) -> None:
        held = self._held
        if held is None:
            super().on_message_complete()
            return
        self._held = None
        state = self.state
        assert state is not None
        keep_alive = self._keep_alive() and not self._stopping
        if state.service.manager.admission.refusals.lately:
            answer = refusal_answer(state.service, held, self.headers, self.server_state.default_headers,
                                    keep_alive)
            if answer is not None:
                self._write_answer(answer, keep_alive)
                return
        if not self._lane_open:
            self._hand_on(held)
            super().on_message_complete()
            return
        lane = _Lane(keep_alive)
        self.cycle = lane  # type: ignore[assignment]  # what uvicorn's protocol looks at, duck-typed
        lane.task = task = self.loop.create_task(self._serve(state, lane, held, InferHead(self.headers, state)))
        self.tasks.add(task)  # the server waits for it when it stops; it takes itself out as it ends

    # -- inside ----------------------------------------------------------------------------------------------
    def _may_hold(self) -> bool:
        cycle = self.cycle
        return (self.parser.get_method() == b"POST" and not self.expect_100_continue and not self.pipeline
                and (cycle is None or cycle.response_complete) and not self.access_log
                and not self.parser.should_upgrade())

    @staticmethod
    def _refusing(state: AppState, held: Held) -> bool:
        return state.service.manager.admission.refusals.lately and would_refuse(state.service, held.name,
                                                                                 held.version)

    def _scope(self) -> None:
        """uvicorn's ASGI scope of the request whose head was just read (its own ``on_message_begin``)."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def _target(self, url: bytes) -> Held | None:
        """A :class:`Held` for an OIP infer URL (the model and version read from a URL once), else ``None``."""
        targets = self._targets
        if url in targets:
            known = targets[url]
        else:
            if len(targets) >= _MAX_TARGETS:
                targets.clear()
            known = targets[url] = infer_target(url)
        return None if known is None else Held(*known)

    def _hand_on(self, held: Held) -> None:
        """The held request to the app, as if its head had just been read and its body were arriving."""
        self._held = None
        self._scope()
        super().on_headers_complete()
        if self._stopping:
            self.cycle.keep_alive = False
        for chunk in held.chunks:
            super().on_body(chunk)

    def _keep_alive(self) -> bool:
        return self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()

    async def _serve(self, state: AppState, lane: _Lane, held: Held, head: InferHead) -> None:
        try:
            try:
                encoded = await run_infer(state, held.name, held.version, held.body(), *head.arguments(),
                                          lane.receive)
                status, headers, payload = 200, answered(encoded), encoded.body
            except Exception as exc:
                status, headers, payload = failed(exc, head, held.path)
            except BaseException:
                lane.response_complete = True
                self.transport.close()  # cancelled (the server stopping): no answer, as uvicorn would end it
                raise
            if self.flow.write_paused and not lane.disconnected:
                await self.flow.drain()
            lane.response_complete = True
            if lane.disconnected:
                return
            self._write_answer(answer_bytes(status, self.server_state.default_headers, headers, payload,
                                            lane.keep_alive), lane.keep_alive)
        finally:
            self.tasks.discard(lane.task)
            lane.task = None

    def _write_answer(self, answer: bytes, keep_alive: bool) -> None:
        write_now(self.transport, answer)
        if not keep_alive:
            self.transport.close()
        self._answered()

    # -- after an answer: as uvicorn's on_response_complete, with one keep-alive timer per connection ----------
    def _answered(self) -> None:
        """The answer is out: counted, reading resumed, the next pipelined request started, else the
        connection idle from now (closed once idle for uvicorn's keep-alive timeout)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_from = self.loop.time()
        if self._idle_check is None:
            self._idle_check = self.loop.call_at(self._idle_from + self.timeout_keep_alive, self._idle_checked)

    def _idle_checked(self) -> None:
        """Close the connection when it has been idle for the keep-alive timeout, else look again when it may
        be; a request under way (it began after the last answer) is not idle."""
        self._idle_check = None
        idle_from = self._idle_from
        if idle_from is None or self.transport.is_closing():
            return  # a request began since: its answer looks again
        closes_at = idle_from + self.timeout_keep_alive
        if self.loop.time() >= closes_at:
            self.transport.close()
        else:
            self._idle_check = self.loop.call_at(closes_at, self._idle_checked)

    def shutdown(self) -> None:
        """The server is stopping: a request whose body is still coming is read and answered first."""
        if self._held is not None:
            self._stopping = True
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None
        super().connection_lost(exc)


def runtime_protocol(state: AppState) -> type[RuntimeHttpProtocol]:
    """The protocol class for uvicorn (``Config(http=...)``) that serves ``state``'s OIP infer requests."""
    return type("RuntimeHttpProtocol", (RuntimeHttpProtocol,), {"state": state, "_targets": {}})
