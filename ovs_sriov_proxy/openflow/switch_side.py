"""The proxy as an OpenFlow *switch*: the bytes it sends to upstream controllers and the
controller messages it must read itself.

Pure functions, no I/O. Encoders build switch-to-controller messages (PACKET_IN, FEATURES_REPLY,
port description, FLOW_REMOVED, PORT_STATUS, the plain replies) for OpenFlow 1.0, 1.3, 1.4 and
1.5; decoders read the controller-to-switch messages the proxy must understand and os-ken cannot
decode (PACKET_OUT, SET_CONFIG, ROLE_REQUEST, SET_ASYNC, the multipart request type). Everything else a controller sends is relayed to the bridge as raw bytes with only its
xid rewritten (`rewrite_xid`); `CONTROLLER_MESSAGES` says, per version and message type, which
path a message takes.

Blame follows framing.py: a decoder raises `RemoteProtocolError` for anything malformed
(truncation, bad lengths, wrong version or type) and never lets struct.error or IndexError out;
an encoder raises `LocalProtocolError` (or flows.Unrepresentable for an OF1.0 port number that
does not exist) when asked for something the wire cannot carry.

Why this module exists -- os-ken 4.2.2's coverage, measured (tests/test_switch_side.py keeps
these statements true):

- Decoding controller-to-switch messages: `_MSG_PARSERS` has no entry for FEATURES_REQUEST,
  GET_CONFIG_REQUEST, SET_CONFIG, PACKET_OUT, PORT_MOD, BARRIER_REQUEST or the stats/multipart
  request in any of 1.0, 1.3, 1.4, 1.5; nor for ROLE_REQUEST, SET_ASYNC, GET_ASYNC_REQUEST and
  TABLE_MOD in 1.3-1.5; nor QUEUE_GET_CONFIG_REQUEST (1.0, 1.3), BUNDLE_ADD_MESSAGE (1.4, 1.5).
  GROUP_MOD and METER_MOD are missing in 1.3 but present in 1.4 and 1.5. FLOW_MOD is decoded
  in every version, so the proxy reads it with os-ken (codec.py / flows.py).
- Encoding switch-to-controller messages: PACKET_IN, FEATURES_REPLY, GET_CONFIG_REPLY,
  FLOW_REMOVED, PORT_STATUS, ROLE_REPLY and every multipart/stats reply class have no
  `_serialize_body`: `serialize()` does not fail, it silently emits a bare 8-byte header.
  ECHO_REPLY, ERROR and BARRIER_REPLY (which has no body) come out right.
- os-ken does parse everything built here (the direction it was written for), which is how the
  tests check these encoders; and it encodes the controller-to-switch messages decoded here,
  which is how the tests check the decoders. One quirk: a 1.0/1.3/1.4 PACKET_OUT with data and
  no actions is serialized wrongly by os-ken (see flows.packet_out).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .flows import port_to_of10
from .framing import (
    HEADER,
    HEADER_LEN,
    MAX_MESSAGE_LEN,
    OFP10,
    OFP13,
    OFP14,
    OFP15,
    OFPT10_STATS_REPLY,
    OFPT10_STATS_REQUEST,
    OFPT13_MULTIPART_REPLY,
    OFPT13_MULTIPART_REQUEST,
    OFPT_ECHO_REPLY,
    OFPT_ERROR,
    OFPT_FEATURES_REPLY,
    OFPT_FLOW_REMOVED,
    OFPT_GET_CONFIG_REPLY,
    OFPT_PACKET_IN,
    OFPT_PACKET_OUT,
    OFPT_PORT_STATUS,
    OFPT_SET_CONFIG,
    LocalProtocolError,
    RemoteProtocolError,
    barrier_reply_type,
    error,
    header,
    simple_message,
)
from .packet import OXM_CLASS_OPENFLOW_BASIC, OXM_FIELD_IN_PORT, port_from_of10
from .wellformed import check_actions

__all__ = [
    "CONTROLLER_MESSAGES", "ENCODED_HERE", "AsyncConfig", "Decoding", "PacketOut", "PortDesc",
    "RoleRequest", "SwitchConfig", "barrier_reply", "decode_multipart_request_type",
    "decode_packet_out", "decode_role_request", "decode_set_async", "decode_set_config",
    "decoding", "desc_reply", "echo_reply", "encode_port", "error", "features_reply",
    "flow_removed", "get_config_reply", "multipart_reply", "packet_in", "port_desc_reply", "port_desc_replies",
    "port_status", "rewrite_xid", "role_reply",
]  # fmt: skip

VERSIONS = frozenset({OFP10, OFP13, OFP14, OFP15})

# Message types beyond framing.py's (numbers of OF1.3, unchanged in 1.4 and 1.5 unless noted).
OFPT10_VENDOR = 4
OFPT10_PORT_MOD = 15
OFPT10_QUEUE_GET_CONFIG_REQUEST = 20
OFPT_GROUP_MOD = 15
OFPT_PORT_MOD = 16
OFPT_TABLE_MOD = 17
OFPT13_QUEUE_GET_CONFIG_REQUEST = 22  # 1.3 only
OFPT_ROLE_REQUEST = 24
OFPT_ROLE_REPLY = 25
OFPT_GET_ASYNC_REQUEST = 26
OFPT_SET_ASYNC = 28
OFPT_METER_MOD = 29
OFPT14_BUNDLE_CONTROL = 33
OFPT14_BUNDLE_ADD_MESSAGE = 34

OFPP_CONTROLLER = 0xFFFFFFFD
OFPMP_DESC = 0  # OFPST_DESC in 1.0
OFPMP_PORT_DESC = 13
OFPMPF_MORE = 1  # OFPSF_REPLY_MORE / OFPMPF_REPLY_MORE (and _REQ_MORE on requests)
OFPMT_OXM = 1
OFP10_MATCH_ALL = struct.pack("!I36x", (1 << 22) - 1)  # ofp_match with OFPFW_ALL
_OXM_IN_PORT = OXM_CLASS_OPENFLOW_BASIC << 16 | OXM_FIELD_IN_PORT << 9 | 4
_OXS_CLASS_OPENFLOW_BASIC = 0x8002
_OXS_DURATION, _OXS_PACKET_COUNT, _OXS_BYTE_COUNT = 0, 4, 5
OFPPDPT_ETHERNET = 0
# SET_ASYNC property types of 1.4+; 1.3's fixed layout is mapped onto the first six.
OFPACPT_PACKET_IN_SLAVE, OFPACPT_PACKET_IN_MASTER = 0, 1
OFPACPT_PORT_STATUS_SLAVE, OFPACPT_PORT_STATUS_MASTER = 2, 3
OFPACPT_FLOW_REMOVED_SLAVE, OFPACPT_FLOW_REMOVED_MASTER = 4, 5
OFPACPT_EXPERIMENTER_SLAVE, OFPACPT_EXPERIMENTER_MASTER = 0xFFFE, 0xFFFF

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_TLV = struct.Struct("!HH")
_XID_AT = 4


# ---------------------------------------------------------------------------------------------
# Which controller-to-switch messages the proxy reads, and how


class Decoding(enum.Enum):
    HEADER_ONLY = "nothing to decode past the header (xid, and an echo's data)"
    BY_PROXY = "decoded by the proxy's own code (this module; HELLO in framing.py)"
    BY_OSKEN = "decoded with os-ken (codec.py, flows.py)"
    RELAYED = "relayed to the bridge as raw bytes, xid rewritten"


_H, _P, _O, _R = Decoding.HEADER_ONLY, Decoding.BY_PROXY, Decoding.BY_OSKEN, Decoding.RELAYED
_COMMON_13: dict[int, Decoding] = {
    0: _P,  # HELLO
    OFPT_ERROR: _O,
    2: _H,  # ECHO_REQUEST
    OFPT_ECHO_REPLY: _H,
    4: _R,  # EXPERIMENTER
    5: _H,  # FEATURES_REQUEST
    7: _H,  # GET_CONFIG_REQUEST
    OFPT_SET_CONFIG: _P,
    OFPT_PACKET_OUT: _P,
    14: _O,  # FLOW_MOD
    OFPT_GROUP_MOD: _R,
    OFPT_PORT_MOD: _R,
    OFPT_TABLE_MOD: _R,
    OFPT13_MULTIPART_REQUEST: _P,  # the type; the body is relayed unless the proxy answers
    20: _H,  # BARRIER_REQUEST
    OFPT_ROLE_REQUEST: _P,
    OFPT_GET_ASYNC_REQUEST: _H,
    OFPT_SET_ASYNC: _P,
    OFPT_METER_MOD: _R,
}
# Version -> controller-to-switch message type -> how the proxy reads it. Types not listed
# (unknown or new ones) are relayed: see `decoding`.
CONTROLLER_MESSAGES: dict[int, dict[int, Decoding]] = {
    OFP10: {
        0: _P, OFPT_ERROR: _O, 2: _H, OFPT_ECHO_REPLY: _H, OFPT10_VENDOR: _R,
        5: _H, 7: _H, OFPT_SET_CONFIG: _P, OFPT_PACKET_OUT: _P, 14: _O,
        OFPT10_PORT_MOD: _R, OFPT10_STATS_REQUEST: _P, 18: _H,  # BARRIER_REQUEST
        OFPT10_QUEUE_GET_CONFIG_REQUEST: _R,
    },
    OFP13: {**_COMMON_13, OFPT13_QUEUE_GET_CONFIG_REQUEST: _R},
    OFP14: {**_COMMON_13, OFPT14_BUNDLE_CONTROL: _R, OFPT14_BUNDLE_ADD_MESSAGE: _R},
    OFP15: {**_COMMON_13, OFPT14_BUNDLE_CONTROL: _R, OFPT14_BUNDLE_ADD_MESSAGE: _R},
}  # fmt: skip

# Version -> switch-to-controller message types this module builds.
ENCODED_HERE: dict[int, frozenset[int]] = {
    OFP10: frozenset({OFPT_ERROR, OFPT_ECHO_REPLY, OFPT_FEATURES_REPLY, OFPT_GET_CONFIG_REPLY,
                      OFPT_PACKET_IN, OFPT_FLOW_REMOVED, OFPT_PORT_STATUS, OFPT10_STATS_REPLY,
                      barrier_reply_type(OFP10)}),
    **{v: frozenset({OFPT_ERROR, OFPT_ECHO_REPLY, OFPT_FEATURES_REPLY, OFPT_GET_CONFIG_REPLY,
                     OFPT_PACKET_IN, OFPT_FLOW_REMOVED, OFPT_PORT_STATUS, OFPT13_MULTIPART_REPLY,
                     barrier_reply_type(v), OFPT_ROLE_REPLY})
       for v in (OFP13, OFP14, OFP15)},
}  # fmt: skip


def decoding(version: int, msg_type: int) -> Decoding:
    """How the proxy reads a controller-to-switch message: anything unlisted is relayed."""
    return CONTROLLER_MESSAGES.get(version, {}).get(msg_type, Decoding.RELAYED)


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _check_version(version: int) -> None:
    if version not in VERSIONS:
        raise LocalProtocolError(f"unsupported OpenFlow version 0x{version:02x}")


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def _message(version: int, msg_type: int, xid: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return header(version, msg_type, HEADER_LEN + len(body), xid) + body


def _pack(st: struct.Struct, *values: int | bytes) -> bytes:
    try:
        return st.pack(*values)
    except struct.error as exc:
        raise LocalProtocolError(f"a field is out of range: {exc}") from exc


def _oxm_tlvs(raw: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(oxm header, payload offset, payload end) of each OXM TLV in raw[start:end]; a TLV that
    overruns `end` raises IndexError, which callers turn into their side's blame."""
    offset = start
    while offset < end:
        if end - offset < 4:
            raise IndexError("an OXM header is cut short")
        (oxm,) = _U32.unpack_from(raw, offset)
        payload_end = offset + 4 + (oxm & 0xFF)
        if payload_end > end:
            raise IndexError(f"an OXM TLV of length {oxm & 0xFF} overruns the match")
        yield oxm, offset + 4, payload_end
        offset = payload_end


def _is_in_port(oxm: int) -> bool:
    return oxm >> 16 == OXM_CLASS_OPENFLOW_BASIC and (oxm >> 9) & 0x7F == OXM_FIELD_IN_PORT


def _oxm_match(fields: bytes) -> bytes:
    """An ofp_match of type OXM holding `fields`, padded to 8 bytes."""
    try:
        for _ in _oxm_tlvs(fields, 0, len(fields)):
            pass
    except IndexError as exc:
        raise LocalProtocolError(f"match fields are not whole OXM TLVs: {exc}") from exc
    length = 4 + len(fields)
    return _TLV.pack(OFPMT_OXM, length) + fields + bytes(_pad8(length) - length)


def _extra_oxms(match_fields: bytes | None) -> bytes:
    """`match_fields` checked to be whole OXM TLVs without an in_port of their own."""
    if not match_fields:
        return b""
    try:
        for oxm, _, _ in _oxm_tlvs(match_fields, 0, len(match_fields)):
            if _is_in_port(oxm):
                raise LocalProtocolError("match_fields carries in_port; pass it as in_port")
    except IndexError as exc:
        raise LocalProtocolError(f"match_fields are not whole OXM TLVs: {exc}") from exc
    return match_fields


def _fixed_text(text: str, size: int, what: str) -> bytes:
    raw = text.encode()
    if len(raw) >= size:  # room for the terminating NUL
        raise LocalProtocolError(f"{what} {text!r} is longer than {size - 1} bytes")
    return raw


# ---------------------------------------------------------------------------------------------
# Ports


@dataclass(frozen=True, slots=True)
class PortDesc:
    """A port as the proxy describes it to controllers (sessions.switch.PortInfo has only the
    first three fields: what the proxy reads from the bridge, not all it must tell)."""

    port_no: int  # 32-bit numbering, whatever the version
    name: str  # at most 15 bytes (16 with the NUL)
    hw_addr: str  # "aa:bb:cc:dd:ee:ff"
    config: int = 0  # OFPPC_* bits
    state: int = 0  # OFPPS_* bits
    curr: int = 0  # OFPPF_* bits
    advertised: int = 0
    supported: int = 0
    peer: int = 0
    curr_speed: int = 0  # kbps; OpenFlow 1.0 does not carry the speeds
    max_speed: int = 0


_PORT10 = struct.Struct("!H6s16sIIIIII")  # ofp_phy_port, 48 bytes
_PORT13 = struct.Struct("!I4x6s2x16sIIIIIIII")  # ofp_port, 64 bytes
_PORT14 = struct.Struct("!IH2x6s2x16sII")  # ofp_port head of 1.4/1.5, 40 bytes
_PORT14_ETHERNET = struct.Struct("!HH4xIIIIII")  # ofp_port_desc_prop_ethernet, 32 bytes
_PORT14_LEN = _PORT14.size + _PORT14_ETHERNET.size


def _mac(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise LocalProtocolError(f"{text!r} is not an Ethernet address")
    return raw


def encode_port(version: int, port: PortDesc) -> bytes:
    """The version's port structure (ofp_phy_port in 1.0, ofp_port after)."""
    name = _fixed_text(port.name, 16, "port name")
    mac = _mac(port.hw_addr)
    if version == OFP10:
        return _pack(_PORT10, port_to_of10(port.port_no), mac, name, port.config, port.state,
                     port.curr, port.advertised, port.supported, port.peer)
    if version == OFP13:
        return _pack(_PORT13, port.port_no, mac, name, port.config, port.state, port.curr,
                     port.advertised, port.supported, port.peer, port.curr_speed, port.max_speed)
    _check_version(version)
    return _pack(_PORT14, port.port_no, _PORT14_LEN, mac, name, port.config,
                 port.state) + _pack(_PORT14_ETHERNET, OFPPDPT_ETHERNET, _PORT14_ETHERNET.size,
                                     port.curr, port.advertised, port.supported, port.peer,
                                     port.curr_speed, port.max_speed)


# ---------------------------------------------------------------------------------------------
# Switch-to-controller messages

_PI10 = struct.Struct("!BBHIIHHBx")  # header, buffer_id, total_len, in_port, reason
_PI13_HEAD = struct.Struct("!BBHIIHBBQ")  # header, buffer_id, total_len, reason, table_id, cookie
# The common 1.3+ case, a match of in_port alone: header .. cookie, match type and length,
# the in_port OXM, 4 bytes of match padding and the 2 pad bytes before the data.
_PI13_IN_PORT_ONLY = struct.Struct("!BBHIIHBBQHHII6x")


def packet_in(
    version: int,
    *,
    buffer_id: int,
    total_len: int,
    in_port: int,
    reason: int,
    table_id: int = 0,
    cookie: int = 0,
    match_fields: bytes | None = None,
    data: bytes,
    xid: int = 0,
) -> bytes:
    """A PACKET_IN. `in_port` is in 32-bit numbering; on 1.3+ it is the match's first OXM and
    `match_fields` (whole OXM TLVs, no in_port) follows it, e.g. metadata or tunnel id. OF1.0
    has no table_id, cookie or match: those arguments are ignored there (match_fields must be
    empty)."""
    try:
        if version == OFP10:
            if match_fields:
                raise LocalProtocolError("an OpenFlow 1.0 PACKET_IN carries no match fields")
            length = _PI10.size + len(data)
            if length > MAX_MESSAGE_LEN:
                raise LocalProtocolError(f"PACKET_IN of {length} bytes is too long")
            return _PI10.pack(OFP10, OFPT_PACKET_IN, length, xid, buffer_id, total_len,
                              port_to_of10(in_port), reason) + data
        _check_version(version)
        if not match_fields:
            length = _PI13_IN_PORT_ONLY.size + len(data)
            if length > MAX_MESSAGE_LEN:
                raise LocalProtocolError(f"PACKET_IN of {length} bytes is too long")
            return _PI13_IN_PORT_ONLY.pack(version, OFPT_PACKET_IN, length, xid, buffer_id,
                                           total_len, reason, table_id, cookie, OFPMT_OXM, 12,
                                           _OXM_IN_PORT, in_port) + data
        match = _oxm_match(_U32.pack(_OXM_IN_PORT) + _U32.pack(in_port) + _extra_oxms(match_fields))
        length = _PI13_HEAD.size + len(match) + 2 + len(data)
        if length > MAX_MESSAGE_LEN:
            raise LocalProtocolError(f"PACKET_IN of {length} bytes is too long")
        return b"".join((_PI13_HEAD.pack(version, OFPT_PACKET_IN, length, xid, buffer_id,
                                         total_len, reason, table_id, cookie),
                         match, b"\0\0", data))
    except struct.error as exc:
        raise LocalProtocolError(f"a PACKET_IN field is out of range: {exc}") from exc


_FEATURES10 = struct.Struct("!QIB3xII")  # datapath_id, n_buffers, n_tables, capabilities, actions
_FEATURES13 = struct.Struct("!QIBB2xII")  # ..., auxiliary_id, capabilities, reserved


def features_reply(
    version: int,
    *,
    datapath_id: int,
    n_buffers: int,
    n_tables: int,
    capabilities: int,
    ports: Iterable[PortDesc] = (),
    actions: int = 0,
    auxiliary_id: int = 0,
    xid: int,
) -> bytes:
    """A FEATURES_REPLY. `ports` and `actions` (the supported-actions bitmap) exist in OF1.0
    only and are ignored after it, where controllers ask for ports with a PORT_DESC request;
    `auxiliary_id` exists from 1.3 on."""
    if version == OFP10:
        body = _pack(_FEATURES10, datapath_id, n_buffers, n_tables, capabilities, actions)
        return _message(version, OFPT_FEATURES_REPLY, xid, body,
                        *(encode_port(version, p) for p in ports))
    _check_version(version)
    body = _pack(_FEATURES13, datapath_id, n_buffers, n_tables, auxiliary_id, capabilities, 0)
    return _message(version, OFPT_FEATURES_REPLY, xid, body)


_STATS10_HEAD = struct.Struct("!HH")  # type, flags
_MULTIPART13_HEAD = struct.Struct("!HH4x")


def multipart_reply(version: int, mp_type: int, body: bytes, xid: int, more: bool = False) -> bytes:
    """A multipart reply (a stats reply in OF1.0) of `mp_type` carrying `body`."""
    flags = OFPMPF_MORE if more else 0
    if version == OFP10:
        return _message(version, OFPT10_STATS_REPLY, xid, _pack(_STATS10_HEAD, mp_type, flags),
                        body)
    _check_version(version)
    return _message(version, OFPT13_MULTIPART_REPLY, xid,
                    _pack(_MULTIPART13_HEAD, mp_type, flags), body)


def port_desc_reply(version: int, ports: Iterable[PortDesc], xid: int, more: bool = False) -> bytes:
    """One PORT_DESC multipart reply (OF1.3+; OF1.0 lists ports in its FEATURES_REPLY)."""
    if version == OFP10:
        raise LocalProtocolError("OpenFlow 1.0 has no port description reply")
    body = b"".join(encode_port(version, p) for p in ports)
    return multipart_reply(version, OFPMP_PORT_DESC, body, xid, more)


def port_desc_replies(version: int, ports: Sequence[PortDesc], xid: int) -> list[bytes]:
    """The PORT_DESC reply split into as many messages as its size needs, all but the last
    flagged 'more' (a message holds at most ~1000 ports)."""
    per_message = (MAX_MESSAGE_LEN - HEADER_LEN - _MULTIPART13_HEAD.size) // _PORT14_LEN
    chunks = [ports[i : i + per_message] for i in range(0, len(ports), per_message)] or [[]]
    return [port_desc_reply(version, chunk, xid, more=i < len(chunks) - 1)
            for i, chunk in enumerate(chunks)]


_DESC = struct.Struct("!256s256s256s32s256s")  # ofp_desc, the same in every version


def desc_reply(
    version: int,
    *,
    mfr_desc: str = "",
    hw_desc: str = "",
    sw_desc: str = "",
    serial_num: str = "",
    dp_desc: str = "",
    xid: int,
) -> bytes:
    """The switch description (OFPST_DESC / OFPMP_DESC reply)."""
    body = _DESC.pack(_fixed_text(mfr_desc, 256, "mfr_desc"), _fixed_text(hw_desc, 256, "hw_desc"),
                      _fixed_text(sw_desc, 256, "sw_desc"),
                      _fixed_text(serial_num, 32, "serial_num"),
                      _fixed_text(dp_desc, 256, "dp_desc"))
    return multipart_reply(version, OFPMP_DESC, body, xid)


_FLOW_REMOVED10 = struct.Struct("!QHBxIIH2xQQ")  # after the 40-byte ofp_match
_FLOW_REMOVED13 = struct.Struct("!QHBBIIHHQQ")  # before the match
_FLOW_REMOVED15 = struct.Struct("!BBHHHQ")  # before the match; counters follow in ofp_stats
_OXS8 = struct.Struct("!IQ")  # an OXS header and a 64-bit value (durations as sec, nsec)


def _oxs_header(field: int, length: int) -> int:
    return _OXS_CLASS_OPENFLOW_BASIC << 16 | field << 9 | length


def flow_removed(
    version: int,
    *,
    cookie: int,
    priority: int,
    reason: int,
    table_id: int = 0,
    duration_sec: int = 0,
    duration_nsec: int = 0,
    idle_timeout: int = 0,
    hard_timeout: int = 0,
    packet_count: int = 0,
    byte_count: int = 0,
    match: bytes | None = None,
    xid: int = 0,
) -> bytes:
    """A FLOW_REMOVED. `match` is the flow's match as on the wire: the 40-byte ofp_match in
    OF1.0 (None: all wildcards), the OXM TLVs without the ofp_match header after it (None:
    empty). OF1.0 has no table_id or hard_timeout (ignored there); OF1.5 carries the duration
    and counters as OXS stats."""
    if version == OFP10:
        ofmatch = OFP10_MATCH_ALL if match is None else match
        if len(ofmatch) != len(OFP10_MATCH_ALL):
            raise LocalProtocolError("an OpenFlow 1.0 match is 40 bytes")
        return _message(version, OFPT_FLOW_REMOVED, xid, ofmatch,
                        _pack(_FLOW_REMOVED10, cookie, priority, reason, duration_sec,
                              duration_nsec, idle_timeout, packet_count, byte_count))
    _check_version(version)
    ofmatch = _oxm_match(match or b"")
    if version in (OFP13, OFP14):
        return _message(version, OFPT_FLOW_REMOVED, xid,
                        _pack(_FLOW_REMOVED13, cookie, priority, reason, table_id, duration_sec,
                              duration_nsec, idle_timeout, hard_timeout, packet_count,
                              byte_count), ofmatch)
    try:
        oxs = b"".join((
            _OXS8.pack(_oxs_header(_OXS_DURATION, 8), duration_sec << 32 | duration_nsec),
            _OXS8.pack(_oxs_header(_OXS_PACKET_COUNT, 8), packet_count),
            _OXS8.pack(_oxs_header(_OXS_BYTE_COUNT, 8), byte_count),
        ))
    except struct.error as exc:
        raise LocalProtocolError(f"a FLOW_REMOVED counter is out of range: {exc}") from exc
    if not (0 <= duration_sec <= 0xFFFFFFFF and 0 <= duration_nsec <= 0xFFFFFFFF):
        raise LocalProtocolError("a FLOW_REMOVED duration is out of range")
    stats_len = 4 + len(oxs)
    stats = _TLV.pack(0, stats_len) + oxs + bytes(_pad8(stats_len) - stats_len)
    return _message(version, OFPT_FLOW_REMOVED, xid,
                    _pack(_FLOW_REMOVED15, table_id, reason, priority, idle_timeout,
                          hard_timeout, cookie), ofmatch, stats)


_PORT_STATUS = struct.Struct("!B7x")  # reason, then the port


def port_status(version: int, *, reason: int, port: PortDesc, xid: int = 0) -> bytes:
    """A PORT_STATUS (reason OFPPR_ADD 0, DELETE 1, MODIFY 2)."""
    _check_version(version)
    return _message(version, OFPT_PORT_STATUS, xid, _pack(_PORT_STATUS, reason),
                    encode_port(version, port))


def echo_reply(version: int, xid: int, data: bytes = b"") -> bytes:
    """The answer to an ECHO_REQUEST: the same xid and data."""
    _check_version(version)
    return simple_message(version, OFPT_ECHO_REPLY, xid, data)


def barrier_reply(version: int, xid: int) -> bytes:
    _check_version(version)
    return simple_message(version, barrier_reply_type(version), xid)


_SWITCH_CONFIG = struct.Struct("!HH")  # flags, miss_send_len


def get_config_reply(version: int, *, flags: int, miss_send_len: int, xid: int) -> bytes:
    _check_version(version)
    return _message(version, OFPT_GET_CONFIG_REPLY, xid, _pack(_SWITCH_CONFIG, flags, miss_send_len))


_ROLE = struct.Struct("!IH2xQ")  # role, short_id (OF1.5; padding before), generation_id


def role_reply(version: int, role: int, generation_id: int, xid: int, short_id: int = 0) -> bytes:
    """A ROLE_REPLY (OF1.3+; OF1.0 roles are a Nicira extension, relayed, not built here).
    `short_id` exists in OF1.5 only."""
    if version == OFP10:
        raise LocalProtocolError("OpenFlow 1.0 has no ROLE_REPLY")
    _check_version(version)
    if short_id and version != OFP15:
        raise LocalProtocolError("a ROLE_REPLY carries a short_id from OpenFlow 1.5 on")
    return _message(version, OFPT_ROLE_REPLY, xid, _pack(_ROLE, role, short_id, generation_id))


# ---------------------------------------------------------------------------------------------
# Controller-to-switch messages


@dataclass(frozen=True, slots=True)
class PacketOut:
    buffer_id: int
    in_port: int  # 32-bit numbering, whatever the version
    actions_raw: bytes  # the action list as on the wire, TLV framing checked
    data: bytes
    match_fields: bytes = b""  # OF1.5: the match's OXM TLVs other than in_port


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    flags: int
    miss_send_len: int


@dataclass(frozen=True, slots=True)
class RoleRequest:
    role: int  # OFPCR_ROLE_NOCHANGE 0, EQUAL 1, MASTER 2, SLAVE 3
    generation_id: int
    short_id: int = 0  # OF1.5 only (padding before)


@dataclass(frozen=True, slots=True)
class AsyncConfig:
    """The masks of a SET_ASYNC by 1.4+ property type (OFPACPT_*); a 1.3 message's six masks
    are given the same numbering. Experimenter properties are checked and left out."""

    masks: dict[int, int]


def _checked(version: int, msg_type: int, raw: bytes, what: str, min_len: int) -> None:
    """Refuse a message that is not a whole `what` of `version` at least `min_len` long."""
    _check_version(version)
    if len(raw) < HEADER_LEN:
        raise RemoteProtocolError(f"{what} of {len(raw)} bytes is shorter than a header")
    got_version, got_type, length, _ = HEADER.unpack_from(raw)
    if got_version != version:
        raise RemoteProtocolError(f"{what} has version 0x{got_version:02x}, not 0x{version:02x}")
    if got_type != msg_type:
        raise RemoteProtocolError(f"message type {got_type} is not a {what}")
    if length != len(raw):
        raise RemoteProtocolError(f"{what} length field {length} but {len(raw)} bytes")
    if length < min_len:
        raise RemoteProtocolError(f"{what} of {length} bytes is shorter than {min_len}")


_PO10 = struct.Struct("!IHH")  # buffer_id, in_port, actions_len
_PO13 = struct.Struct("!IIH6x")  # buffer_id, in_port, actions_len
_PO15 = struct.Struct("!IH2xHH")  # buffer_id, actions_len, match type, match length


def decode_packet_out(version: int, raw: bytes) -> PacketOut:
    """A PACKET_OUT of any version we speak. An OF1.5 match without in_port means the packet
    comes from the controller (OFPP_CONTROLLER)."""
    if version == OFP10:
        _checked(version, OFPT_PACKET_OUT, raw, "PACKET_OUT", HEADER_LEN + _PO10.size)
        buffer_id, in_port, actions_len = _PO10.unpack_from(raw, HEADER_LEN)
        in_port = port_from_of10(in_port)
        actions_at = HEADER_LEN + _PO10.size
        match_fields = b""
    elif version in (OFP13, OFP14):
        _checked(version, OFPT_PACKET_OUT, raw, "PACKET_OUT", HEADER_LEN + _PO13.size)
        buffer_id, in_port, actions_len = _PO13.unpack_from(raw, HEADER_LEN)
        actions_at = HEADER_LEN + _PO13.size
        match_fields = b""
    else:
        _checked(version, OFPT_PACKET_OUT, raw, "PACKET_OUT", HEADER_LEN + _PO15.size)
        buffer_id, actions_len, match_type, match_len = _PO15.unpack_from(raw, HEADER_LEN)
        match_at = HEADER_LEN + 8
        if match_type != OFPMT_OXM or match_len < 4:
            raise RemoteProtocolError(f"PACKET_OUT match of type {match_type}, length {match_len}")
        actions_at = match_at + _pad8(match_len)
        if actions_at > len(raw):
            raise RemoteProtocolError(f"PACKET_OUT match length {match_len} does not fit")
        in_port, match_fields = _packet_out_match(raw, match_at + 4, match_at + match_len)
    data_at = actions_at + actions_len
    if data_at > len(raw):
        raise RemoteProtocolError(f"PACKET_OUT actions length {actions_len} does not fit")
    check_actions(raw, actions_at, data_at, "PACKET_OUT action list")
    return PacketOut(buffer_id, in_port, raw[actions_at:data_at], raw[data_at:], match_fields)


def _packet_out_match(raw: bytes, start: int, end: int) -> tuple[int, bytes]:
    in_port: int | None = None
    others: list[bytes] = []
    try:
        for oxm, at, payload_end in _oxm_tlvs(raw, start, end):
            if _is_in_port(oxm):
                if in_port is not None or payload_end - at != 4:
                    raise RemoteProtocolError("PACKET_OUT match has a bad or second in_port")
                (in_port,) = _U32.unpack_from(raw, at)
            else:
                others.append(raw[at - 4 : payload_end])
    except IndexError as exc:
        raise RemoteProtocolError(f"PACKET_OUT match: {exc}") from exc
    return (OFPP_CONTROLLER if in_port is None else in_port), b"".join(others)


def decode_set_config(version: int, raw: bytes) -> SwitchConfig:
    """A SET_CONFIG (flags, miss_send_len), the same in every version."""
    _checked(version, OFPT_SET_CONFIG, raw, "SET_CONFIG", HEADER_LEN + _SWITCH_CONFIG.size)
    if len(raw) != HEADER_LEN + _SWITCH_CONFIG.size:
        raise RemoteProtocolError(f"SET_CONFIG of {len(raw)} bytes, not 12")
    return SwitchConfig(*_SWITCH_CONFIG.unpack_from(raw, HEADER_LEN))


def decode_role_request(version: int, raw: bytes) -> RoleRequest:
    """A ROLE_REQUEST (OF1.3+)."""
    if version == OFP10:
        raise LocalProtocolError("OpenFlow 1.0 has no ROLE_REQUEST (type 24 is something else)")
    _checked(version, OFPT_ROLE_REQUEST, raw, "ROLE_REQUEST", HEADER_LEN + _ROLE.size)
    if len(raw) != HEADER_LEN + _ROLE.size:
        raise RemoteProtocolError(f"ROLE_REQUEST of {len(raw)} bytes, not 24")
    role, short_id, generation_id = _ROLE.unpack_from(raw, HEADER_LEN)
    return RoleRequest(role, generation_id, short_id if version == OFP15 else 0)


_ASYNC13 = struct.Struct("!6I")  # packet_in, port_status, flow_removed masks: [master, slave]
_ASYNC13_TYPES = (OFPACPT_PACKET_IN_MASTER, OFPACPT_PACKET_IN_SLAVE,
                  OFPACPT_PORT_STATUS_MASTER, OFPACPT_PORT_STATUS_SLAVE,
                  OFPACPT_FLOW_REMOVED_MASTER, OFPACPT_FLOW_REMOVED_SLAVE)


def decode_set_async(version: int, raw: bytes) -> AsyncConfig:
    """A SET_ASYNC (OF1.3 fixed masks; 1.4+ properties). The proxy keeps these per controller
    instead of passing them to the bridge, where they would silence its own misses."""
    if version == OFP10:
        raise LocalProtocolError("OpenFlow 1.0 has no SET_ASYNC")
    if version == OFP13:
        _checked(version, OFPT_SET_ASYNC, raw, "SET_ASYNC", HEADER_LEN + _ASYNC13.size)
        if len(raw) != HEADER_LEN + _ASYNC13.size:
            raise RemoteProtocolError(f"SET_ASYNC of {len(raw)} bytes, not 32")
        return AsyncConfig(dict(zip(_ASYNC13_TYPES, _ASYNC13.unpack_from(raw, HEADER_LEN),
                                    strict=True)))
    _checked(version, OFPT_SET_ASYNC, raw, "SET_ASYNC", HEADER_LEN)
    masks: dict[int, int] = {}
    offset = HEADER_LEN
    while offset < len(raw):
        if len(raw) - offset < 4:
            raise RemoteProtocolError("SET_ASYNC ends inside a property header")
        prop_type, length = _TLV.unpack_from(raw, offset)
        if prop_type in (OFPACPT_EXPERIMENTER_SLAVE, OFPACPT_EXPERIMENTER_MASTER):
            if length < 12 or offset + length > len(raw):
                raise RemoteProtocolError(f"SET_ASYNC experimenter property of length {length}")
            offset += _pad8(length)
            continue
        if length != 8 or offset + 8 > len(raw):
            raise RemoteProtocolError(f"SET_ASYNC property of length {length} does not fit")
        (masks[prop_type],) = _U32.unpack_from(raw, offset + 4)
        offset += 8
    if offset != len(raw):
        raise RemoteProtocolError("SET_ASYNC properties overrun the message")
    return AsyncConfig(masks)


_STATS10_REQ = struct.Struct("!HH")
_MULTIPART13_REQ = struct.Struct("!HH4x")


def decode_multipart_request_type(raw: bytes) -> tuple[int, int, bytes]:
    """(type, flags, body) of a multipart request (a stats request in OF1.0), the version read
    from the header: enough to answer PORT_DESC and DESC and relay the rest."""
    if len(raw) < HEADER_LEN:
        raise RemoteProtocolError(f"multipart request of {len(raw)} bytes")
    version = raw[0]
    if version not in VERSIONS:
        raise RemoteProtocolError(f"not a version we speak: 0x{version:02x}")
    if version == OFP10:
        _checked(version, OFPT10_STATS_REQUEST, raw, "STATS_REQUEST",
                 HEADER_LEN + _STATS10_REQ.size)
        mp_type, flags = _STATS10_REQ.unpack_from(raw, HEADER_LEN)
        return mp_type, flags, raw[HEADER_LEN + _STATS10_REQ.size :]
    _checked(version, OFPT13_MULTIPART_REQUEST, raw, "MULTIPART_REQUEST",
             HEADER_LEN + _MULTIPART13_REQ.size)
    mp_type, flags = _MULTIPART13_REQ.unpack_from(raw, HEADER_LEN)
    return mp_type, flags, raw[HEADER_LEN + _MULTIPART13_REQ.size :]


def rewrite_xid(raw: bytes, xid: int) -> bytes:
    """`raw` with its header's xid replaced, nothing else looked at (the relay path)."""
    if len(raw) < HEADER_LEN:
        raise RemoteProtocolError(f"message of {len(raw)} bytes is shorter than a header")
    if not 0 <= xid <= 0xFFFFFFFF:
        raise LocalProtocolError(f"xid {xid} is out of range")
    return raw[:_XID_AT] + _U32.pack(xid) + raw[HEADER_LEN:]
