"""OpenFlow 1.0 <-> 1.3 translation of whole messages, for a controller and a bridge that
negotiated different versions.

Pure functions, bytes in and bytes out. `translate(raw, to_version)` takes one message of either
version and returns the other version's message(s) with the same xid (a list, because a large
statistics reply may need more messages in the other version). What the other version cannot
say raises `Untranslatable`, which carries the OpenFlow error for the sender; the caller sends
that error back and nothing half-translated goes on.

`TRANSLATED` is the explicit table of what is translated, per source version and message type;
anything else is untranslatable (BAD_REQUEST/BAD_TYPE). FEATURES, GET/SET_CONFIG, ROLE and
ASYNC never need translating: the controller session answers them itself from a version-neutral
view of the bridge (sessions/controller.py), and it builds the PACKET_INs it sends in its own
version; `translate` still covers PACKET_IN, for completeness and the tests.

Matches and actions go through the proxy's version-neutral model (rules/model.py) with
flows.py's encoders and decoders, which are os-ken underneath: os-ken decodes FLOW_MOD,
FLOW_REMOVED, PORT_STATUS and the statistics replies of both versions. It cannot decode
PACKET_OUT or any statistics/multipart *request* (FIELD-NOTES): those are read by hand with
`struct` (switch_side.decode_packet_out, translate_stats.py), with os-ken's match and action
parsers for the embedded structures. Statistics live in translate_stats.py.

Error codes. `Untranslatable` is given its error in OpenFlow 1.3 numbering and maps it to the
sender's version itself (`error_message`), with the table the ERROR translation uses
(translate_errors.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as of10p
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as of13p

from ..rules.fields import FIELDS
from ..rules.model import OFPP_ANY, OFPP_CONTROLLER, Action, Match, Output, SetField, SetQueue
from . import codec, flows, switch_side, wellformed
from .framing import (
    HEADER,
    HEADER_LEN,
    OFP10,
    OFP13,
    OFPT10_BARRIER_REPLY,
    OFPT10_BARRIER_REQUEST,
    OFPT10_STATS_REPLY,
    OFPT10_STATS_REQUEST,
    OFPT13_BARRIER_REPLY,
    OFPT13_BARRIER_REQUEST,
    OFPT13_MULTIPART_REPLY,
    OFPT13_MULTIPART_REQUEST,
    OFPT_ECHO_REPLY,
    OFPT_ECHO_REQUEST,
    OFPT_ERROR,
    OFPT_FEATURES_REPLY,
    OFPT_FLOW_MOD,
    OFPT_FLOW_REMOVED,
    OFPT_PACKET_IN,
    OFPT_PACKET_OUT,
    OFPT_PORT_STATUS,
    Message,
    RemoteProtocolError,
    error,
)
from .packet import decode_packet_in, packet_key, port_from_of10
from .translate_errors import (
    BAC_BAD_ARGUMENT,
    BAC_BAD_OUT_GROUP,
    BAC_BAD_OUT_PORT,
    BAC_BAD_SET_TYPE,
    BAC_BAD_TYPE,
    BAC_MATCH_INCONSISTENT,
    BIC_UNSUP_INST,
    BMC_BAD_FIELD,
    BMC_BAD_MASK,
    BRC_BAD_LEN,
    BRC_BAD_PORT,
    BRC_BAD_TYPE,
    ET_BAD_ACTION,
    ET_BAD_INSTRUCTION,
    ET_BAD_MATCH,
    ET_BAD_REQUEST,
    ET_FLOW_MOD_FAILED,
    ET_PORT_MOD_FAILED,
    FMFC_BAD_FLAGS,
    FMFC_BAD_TABLE_ID,
    FMFC_UNKNOWN,
    PMFC_BAD_CONFIG,
    map_error,
)

OFPTT_ALL = 0xFF
_L4_PORT_PROTO = {"tcp_src": 6, "tcp_dst": 6, "udp_src": 17, "udp_dst": 17}
OFPG_ANY = 0xFFFFFFFF
OFPP10_NONE = 0xFFFF
OFPFC_DELETE, OFPFC_DELETE_STRICT = 3, 4
OFPFF_SEND_FLOW_REM, OFPFF_CHECK_OVERLAP = 1, 2
OFPFF10_EMERG = 4
OFPFF13_RESET_COUNTS, OFPFF13_NO_PKT_COUNTS, OFPFF13_NO_BYT_COUNTS = 4, 8, 16
OFPT10_PORT_MOD = 15
OFPT13_PORT_MOD = 16
OFPR13_INVALID_TTL = 2
OFPRR13_GROUP_DELETE = 3


class Untranslatable(Exception):
    """A message the other version cannot carry. `err_type`/`code` are OpenFlow 1.3's."""

    def __init__(self, err_type: int, code: int, reason: str) -> None:
        super().__init__(reason)
        self.err_type = err_type
        self.code = code
        self.reason = reason

    def error_message(self, version: int, xid: int, data: bytes) -> bytes:
        """The ERROR to send to the sender, in its `version`, echoing (the start of) `data`."""
        err_type, code = self.err_type, self.code
        if version == OFP10:
            err_type, code = map_error(OFP13, OFP10, err_type, code)
        return error(version, xid, err_type, code, data)


def translatable_versions(version: int) -> frozenset[int]:
    """The versions a peer may speak when the other side speaks `version`."""
    if version in (OFP10, OFP13):
        return frozenset({OFP10, OFP13})
    return frozenset({version})


# ---------------------------------------------------------------------------------------------
# ERROR


def _error(raw: bytes, to_version: int) -> bytes:
    err_type, code = struct.unpack_from("!HH", raw, HEADER_LEN)
    err_type, code = map_error(raw[0], to_version, err_type, code)
    return error(to_version, _xid(raw), err_type, code, raw[HEADER_LEN + 4 :])


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _xid(raw: bytes) -> int:
    return int(HEADER.unpack_from(raw)[3])


def _retype(raw: bytes, to_version: int, msg_type: int) -> bytes:
    """The same message with another version and type number (bodies that did not change)."""
    return bytes((to_version, msg_type)) + raw[2:]


def _serialize(msg: Any, xid: int) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def match_bytes(match: Match, version: int) -> bytes:
    """A match as on the wire: OF1.0's 40-byte ofp_match, or OF1.3's OXM TLVs (no header)."""
    ofmatch = flows.encode_match(match, version)
    buf = bytearray()
    if version == OFP10:
        buf = bytearray(40)
        ofmatch.serialize(buf, 0)
        return bytes(buf)
    ofmatch.serialize(buf, 0)
    (length,) = struct.unpack_from("!H", buf, 2)
    return bytes(buf[4:length])


def oxm_match(match: Match) -> bytes:
    """An OF1.3 ofp_match (header, TLVs, padding)."""
    tlvs = match_bytes(match, OFP13)
    length = 4 + len(tlvs)
    return struct.pack("!HH", 1, length) + tlvs + bytes((length + 7) // 8 * 8 - length)


def to_model_match(ofmatch: Any, version: int) -> Match:
    """An os-ken match parsed from the wire as the model's Match, or Untranslatable."""
    if version == OFP10:
        normalize_of10_match(ofmatch)
    try:
        return flows.decode_match(ofmatch, version)
    except (flows.Unrepresentable, ValueError) as exc:
        raise Untranslatable(ET_BAD_MATCH, BMC_BAD_FIELD, f"match: {exc}") from exc


_ETH_IP = (0x0800, 0x86DD)
_ETH_IPV4_ARP = (0x0800, 0x0806)
_L4_PROTOS = (1, 6, 17, 58, 132)  # ICMP, TCP, UDP, ICMPv6, SCTP


def normalize_of10_match(ofmatch: Any) -> None:
    """In place: an OF1.0 match with the fields its other fields make meaningless wildcarded,
    as Open vSwitch does when it reads one. Controllers such as ovs-testcontroller send every
    field exact (nw_tos of an ARP packet, dl_vlan_pcp without a tag, tp_src of GRE); OXM
    refuses such fields for lack of their prerequisites."""
    wc = ofmatch.wildcards
    dl_type = None if wc & of10.OFPFW_DL_TYPE else ofmatch.dl_type
    if dl_type not in _ETH_IP:
        wc |= of10.OFPFW_NW_TOS
    if dl_type not in (*_ETH_IP, 0x0806):
        wc |= of10.OFPFW_NW_PROTO
    if dl_type not in _ETH_IPV4_ARP:
        wc = (wc & ~(of10.OFPFW_NW_SRC_MASK | of10.OFPFW_NW_DST_MASK)
              | of10.OFPFW_NW_SRC_ALL | of10.OFPFW_NW_DST_ALL)
    proto = None if wc & of10.OFPFW_NW_PROTO or dl_type not in _ETH_IP else ofmatch.nw_proto
    if proto not in _L4_PROTOS:
        wc |= of10.OFPFW_TP_SRC | of10.OFPFW_TP_DST
    if not wc & of10.OFPFW_DL_VLAN and ofmatch.dl_vlan == of10.OFP_VLAN_NONE:
        wc |= of10.OFPFW_DL_VLAN_PCP
    ofmatch.wildcards = wc


def from_model_match(match: Match, version: int) -> Any:
    """The model's Match as an os-ken match of `version`, or Untranslatable."""
    try:
        return flows.encode_match(match, version)
    except flows.Unrepresentable as exc:
        code = BMC_BAD_MASK if "mask" in str(exc) else BMC_BAD_FIELD
        raise Untranslatable(ET_BAD_MATCH, code, f"match: {exc}") from exc


def to_model_actions(items: Sequence[Any], version: int, match: Match | None) -> tuple[Action, ...]:
    """os-ken actions (OF1.0) or instructions (OF1.3) as model actions, or Untranslatable."""
    if version == OFP13:
        for item in items:
            if isinstance(item, of13p.OFPInstruction) and not (
                    isinstance(item, of13p.OFPInstructionActions)
                    and item.type == of13.OFPIT_APPLY_ACTIONS):
                raise Untranslatable(ET_BAD_INSTRUCTION, BIC_UNSUP_INST,
                                     f"OpenFlow 1.0 has no instruction {type(item).__name__}")
            for action in getattr(item, "actions", [item]):
                if isinstance(action, of13p.OFPActionGroup):
                    raise Untranslatable(ET_BAD_ACTION, BAC_BAD_OUT_GROUP,
                                         "OpenFlow 1.0 has no groups")
    try:
        return flows.decode_actions(items, version, match)
    except (flows.Unrepresentable, ValueError) as exc:
        raise Untranslatable(ET_BAD_ACTION, BAC_BAD_TYPE, f"actions: {exc}") from exc


def from_model_actions(actions: Sequence[Action], version: int,
                       match: Match | None = None) -> list[Any]:
    """Model actions as os-ken actions of `version`, or Untranslatable. OF1.0's set_tp_src/dst
    take their protocol from the flow's `match`, which must then pin it (checked if given)."""
    if version == OFP10:
        for action in actions:
            if (match is not None and isinstance(action, SetField)
                    and action.field in _L4_PORT_PROTO):
                proto = match.fields().get("ip_proto", (None, 0))[0]
                if proto != _L4_PORT_PROTO[action.field]:
                    raise Untranslatable(ET_BAD_ACTION, BAC_MATCH_INCONSISTENT,
                                         f"set_field {action.field} in a flow of ip_proto {proto}")
            if isinstance(action, Output):
                try:
                    flows.port_to_of10(action.port)
                except flows.Unrepresentable as exc:
                    raise Untranslatable(ET_BAD_ACTION, BAC_BAD_OUT_PORT, str(exc)) from exc
        actions = _enqueue_ready(actions)
    try:
        return flows.encode_actions(actions, version)
    except flows.Unrepresentable as exc:
        code = BAC_BAD_SET_TYPE if "set" in str(exc) else BAC_BAD_ARGUMENT
        raise Untranslatable(ET_BAD_ACTION, code, f"actions: {exc}") from exc


def _enqueue_ready(actions: Sequence[Action]) -> list[Action]:
    """Outputs after a set_queue with max_len reset: OF1.0 names the queue in an enqueue action,
    which has no max_len, and max_len means nothing for a port other than CONTROLLER (os-ken
    fills in OFPCML_MAX there)."""
    out: list[Action] = []
    queued = False
    for action in actions:
        if isinstance(action, SetQueue):
            queued = True
        elif queued and isinstance(action, Output) and action.port != OFPP_CONTROLLER:
            action = Output(action.port)
        out.append(action)
    return out


def parse_actions(version: int, raw: bytes, start: int, end: int) -> list[Any]:
    """The os-ken actions in raw[start:end], each checked to be as long as the wire says
    (wellformed.check_actions), or os-ken's own walk inside ct() could loop."""
    return wellformed.check_actions(raw, start, end, "action list", version)


def serialize_actions(actions: Sequence[Any]) -> bytes:
    buf = bytearray()
    for action in actions:
        action.serialize(buf, len(buf))
    return bytes(buf)


def serialize_instructions(actions: Sequence[Any]) -> bytes:
    """OF1.3 instructions for an action list: one apply-actions, none for a drop."""
    if not actions:
        return b""
    buf = bytearray()
    of13p.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS, list(actions)).serialize(buf, 0)
    return bytes(buf)


def _decode(raw: bytes) -> Any:
    """An os-ken decode of a message os-ken can parse; malformed input is the sender's fault."""
    version, msg_type, _, xid = HEADER.unpack_from(raw)
    cls = codec.parser(version)._MSG_PARSERS.get(msg_type)
    if cls is None:  # pragma: no cover - only called for types os-ken parses
        raise ValueError(f"os-ken has no parser for type {msg_type}")
    wellformed.check(version, msg_type, raw)  # or os-ken may loop forever
    try:
        return cls(codec.datapath(version), version, msg_type, len(raw), xid, raw)
    except Exception as exc:  # os-ken raises struct, index, key and its own errors on bad input
        raise RemoteProtocolError(f"malformed message type {msg_type}: {exc!r}") from exc


# ---------------------------------------------------------------------------------------------
# FLOW_MOD


def _flow_mod_13_to_10(raw: bytes) -> bytes:
    msg = _decode(raw)
    deleting = msg.command in (OFPFC_DELETE, OFPFC_DELETE_STRICT)
    if msg.table_id != 0 and not (deleting and msg.table_id == OFPTT_ALL):
        raise Untranslatable(ET_FLOW_MOD_FAILED, FMFC_BAD_TABLE_ID,
                             f"OpenFlow 1.0 has table 0 only, not {msg.table_id}")
    if msg.cookie_mask:
        raise Untranslatable(ET_FLOW_MOD_FAILED, FMFC_UNKNOWN,
                             "OpenFlow 1.0 cannot select flows by cookie")
    # out_port and out_group filter deletes only; adds and modifies ignore them (os-ken
    # leaves both 0 there).
    if deleting and msg.out_group != OFPG_ANY:
        raise Untranslatable(ET_FLOW_MOD_FAILED, FMFC_UNKNOWN, "OpenFlow 1.0 has no groups")
    if msg.flags & OFPFF13_RESET_COUNTS:
        raise Untranslatable(ET_FLOW_MOD_FAILED, FMFC_BAD_FLAGS,
                             "OpenFlow 1.0 has no reset_counts")
    match = to_model_match(msg.match, OFP13)
    ofmatch = from_model_match(match, OFP10)
    actions: list[Any] = []
    if not deleting:
        actions = from_model_actions(to_model_actions(msg.instructions, OFP13, match), OFP10,
                                     match)
    try:
        out_port = (OFPP10_NONE if msg.out_port == OFPP_ANY or not deleting
                    else flows.port_to_of10(msg.out_port))
    except flows.Unrepresentable as exc:
        raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_PORT, str(exc)) from exc
    # NO_PKT_COUNTS / NO_BYT_COUNTS are hints a switch may ignore; OF1.0 has no room for them.
    flags = msg.flags & (OFPFF_SEND_FLOW_REM | OFPFF_CHECK_OVERLAP)
    return _serialize(of10p.OFPFlowMod(
        codec.datapath(OFP10), ofmatch, msg.cookie, msg.command, msg.idle_timeout,
        msg.hard_timeout, msg.priority, msg.buffer_id, out_port, flags, actions), msg.xid)


def _flow_mod_10_to_13(raw: bytes) -> bytes:
    msg = _decode(raw)
    if msg.flags & OFPFF10_EMERG:
        raise Untranslatable(ET_FLOW_MOD_FAILED, FMFC_UNKNOWN,
                             "OpenFlow 1.3 has no emergency flows")
    match = to_model_match(msg.match, OFP10)
    deleting = msg.command in (OFPFC_DELETE, OFPFC_DELETE_STRICT)
    instructions: list[Any] = []
    if not deleting:
        actions = from_model_actions(to_model_actions(msg.actions, OFP10, match), OFP13)
        if actions:
            instructions = [of13p.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS, actions)]
    out_port = port_from_of10(msg.out_port) if deleting else OFPP_ANY  # NONE becomes ANY
    return _serialize(of13p.OFPFlowMod(
        codec.datapath(OFP13), cookie=msg.cookie, cookie_mask=0, table_id=0,
        command=msg.command, idle_timeout=msg.idle_timeout, hard_timeout=msg.hard_timeout,
        priority=msg.priority, buffer_id=msg.buffer_id, out_port=out_port, out_group=OFPG_ANY,
        flags=msg.flags & (OFPFF_SEND_FLOW_REM | OFPFF_CHECK_OVERLAP),
        match=from_model_match(match, OFP13), instructions=instructions), msg.xid)


# ---------------------------------------------------------------------------------------------
# PACKET_OUT (os-ken cannot decode OF1.3's: switch_side reads it by hand) and PACKET_IN


def _packet_out(raw: bytes, to_version: int) -> bytes:
    version = raw[0]
    po = switch_side.decode_packet_out(version, raw)
    header_len = len(raw) - len(po.actions_raw) - len(po.data)
    ofactions = parse_actions(version, raw, header_len, header_len + len(po.actions_raw))
    # OF1.0's set_tp_src/dst do not say TCP or UDP: the packet itself tells.
    context = None
    if po.data and version == OFP10:
        key = packet_key(0, po.data)
        proto = (key >> FIELDS["ip_proto"].offset) & 0xFF
        context = Match.from_fields({"ip_proto": (proto, 0xFF)})
    actions = to_model_actions(ofactions, version, context)
    in_port = po.in_port
    if in_port == OFPP_ANY:  # OF1.0's OFPP_NONE: "no input port", CONTROLLER in OF1.3 terms
        in_port = OFPP_CONTROLLER
    if to_version == OFP10:
        try:
            flows.port_to_of10(in_port)
        except flows.Unrepresentable as exc:
            raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_PORT, str(exc)) from exc
    from_model_actions(actions, to_version)  # classify what cannot be said before encoding
    try:
        return flows.packet_out(to_version, in_port=in_port, actions=actions, data=po.data,
                                buffer_id=po.buffer_id, xid=_xid(raw))
    except (flows.Unrepresentable, ValueError) as exc:
        raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_LEN, f"PACKET_OUT: {exc}") from exc


def _packet_in(raw: bytes, to_version: int) -> bytes:
    buffer_id, total_len, in_port, reason, table_id, cookie, data = decode_packet_in(raw[0], raw)
    if to_version == OFP10:
        if reason == OFPR13_INVALID_TTL:
            reason = 1  # OFPR_ACTION: OF1.0 knows no other reason than a miss
        try:
            flows.port_to_of10(in_port)
        except flows.Unrepresentable as exc:
            raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_PORT, str(exc)) from exc
    # OF1.3 match fields other than in_port (tunnel id, metadata) have no OF1.0 place.
    return switch_side.packet_in(to_version, buffer_id=buffer_id, total_len=total_len,
                                 in_port=in_port, reason=reason, table_id=table_id,
                                 cookie=cookie, data=data, xid=_xid(raw))


# ---------------------------------------------------------------------------------------------
# FLOW_REMOVED and PORT_STATUS


def _flow_removed(raw: bytes, to_version: int) -> bytes:
    msg = _decode(raw)
    match = to_model_match(msg.match, raw[0])
    reason = msg.reason
    if to_version == OFP10 and reason == OFPRR13_GROUP_DELETE:
        reason = 2  # OFPRR_DELETE
    return switch_side.flow_removed(
        to_version, cookie=msg.cookie, priority=msg.priority, reason=reason,
        table_id=getattr(msg, "table_id", 0), duration_sec=msg.duration_sec,
        duration_nsec=msg.duration_nsec, idle_timeout=msg.idle_timeout,
        hard_timeout=getattr(msg, "hard_timeout", 0), packet_count=msg.packet_count,
        byte_count=msg.byte_count, match=match_bytes(match, to_version), xid=msg.xid)


# Port config bits: OF1.0 has STP ones (NO_STP 2, NO_RECV_STP 8, NO_FLOOD 16) that OF1.3 lacks.
PORT_CONFIG_COMMON = 0x1 | 0x4 | 0x20 | 0x40  # PORT_DOWN, NO_RECV, NO_FWD, NO_PACKET_IN
PORT_STATE_LINK_DOWN = 0x1  # OF1.0's STP states and OF1.3's BLOCKED/LIVE have no counterpart


def port_features(from_version: int, bits: int) -> int:
    """OFPPF_* bits in the other version: speeds up to 10G keep their bits; OF1.0's medium,
    autoneg and pause bits (7..11) are OF1.3's 11..15; 40G/100G/1T/other are lost on 1.0."""
    if from_version == OFP10:
        return (bits & 0x7F) | ((bits >> 7) & 0x1F) << 11
    return (bits & 0x7F) | ((bits >> 11) & 0x1F) << 7


def port_desc_of(desc: Any, from_version: int) -> switch_side.PortDesc:
    """An os-ken port description (ofp_phy_port / ofp_port) as a PortDesc in 32-bit numbering,
    with its bits in OF1.3 terms."""
    port_no = port_from_of10(desc.port_no) if from_version == OFP10 else desc.port_no
    name = desc.name.rstrip(b"\0").decode(errors="replace") if isinstance(desc.name, bytes) \
        else str(desc.name)
    hw_addr = desc.hw_addr if isinstance(desc.hw_addr, str) else \
        ":".join(f"{b:02x}" for b in desc.hw_addr)
    curr, advertised, supported, peer = (
        port_features(OFP10, f) if from_version == OFP10 else f
        for f in (desc.curr, desc.advertised, desc.supported, desc.peer))
    return switch_side.PortDesc(
        port_no, name[:15], hw_addr, desc.config & PORT_CONFIG_COMMON,
        desc.state & PORT_STATE_LINK_DOWN, curr, advertised, supported, peer,
        getattr(desc, "curr_speed", 0), getattr(desc, "max_speed", 0))


def port_for(port: switch_side.PortDesc, to_version: int) -> switch_side.PortDesc:
    """A PortDesc (OF1.3 bits) ready for `to_version`'s encoder; Untranslatable if its number
    does not exist there."""
    if to_version != OFP10:
        return port
    try:
        flows.port_to_of10(port.port_no)
    except flows.Unrepresentable as exc:
        raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_PORT, str(exc)) from exc
    return switch_side.PortDesc(
        port.port_no, port.name, port.hw_addr, port.config, port.state,
        port_features(OFP13, port.curr), port_features(OFP13, port.advertised),
        port_features(OFP13, port.supported), port_features(OFP13, port.peer))


def _port_status(raw: bytes, to_version: int) -> bytes:
    msg = _decode(raw)
    port = port_for(port_desc_of(msg.desc, raw[0]), to_version)
    return switch_side.port_status(to_version, reason=msg.reason, port=port, xid=msg.xid)


_PORT_MOD10 = struct.Struct("!H6sIII4x")
_PORT_MOD13 = struct.Struct("!I4x6s2xIII4x")


def _port_mod(raw: bytes, to_version: int) -> bytes:
    """PORT_MOD, read by hand (os-ken decodes neither version's)."""
    version = raw[0]
    st = _PORT_MOD10 if version == OFP10 else _PORT_MOD13
    if len(raw) != HEADER_LEN + st.size:
        raise RemoteProtocolError(f"PORT_MOD of {len(raw)} bytes")
    port_no, hw_addr, config, mask, advertise = st.unpack_from(raw, HEADER_LEN)
    if (config | mask) & ~PORT_CONFIG_COMMON:
        raise Untranslatable(ET_PORT_MOD_FAILED, PMFC_BAD_CONFIG,
                             f"port config bits {mask:#x} have no OpenFlow 1.3 counterpart")
    advertise = port_features(version, advertise)
    if version == OFP10:
        port_no = port_from_of10(port_no)
        body = _PORT_MOD13.pack(port_no, hw_addr, config, mask, advertise)
        return HEADER.pack(OFP13, OFPT13_PORT_MOD, HEADER_LEN + len(body), _xid(raw)) + body
    try:
        port_no = flows.port_to_of10(port_no)
    except flows.Unrepresentable as exc:
        raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_PORT, str(exc)) from exc
    body = _PORT_MOD10.pack(port_no, hw_addr, config, mask, advertise)
    return HEADER.pack(OFP10, OFPT10_PORT_MOD, HEADER_LEN + len(body), _xid(raw)) + body


# ---------------------------------------------------------------------------------------------
# The table of what is translated


Translator = Callable[[bytes, int], list[bytes]]


def _one(function: Callable[[bytes, int], bytes]) -> Translator:
    return lambda raw, to_version: [function(raw, to_version)]


def _same_body(to_type_10: int, to_type_13: int) -> Translator:
    return lambda raw, to_version: [
        _retype(raw, to_version, to_type_10 if to_version == OFP10 else to_type_13)]


def _stats(raw: bytes, to_version: int) -> list[bytes]:
    from . import translate_stats  # stats import this module's helpers
    return translate_stats.translate_stats(raw, to_version)


_ECHO_REQ = _same_body(OFPT_ECHO_REQUEST, OFPT_ECHO_REQUEST)
_ECHO_REP = _same_body(OFPT_ECHO_REPLY, OFPT_ECHO_REPLY)
_BARRIER_REQ = _same_body(OFPT10_BARRIER_REQUEST, OFPT13_BARRIER_REQUEST)
_BARRIER_REP = _same_body(OFPT10_BARRIER_REPLY, OFPT13_BARRIER_REPLY)

# Source version -> message type -> (name, translator). Nothing else is translated.
TRANSLATED: dict[int, dict[int, tuple[str, Translator]]] = {
    OFP10: {
        OFPT_ERROR: ("ERROR", _one(_error)),
        OFPT_ECHO_REQUEST: ("ECHO_REQUEST", _ECHO_REQ),
        OFPT_ECHO_REPLY: ("ECHO_REPLY", _ECHO_REP),
        OFPT_FEATURES_REPLY: ("FEATURES_REPLY (its ports: a PORT_DESC reply)", _stats),
        OFPT_PACKET_IN: ("PACKET_IN", _one(_packet_in)),
        OFPT_FLOW_REMOVED: ("FLOW_REMOVED", _one(_flow_removed)),
        OFPT_PORT_STATUS: ("PORT_STATUS", _one(_port_status)),
        OFPT_PACKET_OUT: ("PACKET_OUT", _one(_packet_out)),
        OFPT_FLOW_MOD: ("FLOW_MOD", _one(lambda raw, _: _flow_mod_10_to_13(raw))),
        OFPT10_PORT_MOD: ("PORT_MOD", _one(_port_mod)),
        OFPT10_STATS_REQUEST: ("STATS_REQUEST", _stats),
        OFPT10_STATS_REPLY: ("STATS_REPLY", _stats),
        OFPT10_BARRIER_REQUEST: ("BARRIER_REQUEST", _BARRIER_REQ),
        OFPT10_BARRIER_REPLY: ("BARRIER_REPLY", _BARRIER_REP),
    },
    OFP13: {
        OFPT_ERROR: ("ERROR", _one(_error)),
        OFPT_ECHO_REQUEST: ("ECHO_REQUEST", _ECHO_REQ),
        OFPT_ECHO_REPLY: ("ECHO_REPLY", _ECHO_REP),
        OFPT_PACKET_IN: ("PACKET_IN", _one(_packet_in)),
        OFPT_FLOW_REMOVED: ("FLOW_REMOVED", _one(_flow_removed)),
        OFPT_PORT_STATUS: ("PORT_STATUS", _one(_port_status)),
        OFPT_PACKET_OUT: ("PACKET_OUT", _one(_packet_out)),
        OFPT_FLOW_MOD: ("FLOW_MOD", _one(lambda raw, _: _flow_mod_13_to_10(raw))),
        OFPT13_PORT_MOD: ("PORT_MOD", _one(_port_mod)),
        OFPT13_MULTIPART_REQUEST: ("MULTIPART_REQUEST", _stats),
        OFPT13_MULTIPART_REPLY: ("MULTIPART_REPLY", _stats),
        OFPT13_BARRIER_REQUEST: ("BARRIER_REQUEST", _BARRIER_REQ),
        OFPT13_BARRIER_REPLY: ("BARRIER_REPLY", _BARRIER_REP),
    },
}


def translate(raw: bytes, to_version: int) -> list[bytes]:
    """`raw` (one whole OpenFlow 1.0 or 1.3 message) in `to_version`: usually one message,
    more for a statistics reply that outgrows one. The xid is kept.

    Raises Untranslatable when `to_version` has no equivalent (the caller answers the sender
    with `exc.error_message`), RemoteProtocolError when `raw` is malformed.
    """
    if len(raw) < HEADER_LEN:
        raise RemoteProtocolError(f"message of {len(raw)} bytes is shorter than a header")
    version, msg_type = raw[0], raw[1]
    if version == to_version:
        return [raw]
    if {version, to_version} != {OFP10, OFP13}:
        raise Untranslatable(ET_BAD_REQUEST, 0,  # BAD_VERSION
                             f"no translation from 0x{version:02x} to 0x{to_version:02x}")
    entry = TRANSLATED[version].get(msg_type)
    if entry is None:
        raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_TYPE,
                             f"message type {msg_type} of OpenFlow 0x{version:02x} has no "
                             f"OpenFlow 0x{to_version:02x} equivalent")
    try:
        return entry[1](raw, to_version)
    except (Untranslatable, RemoteProtocolError):
        raise
    except Exception as exc:  # struct, index, key, value errors from os-ken's parsers and ours
        raise RemoteProtocolError(f"malformed {entry[0]}: {exc!r}") from exc


def message_name(version: int, msg_type: int) -> str:
    entry = TRANSLATED.get(version, {}).get(msg_type)
    return entry[0] if entry is not None else f"type {msg_type}"


def translate_message(message: Message, to_version: int) -> list[Message]:
    """translate() for framing.Message objects."""
    return [Message(raw[0], raw[1], _xid(raw), raw) for raw in translate(message.raw, to_version)]
