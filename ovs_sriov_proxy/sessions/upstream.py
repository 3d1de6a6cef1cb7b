"""asyncio transport for upstream controllers: one link per (controller, bridge), kept connected.

A `ControllerLink` connects to its controller, runs a `ControllerSession` (the proxy playing the
switch) over the connection, and when the connection fails or drops, connects again with
exponential backoff (tenacity computes the delays; the session state starts afresh, as a switch
reconnecting would). Events go to the owner's callback; nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import cast

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from ..targets import ActiveTarget
from .controller import ControllerClosed, ControllerSession, DatapathView, Event
from .keepalive import SessionTiming

log = logging.getLogger(__name__)

LinkEvents = Callable[["ControllerLink", list[Event]], None]
TICK_SECONDS = 0.25


# Smaller than a bridge connection's buffer: there is one link per (controller, bridge), and a
# controller's messages are small; a bigger burst only takes more than one read.
READ_BUFFER_BYTES = 64 * 1024


class _Connection(asyncio.BufferedProtocol):
    """Reads into one preallocated buffer, as SwitchConnection does: asyncio's plain Protocol
    allocates a fresh 256 KiB buffer per read, which cost about 80 µs of every controller's
    answer on the miss path (bench/cachehit.py, latency mode)."""

    def __init__(self, link: ControllerLink, session: ControllerSession) -> None:
        self.link = link
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self._read_view = memoryview(bytearray(READ_BUFFER_BYTES))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.flush()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._read_view[:nbytes])
        self.link._deliver(self.session.receive_data(data, time.monotonic()))
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._deliver(self.session.connection_lost(
            f"connection lost: {exc}" if exc else "connection closed by the controller"))
        if not self.lost.done():
            self.lost.set_result(None)

    def flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = self.session.data_to_send()
        if data:
            transport.write(data)
        if self.session.close_reason is not None:
            transport.close()


class ControllerLink:
    def __init__(self, name: str, target: ActiveTarget, versions: frozenset[int],
                 view: DatapathView, timing: SessionTiming, on_events: LinkEvents, *,
                 tls: ssl.SSLContext | None = None, initial_backoff: float = 0.1,
                 max_backoff: float = 8.0, prefer: int | None = None) -> None:
        if target.uses_tls and tls is None:
            raise ValueError(f"{target}: an ssl target needs a TLS context")
        self.name = name
        self.target = target
        self.versions = versions
        self.view = view
        self.timing = timing
        self.on_events = on_events
        self.tls = tls
        self.prefer = prefer  # see ControllerSession
        self._wait = wait_exponential(multiplier=initial_backoff, max=max_backoff)
        self._connection: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.connects = 0  # successful connections so far (reconnects = connects - 1)

    @property
    def session(self) -> ControllerSession | None:
        connection = self._connection
        return connection.session if connection is not None else None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"link-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()

    def flush(self) -> None:
        if self._connection is not None:
            self._connection.flush()

    def _deliver(self, events: list[Event]) -> None:
        if events:
            self.on_events(self, events)

    async def _run(self) -> None:
        while True:
            # A fresh backoff for every outage: the first attempt is immediate, then the waits
            # grow exponentially up to max_backoff, for as long as the controller is away.
            async for attempt in AsyncRetrying(wait=self._wait,
                                               retry=retry_if_exception_type(OSError),
                                               before_sleep=self._log_failure):
                with attempt:
                    session, connection = await self._connect()
            await self._serve(session, connection)

    def _log_failure(self, state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        log.info("controller %s (%s): cannot connect (attempt %d): %s", self.name, self.target,
                 state.attempt_number, error)

    async def _connect(self) -> tuple[ControllerSession, _Connection]:
        loop = asyncio.get_running_loop()
        session = ControllerSession(self.name, self.versions, self.view, self.timing,
                                    time.monotonic(), prefer=self.prefer)
        target = self.target

        def factory() -> _Connection:
            return _Connection(self, session)

        if target.kind == "unix":
            assert target.path is not None
            _, connection = await loop.create_unix_connection(factory, target.path)
        else:
            assert target.host is not None and target.port is not None
            _, connection = await loop.create_connection(
                factory, target.host, target.port, ssl=self.tls if target.uses_tls else None)
        return session, connection

    async def _serve(self, session: ControllerSession, connection: _Connection) -> None:
        self._connection = connection
        self.connects += 1
        log.info("controller %s (%s): connected", self.name, self.target)
        try:
            while not connection.lost.done():
                await asyncio.wait([connection.lost], timeout=TICK_SECONDS)
                deadline = session.next_deadline()
                if deadline is not None and time.monotonic() >= deadline:
                    self._deliver(session.handle_timer(time.monotonic()))
                connection.flush()
        finally:
            if connection.transport is not None and not connection.transport.is_closing():
                connection.transport.close()
            if session.close_reason is None:
                self._deliver([ControllerClosed("link stopped")])
