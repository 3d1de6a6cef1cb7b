"""The proxy's side of one upstream controller connection for one bridge: the proxy plays the switch.

Sans-IO, like sessions/switch.py: bytes and `now` in, events and bytes out. What only concerns
this controller is answered here and never reaches the bridge: HELLO, ECHO, FEATURES_REQUEST,
GET_CONFIG, SET_CONFIG (miss_send_len), SET_ASYNC and GET_ASYNC (1.3), ROLE_REQUEST. Keeping them
per controller is what stops one controller (Faucet turns table-miss packet-ins off with
SET_ASYNC) from silencing misses for the proxy or for the others. Everything that acts on the
bridge — FLOW_MOD, PACKET_OUT, GROUP_MOD, METER_MOD, PORT_MOD, TABLE_MOD, multipart requests,
BARRIER_REQUEST, experimenter — comes out as a `Relay` event for the proxy to translate, map
xids and forward; PACKET_OUT is decoded as well, since the proxy correlates it with the miss it
answers. Messages the controller should hear (PACKET_IN, PORT_STATUS, FLOW_REMOVED) are offered
through `send_*` methods that apply this controller's role and async masks.

Not wired to the proxy yet: groundwork for the northbound issue.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from ..openflow import switch_side
from ..openflow.framing import (
    OFP10,
    OFP13,
    OFPBRC_BAD_LEN,
    OFPBRC_BAD_TYPE,
    OFPET_BAD_REQUEST,
    OFPT_ECHO_REPLY,
    OFPT_ECHO_REQUEST,
    OFPT_FEATURES_REQUEST,
    OFPT_GET_CONFIG_REQUEST,
    OFPT_HELLO,
    OFPT_PACKET_OUT,
    OFPT_SET_CONFIG,
    Framer,
    Message,
    RemoteProtocolError,
    bitmap_versions,
    error,
    hello,
    hello_failed,
    negotiate,
    simple_message,
)
from ..openflow.switch_side import PacketOut, PortDesc
from .keepalive import Due, Keepalive, SessionTiming

OFPT_ROLE_REQUEST = 24
OFPT_GET_ASYNC_REQUEST = 26
OFPT_GET_ASYNC_REPLY = 27
OFPT_SET_ASYNC = 28
OFPCR_ROLE_NOCHANGE, OFPCR_ROLE_EQUAL, OFPCR_ROLE_MASTER, OFPCR_ROLE_SLAVE = 0, 1, 2, 3
OFPET_ROLE_REQUEST_FAILED, OFPRRFC_STALE = 11, 0
# Async property numbering of OpenFlow 1.4 (1.3's fixed masks are mapped onto it).
PACKET_IN_SLAVE, PACKET_IN_MASTER = 0, 1
PORT_STATUS_SLAVE, PORT_STATUS_MASTER = 2, 3
FLOW_REMOVED_SLAVE, FLOW_REMOVED_MASTER = 4, 5
# The spec's defaults: a master/equal controller hears no-match and action packet-ins, every
# port status and flow removal; a slave only port status.
DEFAULT_ASYNC = {PACKET_IN_SLAVE: 0, PACKET_IN_MASTER: 0b11, PORT_STATUS_SLAVE: 0b111,
                 PORT_STATUS_MASTER: 0b111, FLOW_REMOVED_SLAVE: 0, FLOW_REMOVED_MASTER: 0b1111}
DEFAULT_MISS_SEND_LEN = 128
_ASYNC13 = struct.Struct("!6I")


class State(enum.Enum):
    HELLO = "hello"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class DatapathView:
    """What a controller is shown of the bridge behind the proxy."""

    datapath_id: int
    n_tables: int
    n_buffers: int
    capabilities: int
    ports: tuple[PortDesc, ...] = ()


@dataclass(frozen=True, slots=True)
class ControllerReady:
    version: int


@dataclass(frozen=True, slots=True)
class Relay:
    """A message for the bridge (xid still the controller's); `packet_out` when it is one."""

    message: Message
    packet_out: PacketOut | None = None


@dataclass(frozen=True, slots=True)
class ControllerClosed:
    reason: str


Event = ControllerReady | Relay | ControllerClosed

# Messages for the bridge, by type: experimenter/vendor 4, PACKET_OUT 13, FLOW_MOD 14, then
# 1.0: PORT_MOD 15, STATS_REQUEST 16, BARRIER_REQUEST 18;
# 1.3+: GROUP_MOD 15, PORT_MOD 16, TABLE_MOD 17, MULTIPART_REQUEST 18, BARRIER_REQUEST 20,
# METER_MOD 29.
_RELAYED_10 = frozenset({4, 13, 14, 15, 16, 18})
_RELAYED = frozenset({4, 13, 14, 15, 16, 17, 18, 20, 29})
OFPT_EXPERIMENTER = 4
OFPBRC_BAD_EXP_TYPE = 4  # 1.0 calls it OFPBRC_BAD_SUBTYPE; same code
OFPBRC_IS_SLAVE = 10
OFPBRC10_EPERM = 5
_DENIED_TO_SLAVES_10 = frozenset({13, 14, 15})  # PACKET_OUT, FLOW_MOD, PORT_MOD
# What a controller in the slave role may not send (1.2+): packets and state changes. PACKET_OUT,
# FLOW_MOD, GROUP_MOD, PORT_MOD, TABLE_MOD, METER_MOD, BUNDLE_CONTROL, BUNDLE_ADD_MESSAGE.
_DENIED_TO_SLAVES = frozenset({13, 14, 15, 16, 17, 29, 33, 34})
ONF_EXPERIMENTER, ONF_BUNDLE_TYPES = 0x4F4E4600, frozenset({2300, 2301})
_RELAYED_14 = _RELAYED | {33, 34}  # + BUNDLE_CONTROL, BUNDLE_ADD_MESSAGE (northbound unwraps)
# Nicira's role and async config, answered per controller like their standard equivalents (a
# 1.0 controller has no other), and its controller id, accepted and kept to itself: relayed,
# they would act on the proxy's own connection to the bridge.
NX_VENDOR = 0x00002320
NXT_ROLE_REQUEST, NXT_ROLE_REPLY, NXT_SET_ASYNC_CONFIG, NXT_SET_CONTROLLER_ID = 10, 11, 19, 20
_NX_ANSWERED = frozenset({NXT_ROLE_REQUEST, NXT_SET_ASYNC_CONFIG, NXT_SET_CONTROLLER_ID})
NX_ROLE_TO_OFP = {0: OFPCR_ROLE_EQUAL, 1: OFPCR_ROLE_MASTER, 2: OFPCR_ROLE_SLAVE}  # OTHER...
OFP_ROLE_TO_NX = {role: nx for nx, role in NX_ROLE_TO_OFP.items()}
_NX_ASYNC = struct.Struct("!6I")  # packet_in, port_status, flow_removed: [master, slave] each
# Experimenter messages that are refused, not relayed: they would change the proxy's own
# connection to the bridge (packet-in and flow formats, the property form of async config), or
# install flows past cookie tags, priority bands and id slices (Nicira flow-mods). (Bundles,
# ONF's for 1.3 too, are relayed: the northbound treats each message in them as if it came
# alone.)
_REFUSED_EXPERIMENTER = {
    NX_VENDOR: frozenset({
        12,  # NXT_SET_FLOW_FORMAT
        13,  # NXT_FLOW_MOD
        15,  # NXT_FLOW_MOD_TABLE_ID
        16,  # NXT_SET_PACKET_IN_FORMAT
        27,  # NXT_SET_ASYNC_CONFIG2
        28,  # NXT_RESUME: of a continuation the proxy never passed on
    }),
}


@dataclass(slots=True)
class ControllerState:
    """What this controller configured for itself (never applied to the bridge)."""

    miss_send_len: int = DEFAULT_MISS_SEND_LEN
    config_flags: int = 0
    role: int = OFPCR_ROLE_EQUAL
    generation_id: int | None = None
    async_masks: dict[int, int] = field(default_factory=lambda: dict(DEFAULT_ASYNC))


HELLO_GRACE = 1.0  # seconds the proxy waits for a controller's HELLO before sending its own


class ControllerSession:
    def __init__(self, name: str, versions: frozenset[int], view: DatapathView,
                 timing: SessionTiming, now: float, prefer: int | None = None) -> None:
        """`prefer`: a version to pick whenever the controller offers it (the bridge's, which
        needs no translation). The proxy's HELLO then waits for the controller's and offers
        the chosen version alone, since each side otherwise settles on the highest common."""
        self.name = name
        self.versions = versions
        self.prefer = prefer
        self.view = view
        self.timing = timing
        self.state = State.HELLO
        self.version = 0
        self.settings = ControllerState()
        self.close_reason: str | None = None
        self._framer = Framer()
        self._outbox: list[bytes] = [] if prefer is not None else [hello(versions)]
        # A controller that waits for the switch's HELLO first gets ours (every version) after
        # HELLO_GRACE, and the usual highest-common negotiation.
        self._hello_grace: float | None = now + HELLO_GRACE if prefer is not None else None
        self._keepalive = Keepalive(timing, now)
        self._xid = 0

    # ---- outputs ----

    def data_to_send(self) -> bytes:
        data = b"".join(self._outbox)
        self._outbox.clear()
        return data

    def send(self, raw: bytes) -> None:
        if self.state is State.READY:
            self._outbox.append(raw)

    def next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF or 1
        return self._xid

    def next_deadline(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        deadline = self._keepalive.deadline(self.state is State.READY)
        if self._hello_grace is not None and (deadline is None or self._hello_grace < deadline):
            return self._hello_grace
        return deadline

    # ---- what the controller hears, filtered by its role and async masks ----

    def may_answer(self) -> bool:
        """Whether it may answer a miss: a slave's answer would be refused (IS_SLAVE)."""
        return self.settings.role != OFPCR_ROLE_SLAVE

    def wants_packet_in(self, reason: int) -> bool:
        return self.state is State.READY and self._wants(PACKET_IN_SLAVE, PACKET_IN_MASTER, reason)

    def _wants(self, slave_kind: int, master_kind: int, reason: int) -> bool:
        kind = slave_kind if self.settings.role == OFPCR_ROLE_SLAVE else master_kind
        return bool(self.settings.async_masks.get(kind, 0) >> reason & 1)

    def send_packet_in(self, *, buffer_id: int, total_len: int, in_port: int, reason: int,
                       data: bytes, table_id: int = 0, cookie: int = 0) -> bool:
        """Offer a miss; False if this controller asked not to get it (role or async mask)."""
        if self.state is not State.READY or not self._wants(PACKET_IN_SLAVE, PACKET_IN_MASTER, reason):
            return False
        if buffer_id != 0xFFFFFFFF and self.settings.miss_send_len < len(data):
            data = data[: self.settings.miss_send_len]  # the rest stays in the proxy's buffer
        self._outbox.append(switch_side.packet_in(
            self.version, buffer_id=buffer_id, total_len=total_len, in_port=in_port,
            reason=reason, table_id=table_id, cookie=cookie, data=data, xid=0))
        return True

    def send_port_status(self, reason: int, port: PortDesc) -> bool:
        if self.state is not State.READY or not self._wants(PORT_STATUS_SLAVE, PORT_STATUS_MASTER, reason):
            return False
        self._outbox.append(switch_side.port_status(self.version, reason=reason, port=port))
        return True

    def wants_port_status(self, reason: int) -> bool:
        return self.state is State.READY and self._wants(PORT_STATUS_SLAVE, PORT_STATUS_MASTER, reason)

    def wants_flow_removed(self, reason: int) -> bool:
        return self.state is State.READY and self._wants(FLOW_REMOVED_SLAVE, FLOW_REMOVED_MASTER, reason)

    # ---- inputs ----

    def handle_timer(self, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        if self._hello_grace is not None and now >= self._hello_grace:
            self._hello_grace = None
            self._outbox.append(hello(self.versions))
        due = self._keepalive.check(now, self.state is State.READY)
        if due is Due.HANDSHAKE_EXPIRED:
            return self._close(f"no HELLO within {self.timing.hello_timeout:g}s")
        if due is Due.DEAD:
            return self._close(f"silent for {self._keepalive.silence(now):.1f}s (dead peer)")
        if due is Due.PROBE:
            self._outbox.append(simple_message(self.version, OFPT_ECHO_REQUEST, self.next_xid()))
        return []

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._keepalive.received(now)
        events: list[Event] = []
        try:
            for message in self._framer.receive_data(data):
                events.extend(self._handle(message))
                if self.state is State.CLOSED:
                    break
        except RemoteProtocolError as exc:
            events.extend(self._close(f"protocol error: {exc}"))
        return events

    def connection_lost(self, reason: str = "connection closed by peer") -> list[Event]:
        return [] if self.state is State.CLOSED else self._close(reason)

    # ---- internals ----

    def _close(self, reason: str) -> list[Event]:
        self.state = State.CLOSED
        self.close_reason = reason
        return [ControllerClosed(reason)]

    def _refuse(self, message: Message, err_type: int, code: int) -> list[Event]:
        self._outbox.append(error(self.version, message.xid, err_type, code, message.raw))
        return []

    def _handle(self, message: Message) -> list[Event]:
        if self.state is State.HELLO:
            if message.type != OFPT_HELLO:
                raise RemoteProtocolError(f"expected HELLO, got message type {message.type}")
            version = negotiate(self.versions, message)
            if self.prefer is not None and self._hello_grace is not None:  # ours not sent yet
                self._hello_grace = None
                offered = bitmap_versions(message)
                if offered is not None and self.prefer in offered & self.versions:
                    version = self.prefer
                if version is not None:
                    self._outbox.append(hello(frozenset({version})))
            if version is None:
                self._outbox.append(hello_failed(self.versions, message))
                return self._close(f"no common OpenFlow version (controller offered 0x{message.version:02x})")
            self.version = version
            self._framer.expected_version = version
            self.state = State.READY
            return [ControllerReady(version)]
        if message.version != self.version:
            raise RemoteProtocolError(f"message version 0x{message.version:02x} differs from the "
                                      f"negotiated 0x{self.version:02x}")
        version, msg_type, xid = self.version, message.type, message.xid
        if (self.settings.role == OFPCR_ROLE_SLAVE
                and _denied_to_slaves(version, msg_type, message.raw)):
            # As a switch would: a slave may read, not send packets or change state. (1.0 has
            # no IS_SLAVE code: its permissions error.)
            return self._refuse(message, OFPET_BAD_REQUEST,
                                OFPBRC10_EPERM if version == OFP10 else OFPBRC_IS_SLAVE)
        if msg_type == OFPT_PACKET_OUT:  # first: the answer to nearly every miss
            return [Relay(message, switch_side.decode_packet_out(version, message.raw))]
        if msg_type == OFPT_ECHO_REQUEST:
            self._outbox.append(simple_message(version, OFPT_ECHO_REPLY, xid, message.body))
        elif msg_type in (OFPT_ECHO_REPLY, OFPT_HELLO):
            pass
        elif msg_type == OFPT_FEATURES_REQUEST:
            view = self.view
            self._outbox.append(switch_side.features_reply(
                version, datapath_id=view.datapath_id, n_buffers=view.n_buffers,
                n_tables=view.n_tables, capabilities=view.capabilities,
                ports=view.ports if version == OFP10 else (), xid=xid))
        elif msg_type == OFPT_GET_CONFIG_REQUEST:
            self._outbox.append(switch_side.get_config_reply(
                version, flags=self.settings.config_flags,
                miss_send_len=self.settings.miss_send_len, xid=xid))
        elif msg_type == OFPT_SET_CONFIG:
            config = switch_side.decode_set_config(version, message.raw)
            self.settings.config_flags = config.flags
            self.settings.miss_send_len = config.miss_send_len
        elif version != OFP10 and msg_type == OFPT_ROLE_REQUEST:
            return self._role_request(message)
        elif version != OFP10 and msg_type == OFPT_SET_ASYNC:
            self.settings.async_masks.update(switch_side.decode_set_async(version, message.raw).masks)
        elif version == OFP13 and msg_type == OFPT_GET_ASYNC_REQUEST:
            masks = self.settings.async_masks
            self._outbox.append(simple_message(version, OFPT_GET_ASYNC_REPLY, xid, _ASYNC13.pack(
                masks[PACKET_IN_MASTER], masks[PACKET_IN_SLAVE], masks[PORT_STATUS_MASTER],
                masks[PORT_STATUS_SLAVE], masks[FLOW_REMOVED_MASTER], masks[FLOW_REMOVED_SLAVE])))
        elif msg_type == OFPT_EXPERIMENTER and _nicira_subtype(message.raw) in _NX_ANSWERED:
            return self._nicira(message)
        elif msg_type == OFPT_EXPERIMENTER and _refused_experimenter(message.raw):
            return self._refuse(message, OFPET_BAD_REQUEST, OFPBRC_BAD_EXP_TYPE)
        elif msg_type in (_RELAYED_10 if version == OFP10 else
                          _RELAYED if version == OFP13 else _RELAYED_14):
            return [Relay(message)]
        else:
            return self._refuse(message, OFPET_BAD_REQUEST, OFPBRC_BAD_TYPE)
        return []

    def _nicira(self, message: Message) -> list[Event]:
        """Nicira's role request, async config and controller id, for this controller only."""
        raw, settings = message.raw, self.settings
        subtype = _nicira_subtype(raw)
        if subtype == NXT_SET_CONTROLLER_ID:
            return []  # the proxy routes packet-ins itself (cookie tags): nothing to apply
        if subtype == NXT_ROLE_REQUEST:
            if len(raw) != 20 or struct.unpack_from("!I", raw, 16)[0] not in NX_ROLE_TO_OFP:
                return self._refuse(message, OFPET_BAD_REQUEST, OFPBRC_BAD_LEN)
            settings.role = NX_ROLE_TO_OFP[struct.unpack_from("!I", raw, 16)[0]]
            self._outbox.append(struct.pack("!BBHIIII", self.version, OFPT_EXPERIMENTER, 20,
                                            message.xid, NX_VENDOR, NXT_ROLE_REPLY,
                                            OFP_ROLE_TO_NX[settings.role]))
            return []
        if len(raw) != 16 + _NX_ASYNC.size:  # NXT_SET_ASYNC_CONFIG
            return self._refuse(message, OFPET_BAD_REQUEST, OFPBRC_BAD_LEN)
        pin_m, pin_s, ps_m, ps_s, fr_m, fr_s = _NX_ASYNC.unpack_from(raw, 16)
        settings.async_masks.update({
            PACKET_IN_MASTER: pin_m, PACKET_IN_SLAVE: pin_s, PORT_STATUS_MASTER: ps_m,
            PORT_STATUS_SLAVE: ps_s, FLOW_REMOVED_MASTER: fr_m, FLOW_REMOVED_SLAVE: fr_s})
        return []

    def _role_request(self, message: Message) -> list[Event]:
        request = switch_side.decode_role_request(self.version, message.raw)
        settings = self.settings
        if request.role in (OFPCR_ROLE_MASTER, OFPCR_ROLE_SLAVE):
            previous = settings.generation_id
            # Stale when (generation_id - cached) is negative as a signed 64-bit number.
            if previous is not None and ((request.generation_id - previous) % (1 << 64)) >> 63:
                return self._refuse(message, OFPET_ROLE_REQUEST_FAILED, OFPRRFC_STALE)
            settings.generation_id = request.generation_id
        if request.role != OFPCR_ROLE_NOCHANGE:
            settings.role = request.role
        self._outbox.append(switch_side.role_reply(
            self.version, settings.role, settings.generation_id or 0, message.xid))
        return []


def _nicira_subtype(raw: bytes) -> int | None:
    if len(raw) < 16 or struct.unpack_from("!I", raw, 8)[0] != NX_VENDOR:
        return None
    return int(struct.unpack_from("!I", raw, 12)[0])


def _refused_experimenter(raw: bytes) -> bool:
    """An experimenter (1.0: vendor) message the proxy must not relay (_REFUSED_EXPERIMENTER)."""
    if len(raw) < 16:
        return False  # too short to name a subtype: the bridge answers it
    experimenter, subtype = struct.unpack_from("!II", raw, 8)
    return subtype in _REFUSED_EXPERIMENTER.get(experimenter, ())


def _denied_to_slaves(version: int, msg_type: int, raw: bytes) -> bool:
    if msg_type in (_DENIED_TO_SLAVES_10 if version == OFP10 else _DENIED_TO_SLAVES):
        return True
    if msg_type != OFPT_EXPERIMENTER or len(raw) < 16:
        return False
    experimenter, exp_type = struct.unpack_from("!II", raw, 8)
    return experimenter == ONF_EXPERIMENTER and exp_type in ONF_BUNDLE_TYPES  # 1.3 bundles
