"""The proxy's side of one bridge connection, as a sans-IO state machine.

Inputs: bytes received (`receive_data`), the passage of time (`handle_timer`), messages the proxy
wants sent (`send`). Outputs: events (returned lists) and bytes to write (`data_to_send`). Every
input takes `now` (seconds, monotonic); nothing here reads a clock or touches a socket.

States: HELLO (waiting for the peer's HELLO) -> FEATURES (waiting for the features reply and,
on 1.3+, the port description) -> READY -> CLOSED. Misses that arrive before READY are held and
delivered right after `SwitchReady`, so the proxy always knows the datapath first.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..openflow import codec
from ..openflow.framing import (
    HEADER_LEN,
    OFP10,
    OFPBRC_BAD_TYPE,
    OFPET_BAD_REQUEST,
    OFPT13_MULTIPART_REPLY,
    OFPT_ECHO_REPLY,
    OFPT_ECHO_REQUEST,
    OFPT_ERROR,
    OFPT_FEATURES_REPLY,
    OFPT_FLOW_REMOVED,
    OFPT_HELLO,
    OFPT_PACKET_IN,
    OFPT_PORT_STATUS,
    Framer,
    Message,
    RemoteProtocolError,
    error,
    hello,
    hello_failed,
    negotiate,
    simple_message,
)
from ..openflow.packet import PacketIn, parse_packet_in, port_from_of10
from .keepalive import Due, Keepalive, SessionTiming

log = logging.getLogger(__name__)
_XID = struct.Struct("!I")

OFPP_LOCAL = 0xFFFFFFFE
OFPMP_PORT_DESC = 13
OFPMPF_REPLY_MORE = 1
MISS_SEND_LEN_FULL = 0xFFFF  # OFPCML_NO_BUFFER in 1.3; the largest length in 1.0
MAX_HELD_EVENTS = 1024  # messages kept for delivery until the handshake is done
# Controller-to-switch message types, which a switch never sends.
_REQUESTS_10 = frozenset({5, 7, 9, 13, 14, 15, 16, 18, 20})
_REQUESTS_13 = frozenset({5, 7, 9, 13, 14, 15, 16, 17, 18, 20, 22, 24, 26, 28, 29})


class State(enum.Enum):
    HELLO = "hello"
    FEATURES = "features"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PortInfo:
    port_no: int  # 32-bit numbering
    name: str
    hw_addr: str


@dataclass(frozen=True, slots=True)
class SwitchReady:
    datapath_id: int
    version: int
    n_tables: int
    n_buffers: int
    ports: dict[int, PortInfo]
    bridge_name: str  # the name of the LOCAL port, which OVS names after the bridge


@dataclass(frozen=True, slots=True)
class FlowRemoved:
    msg: Any  # os-ken OFPFlowRemoved
    raw: bytes = b""  # as received, for relaying to the controller that owns the flow


@dataclass(frozen=True, slots=True)
class PortStatus:
    reason: int  # OFPPR_ADD / DELETE / MODIFY
    port: PortInfo
    raw: bytes = b""  # as received, for relaying to controllers


@dataclass(frozen=True, slots=True)
class SwitchError:
    xid: int
    err_type: int
    code: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Unhandled:
    """A message the session does not interpret (replies, experimenter, ...): for relaying."""

    message: Message


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


Event = SwitchReady | PacketIn | FlowRemoved | PortStatus | SwitchError | Unhandled | Closed


@dataclass(slots=True)
class _Handshake:
    datapath_id: int = 0
    n_tables: int = 0
    n_buffers: int = 0
    ports: dict[int, PortInfo] = field(default_factory=dict)
    features_done: bool = False
    ports_done: bool = False


class SwitchSession:
    def __init__(self, versions: frozenset[int], timing: SessionTiming, now: float) -> None:
        if not versions:
            raise ValueError("at least one OpenFlow version must be offered")
        self.versions = versions
        self.timing = timing
        self.state = State.HELLO
        self.version: int = 0
        self.datapath_id: int | None = None
        self.close_reason: str | None = None
        self._framer = Framer()
        self._outbox: list[bytes] = [hello(versions)]
        self._xid = 0
        self._keepalive = Keepalive(timing, now)
        self._handshake = _Handshake()
        self._held: list[Event] = []
        self._xid_features = self._xid_ports = -1
        # Set by the proxy once READY: called with each raw PACKET_IN instead of an event.
        # It may raise RemoteProtocolError, which closes the session like any bad message.
        self.on_packet_in: Callable[[bytes], None] | None = None

    # ---- outputs ----

    def data_to_send(self) -> bytes:
        if not self._outbox:
            return b""
        data = b"".join(self._outbox)
        self._outbox.clear()
        return data

    def send(self, raw: bytes) -> None:
        """Queue a complete, already-encoded message for the bridge."""
        if self.state is State.CLOSED:
            return
        self._outbox.append(raw)

    def next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF or 1
        return self._xid

    def next_deadline(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        return self._keepalive.deadline(self.state is State.READY)

    # ---- inputs ----

    def handle_timer(self, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        due = self._keepalive.check(now, self.state is State.READY)
        if due is Due.HANDSHAKE_EXPIRED:
            waiting_for = "HELLO" if self.state is State.HELLO else "features reply"
            return self._close(f"no {waiting_for} within {self.timing.hello_timeout:g}s")
        if due is Due.DEAD:
            return self._close(f"silent for {self._keepalive.silence(now):.1f}s (dead peer)")
        if due is Due.PROBE:
            self._outbox.append(simple_message(self.version, OFPT_ECHO_REQUEST, self.next_xid()))
        return []

    def receive_data(self, data: bytes | bytearray, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._keepalive.received(now)
        try:
            events: list[Event] = []
            on_packet_in = self.on_packet_in
            for raw in self._framer.receive_raw(data):
                if raw[1] == OFPT_PACKET_IN and on_packet_in is not None:
                    on_packet_in(raw)  # the miss path: straight to the proxy, no event object
                    continue
                (xid,) = _XID.unpack_from(raw, 4)
                events.extend(self._handle(Message(raw[0], raw[1], xid, raw)))
                if self.state is State.CLOSED:
                    break
            return events
        except RemoteProtocolError as exc:
            return self._close(f"protocol error: {exc}")

    def close(self, reason: str) -> list[Event]:
        """End the session from our side (the transport closes the connection)."""
        if self.state is State.CLOSED:
            return []
        return self._close(reason)

    def connection_lost(self, reason: str = "connection closed by peer") -> list[Event]:
        if self.state is State.CLOSED:
            return []
        return self._close(reason)

    # ---- internals ----

    def _close(self, reason: str) -> list[Event]:
        self.state = State.CLOSED
        self.close_reason = reason
        return [Closed(reason)]

    def _handle(self, message: Message) -> list[Event]:
        if self.state is State.HELLO:
            return self._handle_hello(message)
        if message.version != self.version:  # e.g. sent in the same segment as the HELLO
            raise RemoteProtocolError(
                f"message version 0x{message.version:02x} differs from the negotiated "
                f"0x{self.version:02x}")
        msg_type = message.type
        if msg_type == OFPT_PACKET_IN:
            event: Event = parse_packet_in(self.version, message.raw)
            return self._deliver(event)
        if msg_type == OFPT_ECHO_REQUEST:
            self._outbox.append(simple_message(self.version, OFPT_ECHO_REPLY, message.xid, message.body))
            return []
        if msg_type == OFPT_ECHO_REPLY:
            return []
        if msg_type == OFPT_HELLO:
            raise RemoteProtocolError("second HELLO")
        if msg_type == OFPT_FEATURES_REPLY and message.xid == self._xid_features:
            return self._handle_features(message)
        if (
            msg_type == OFPT13_MULTIPART_REPLY
            and self.version != OFP10
            and message.xid == self._xid_ports
        ):
            return self._handle_port_desc(message)
        if msg_type == OFPT_FLOW_REMOVED:
            return self._deliver(FlowRemoved(codec.decode(message), message.raw))
        if msg_type == OFPT_PORT_STATUS:
            msg = codec.decode(message)
            return self._deliver(PortStatus(msg.reason, _port_info(msg.desc, self.version), message.raw))
        if msg_type == OFPT_ERROR:
            if len(message.raw) < HEADER_LEN + 4:
                raise RemoteProtocolError("ERROR message too short")
            err_type, code = struct.unpack_from("!HH", message.raw, HEADER_LEN)
            return self._deliver(SwitchError(message.xid, err_type, code, message.raw[HEADER_LEN + 4 :]))
        if msg_type in (_REQUESTS_10 if self.version == OFP10 else _REQUESTS_13):
            # A switch sending FLOW_MOD, PACKET_OUT, requests...: refuse it, keep the session.
            self._outbox.append(error(self.version, message.xid, OFPET_BAD_REQUEST,
                                      OFPBRC_BAD_TYPE, message.raw))
            return []
        return self._deliver(Unhandled(message))

    def _deliver(self, event: Event) -> list[Event]:
        if self.state is State.READY:
            return [event]
        if len(self._held) >= MAX_HELD_EVENTS:
            raise RemoteProtocolError(f"more than {MAX_HELD_EVENTS} messages before the handshake ended")
        self._held.append(event)
        return []

    def _handle_hello(self, message: Message) -> list[Event]:
        if message.type != OFPT_HELLO:
            raise RemoteProtocolError(f"expected HELLO, got message type {message.type}")
        version = negotiate(self.versions, message)
        if version is None:
            self._outbox.append(hello_failed(self.versions, message))
            return self._close(f"no common OpenFlow version (peer offered 0x{message.version:02x})")
        self.version = version
        self._framer.expected_version = version
        self.state = State.FEATURES
        parser = codec.parser(version)
        dp = codec.datapath(version)
        self._xid_features = self.next_xid()
        self._outbox.append(codec.serialize(parser.OFPFeaturesRequest(dp), self._xid_features))
        flags = codec.ofproto(version).OFPC_FRAG_NORMAL
        self._outbox.append(codec.serialize(parser.OFPSetConfig(dp, flags, MISS_SEND_LEN_FULL),
                                            self.next_xid()))
        if version != OFP10:
            self._xid_ports = self.next_xid()
            self._outbox.append(codec.serialize(parser.OFPPortDescStatsRequest(dp, 0),
                                                self._xid_ports))
        else:
            self._handshake.ports_done = True
        return []

    def _handle_features(self, message: Message) -> list[Event]:
        msg = codec.decode(message)
        hs = self._handshake
        hs.datapath_id = msg.datapath_id
        hs.n_tables = msg.n_tables
        hs.n_buffers = msg.n_buffers
        if self.version == OFP10:
            for port in msg.ports.values():
                info = _port_info(port, OFP10)
                hs.ports[info.port_no] = info
        hs.features_done = True
        return self._maybe_ready()

    def _handle_port_desc(self, message: Message) -> list[Event]:
        kind = _multipart_type(message.raw)  # before decoding: the proxy decodes few types
        if kind != OFPMP_PORT_DESC:
            raise RemoteProtocolError(f"multipart reply of type {kind} to a port description request")
        msg = codec.decode(message)
        for port in msg.body:
            info = _port_info(port, self.version)
            self._handshake.ports[info.port_no] = info
        if not msg.flags & OFPMPF_REPLY_MORE:
            self._handshake.ports_done = True
        return self._maybe_ready()

    def _maybe_ready(self) -> list[Event]:
        hs = self._handshake
        if self.state is not State.FEATURES or not (hs.features_done and hs.ports_done):
            return []
        self.state = State.READY
        self.datapath_id = hs.datapath_id
        local = hs.ports.get(OFPP_LOCAL)
        name = local.name if local else f"dpid-{hs.datapath_id:016x}"
        events: list[Event] = [
            SwitchReady(hs.datapath_id, self.version, hs.n_tables, hs.n_buffers, dict(hs.ports), name)
        ]
        events.extend(self._held)
        self._held.clear()
        return events


def _port_info(port: Any, version: int) -> PortInfo:
    name = port.name.decode("utf-8", "replace") if isinstance(port.name, bytes) else str(port.name)
    number = port_from_of10(port.port_no) if version == OFP10 else port.port_no
    return PortInfo(number, name.rstrip("\x00"), str(port.hw_addr))


def _multipart_type(raw: bytes) -> int | None:
    return int.from_bytes(raw[HEADER_LEN:HEADER_LEN + 2], "big") if len(raw) >= HEADER_LEN + 2 else None
