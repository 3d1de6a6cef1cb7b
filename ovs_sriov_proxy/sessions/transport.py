"""asyncio transport for bridge sessions: sockets in, SwitchSession and Proxy in the middle.

This is the only bridge-side module that touches sockets or the clock. One periodic tick drives
every session's timers (hello timeout, echo, dead peer) instead of a timer per connection, which
would cost a TimerHandle on every received segment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import cast

from ..targets import PassiveTarget
from .keepalive import SessionTiming
from .switch import SwitchSession

log = logging.getLogger(__name__)

EventSink = Callable[[SwitchSession, list], None]
TICK_SECONDS = 0.25
WRITE_HIGH_WATER = 4 * 1024 * 1024  # a bridge that stops reading is cut off past this backlog
CLOSE_GRACE_SECONDS = 5.0  # how long a closed session may take to drain before it is aborted


READ_BUFFER_BYTES = 256 * 1024


class SwitchConnection(asyncio.BufferedProtocol):
    """One bridge connection. A BufferedProtocol reads into one preallocated buffer: asyncio's
    plain Protocol allocates a fresh 256 KiB buffer per read, which bench/ measured as the
    largest single cost of a small read on these machines."""

    def __init__(self, server: SwitchServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self.session: SwitchSession | None = None
        self.peer = "?"
        self._read_buffer = bytearray(READ_BUFFER_BYTES)
        self._read_view = memoryview(self._read_buffer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "unix")
        self.session = SwitchSession(self._server.versions, self._server.timing, time.monotonic())
        self._server.connections.add(self)
        self.flush()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        session = self.session
        assert session is not None
        try:
            events = session.receive_data(bytes(self._read_view[:nbytes]), time.monotonic())
            if events:
                self._server.sink(session, events)
            self._server.after_read()
        except Exception:  # a bug must cost this one session, never the others or the process
            self._fail("handling its messages")
        self.flush()

    def _fail(self, doing: str) -> None:
        log.exception("bridge session %s: internal error while %s; closing it", self.peer, doing)
        session = self.session
        if session is not None:
            events = session.close(f"internal error while {doing}")
            try:
                self._server.sink(session, events)
            except Exception:
                log.exception("bridge session %s: error while closing", self.peer)
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self.session is not None:
            reason = f"connection lost: {exc}" if exc else "connection closed by peer"
            events = self.session.connection_lost(reason)
            if events:
                self._server.sink(self.session, events)

    def tick(self, now: float) -> None:
        session = self.session
        if session is None:
            return
        deadline = session.next_deadline()
        if deadline is not None and now >= deadline:
            events = session.handle_timer(now)
            if events:
                self._server.sink(session, events)
        self.flush()

    def flush(self) -> None:
        transport = self._transport
        session = self.session
        if transport is None or session is None or transport.is_closing():
            return
        data = session.data_to_send()
        if data:
            transport.write(data)
        if session.close_reason is not None:
            log.info("bridge session %s closed: %s", self.peer, session.close_reason)
            transport.close()  # sends what is queued (e.g. an ERROR) first...
            # ...unless the peer does not read: then its buffers must not live on.
            asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, transport.abort)
        elif transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            log.warning("bridge session %s is not reading; closing it", self.peer)
            events = session.connection_lost("write backlog exceeded (peer not reading)")
            self._server.sink(session, events)
            transport.abort()


class SwitchServer:
    """Listens on the proxy's passive targets and runs a SwitchSession per connection."""

    def __init__(self, targets: list[PassiveTarget], versions: frozenset[int],
                 timing: SessionTiming, sink: EventSink,
                 tls: ssl.SSLContext | None = None) -> None:
        self.targets = targets
        self.versions = versions
        self.timing = timing
        self.sink = sink
        self.tls = tls
        self.connections: set[SwitchConnection] = set()
        # Called after each read from any bridge has been handled: lets work queued for other
        # connections (misses for controllers) go out once per read, not once per message.
        self.after_read: Callable[[], None] = lambda: None
        self._servers: list[asyncio.Server] = []
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for target in self.targets:
            if target.kind == "unix":
                assert target.path is not None
                if os.path.exists(target.path):
                    os.unlink(target.path)  # a stale socket from an earlier run
                server = await loop.create_unix_server(lambda: SwitchConnection(self), target.path)
            else:
                context = self.tls if target.kind == "ssl" else None
                if target.kind == "ssl" and context is None:
                    raise ValueError(f"{target}: pssl needs TLS settings")
                assert target.port is not None
                server = await loop.create_server(lambda: SwitchConnection(self), target.host,
                                                  target.port, ssl=context, reuse_address=True)
            self._servers.append(server)
            log.info("listening for bridges on %s", self.describe(server, target))
        self._ticker = asyncio.create_task(self._tick_forever(), name="session-timers")

    @staticmethod
    def describe(server: asyncio.Server, target: PassiveTarget) -> str:
        if target.kind == "unix":
            return str(target)
        host, port = server.sockets[0].getsockname()[:2]
        return f"p{target.kind}:{port}:{host}"

    def bound_ports(self) -> list[int]:
        return [s.sockets[0].getsockname()[1] for s in self._servers
                if s.sockets and s.sockets[0].family != socket.AF_UNIX]

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            for connection in list(self.connections):
                try:
                    connection.tick(now)
                except Exception:  # one session's bug must not stop every session's timers
                    connection._fail("running its timers")

    def flush_all(self) -> None:
        for connection in list(self.connections):
            connection.flush()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            if connection._transport is not None:
                connection._transport.close()
        for server in self._servers:
            await server.wait_closed()
        for target in self.targets:
            if target.kind == "unix" and target.path and os.path.exists(target.path):
                os.unlink(target.path)
