"""Structure checks that run before os-ken parses a message a peer sent.

os-ken's parsers walk TLV lists by the length of each element, read from the wire for some
types and fixed by the class for others, and its OF1.3 parser skips an instruction of a type it
does not know without moving on. So an unknown instruction; an instruction, flow entry, port,
nested Nicira action or property of length 0; or an action or instruction longer than its type
(os-ken then reads its padding as an element of length 0) makes them loop forever. Fuzzing the
translation and the decoder found these: one FLOW_MOD from a controller hung the whole proxy.
These checks walk the same lists by hand (os-ken has no validator) and refuse, as the sender's
fault, any list that would not advance, does not fit, or would make os-ken land elsewhere.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from os_ken.ofproto import (
    ofproto_v1_0_parser,
    ofproto_v1_3_parser,
    ofproto_v1_4_parser,
    ofproto_v1_5_parser,
)

from .framing import HEADER_LEN, OFP10, OFP13, RemoteProtocolError

OFPT_FLOW_REMOVED = 11
OFPT_FLOW_MOD = 14
OFPT_MULTIPART_REPLY = {OFP10: 17}  # OFPT_STATS_REPLY in 1.0; 19 from 1.3 on
OFPMP_FLOW = 1  # OFPST_FLOW in 1.0
OFPMT_OXM = 1
_TLV = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_FLOW_MOD_FIXED = {OFP10: HEADER_LEN + 64}  # header + match(40) + fixed fields; 1.3+: 48
_FLOW_MOD_MATCH_AT = HEADER_LEN + 40  # 1.3, 1.4 and 1.5
_FLOW_REMOVED_MATCH_AT = HEADER_LEN + 40  # 1.3 and 1.4
_FLOW_REMOVED_MATCH_AT_15 = HEADER_LEN + 16
_MULTIPART_BODY_AT = {OFP10: HEADER_LEN + 4}  # type, flags; 1.3+: and 4 bytes of padding
# A flow entry's fixed part before its match (1.3/1.4: ofp_flow_stats; 1.5: ofp_flow_desc).
_FLOW_ENTRY_MATCH_AT = {0x04: 48, 0x05: 48, 0x06: 24}
_FLOW_ENTRY_10_FIXED = 88  # length .. byte_count, match included
# Instruction types each version's parser knows (it returns None for any other and stalls).
_INSTRUCTION_TYPES = {
    0x04: frozenset(ofproto_v1_3_parser.OFPInstruction._INSTRUCTION_TYPES),
    0x05: frozenset(ofproto_v1_4_parser.OFPInstruction._INSTRUCTION_TYPES),
    0x06: frozenset(ofproto_v1_5_parser.OFPInstruction._INSTRUCTION_TYPES),
}
_ACTION_LIST_INSTRUCTIONS = frozenset({3, 4})  # WRITE_ACTIONS, APPLY_ACTIONS
_INSTRUCTION_PARSERS = {
    0x04: ofproto_v1_3_parser.OFPInstruction.parser,
    0x05: ofproto_v1_4_parser.OFPInstruction.parser,
    0x06: ofproto_v1_5_parser.OFPInstruction.parser,
}
_ACTION_PARSERS = {
    OFP10: ofproto_v1_0_parser.OFPAction.parser,
    0x04: ofproto_v1_3_parser.OFPAction.parser,
    0x05: ofproto_v1_4_parser.OFPAction.parser,
    0x06: ofproto_v1_5_parser.OFPAction.parser,
}
OFPAT_EXPERIMENTER = 0xFFFF  # OFPAT_VENDOR in 1.0
NX_VENDOR = 0x00002320
NXAST_CT, NXAST_CONTROLLER2 = 35, 37
NXAC2PT_USERDATA = 3
_NX_HEADER = struct.Struct("!IH")  # after type and length: vendor, subtype
_NX_CT_FIXED = 24  # nx_action_conntrack before its nested actions
_NX_CONTROLLER2_FIXED = 16  # nx_action_controller2 before its properties
# Multipart replies the proxy decodes (codec.decode, translate._decode): os-ken walks the
# others' bodies by each entry's own length too, and nothing needs them decoded.
OFPMP_PORT_DESC = 13
_PORT_14_FIXED = 40  # ofp_port from OpenFlow 1.4 on, before its properties


def check(version: int, msg_type: int, raw: bytes) -> None:
    """Raise RemoteProtocolError if os-ken could not walk this message's lists safely.
    Messages without lists of variable elements pass unchecked."""
    try:
        _check(version, msg_type, raw)
    except struct.error as exc:  # a bound this module missed: still the sender's fault
        raise RemoteProtocolError(f"malformed message type {msg_type}: {exc}") from exc


def _check(version: int, msg_type: int, raw: bytes) -> None:
    if msg_type == OFPT_FLOW_MOD:
        check_flow_mod(version, raw)
    elif msg_type == OFPT_FLOW_REMOVED and version != OFP10:
        check_match(raw, _FLOW_REMOVED_MATCH_AT_15 if version == 0x06 else _FLOW_REMOVED_MATCH_AT,
                    len(raw))
    elif msg_type == OFPT_MULTIPART_REPLY.get(version, 19):
        _check_multipart_reply(version, raw)


def check_actions(raw: bytes, start: int, end: int, what: str = "action list",
                  version: int | None = None) -> list[Any]:
    """The TLV framing of an action list. With `version`, also that os-ken, which walks an
    action list by the lengths *it* gives each action (a fixed size for the standard ones),
    lands where the wire says: a pop_vlan claiming 16 bytes would otherwise make it parse the
    padding as an action of length 0, forever. That parses each action once with os-ken, so
    it is for lists os-ken will walk, not for the PACKET_OUTs relayed as bytes; the os-ken
    actions parsed are returned (none without `version`)."""
    parsed: list[Any] = []
    offset = start
    while offset < end:
        if end - offset < 8:
            raise RemoteProtocolError(f"{what} ends inside an action")
        kind, length = _TLV.unpack_from(raw, offset)
        if length < 8 or length % 8 or offset + length > end:
            raise RemoteProtocolError(f"{what}: an action of length {length} does not fit")
        if kind == OFPAT_EXPERIMENTER and length >= 16:  # a Nicira action's smallest size
            _check_nicira_action(raw, offset, offset + length, what, version)
        if version is not None:
            parsed.append(_parsed_at_its_length(_ACTION_PARSERS[version],
                                                raw[offset:offset + length], kind,
                                                f"{what}: an action"))
        offset += length
    return parsed


def _parsed_at_its_length(parser: Callable[[bytes, int], Any], element: bytes, kind: int,
                          what: str) -> Any:
    """os-ken's object for one list element, which must be as long as os-ken makes it: os-ken
    steps through a list by the `len` it gives each element, not by the wire's length."""
    try:
        parsed = parser(element, 0)
    except Exception as exc:  # os-ken raises struct, key, attribute and its own errors
        raise RemoteProtocolError(f"{what} of type {kind} is undecodable: {exc!r}") from exc
    if getattr(parsed, "len", None) != len(element):
        raise RemoteProtocolError(f"{what} of type {kind} is not {len(element)} bytes")
    return parsed


def _check_nicira_action(raw: bytes, start: int, end: int, what: str,
                         version: int | None) -> None:
    """The two Nicira actions os-ken parses with a loop of their own: ct() holds actions, and
    controller2 holds properties that os-ken steps through by their lengths."""
    vendor, subtype = _NX_HEADER.unpack_from(raw, start + 4)
    if vendor != NX_VENDOR:
        return
    if subtype == NXAST_CT:
        check_actions(raw, start + _NX_CT_FIXED, end, f"{what}: ct()'s actions",
                      version if version is not None else OFP13)
    elif subtype == NXAST_CONTROLLER2:
        offset = start + _NX_CONTROLLER2_FIXED
        while offset < end:
            if end - offset < 4:
                raise RemoteProtocolError(f"{what}: controller() ends inside a property")
            kind, length = _TLV.unpack_from(raw, offset)
            if length < 4 or offset + length > end:
                raise RemoteProtocolError(
                    f"{what}: a controller() property of length {length} does not fit")
            offset += 4 + (_userdata_size(length - 4) if kind == NXAC2PT_USERDATA else 4)


def _userdata_size(length: int) -> int:
    """How far os-ken's controller2 parser moves past a userdata property (nx_actions.py):
    walking as it does checks every position it will read."""
    size = (length + 3) // 4 * 4
    return size + 4 if size > 4 and size % 8 == 0 else size


def check_instructions(version: int, raw: bytes, start: int, end: int) -> None:
    known = _INSTRUCTION_TYPES[version]
    offset = start
    while offset < end:
        if end - offset < 8:
            raise RemoteProtocolError("instruction list ends inside an instruction")
        kind, length = _TLV.unpack_from(raw, offset)
        if kind not in known:
            raise RemoteProtocolError(f"unknown instruction type {kind}")
        if length < 8 or length % 8 or offset + length > end:
            raise RemoteProtocolError(f"an instruction of length {length} does not fit")
        if kind in _ACTION_LIST_INSTRUCTIONS:
            check_actions(raw, offset + 8, offset + length, "instruction's action list", version)
        # Fixed for goto_table, meter, write_metadata...: it must land where the wire says.
        _parsed_at_its_length(_INSTRUCTION_PARSERS[version], raw[offset:offset + length], kind,
                              "an instruction")
        offset += length


def check_match(raw: bytes, at: int, end: int) -> int:
    """Check an OXM match's header at `at`; return where what follows it (padded) begins."""
    if end - at < 4:
        raise RemoteProtocolError("message ends inside its match")
    kind, length = _TLV.unpack_from(raw, at)
    if kind != OFPMT_OXM or length < 4:
        raise RemoteProtocolError(f"match of type {kind} and length {length}")
    after = at + (length + 7) // 8 * 8
    if after > end:
        raise RemoteProtocolError(f"match of length {length} does not fit")
    return after


def check_flow_mod(version: int, raw: bytes) -> None:
    if version == OFP10:
        fixed = _FLOW_MOD_FIXED[OFP10]
        if len(raw) < fixed:
            raise RemoteProtocolError("FLOW_MOD shorter than its fixed part")
        check_actions(raw, fixed, len(raw), "FLOW_MOD action list", version)
        return
    after = check_match(raw, _FLOW_MOD_MATCH_AT, len(raw))
    check_instructions(version, raw, after, len(raw))


def _check_multipart_reply(version: int, raw: bytes) -> None:
    body_at = _MULTIPART_BODY_AT.get(version, HEADER_LEN + 8)
    if len(raw) < body_at:
        raise RemoteProtocolError("multipart reply shorter than its header")
    (kind,) = _U16.unpack_from(raw, HEADER_LEN)
    if kind == OFPMP_PORT_DESC and version != OFP10:
        _check_ports(version, raw, body_at)
        return
    if kind != OFPMP_FLOW:
        raise RemoteProtocolError(f"multipart reply of type {kind}: not one the proxy decodes")
    offset, end = body_at, len(raw)
    minimum = _FLOW_ENTRY_10_FIXED if version == OFP10 else _FLOW_ENTRY_MATCH_AT[version] + 8
    while offset < end:
        if end - offset < 2:
            raise RemoteProtocolError("flow statistics end inside an entry")
        (length,) = _U16.unpack_from(raw, offset)
        if length < minimum or length % 8 or offset + length > end:
            raise RemoteProtocolError(f"a flow statistics entry of length {length} does not fit")
        entry_end = offset + length
        if version == OFP10:
            check_actions(raw, offset + _FLOW_ENTRY_10_FIXED, entry_end, "flow entry's actions",
                          version)
        else:
            after = check_match(raw, offset + _FLOW_ENTRY_MATCH_AT[version], entry_end)
            if version == 0x06:  # 1.5 entries carry statistics (OXS) between the two
                after = _skip_stats(raw, after, entry_end)
            check_instructions(version, raw, after, entry_end)
        offset = entry_end


def _skip_stats(raw: bytes, at: int, end: int) -> int:
    """Where what follows a 1.5 ofp_stats (OXS list, padded to 8) at `at` begins."""
    if end - at < 4:
        raise RemoteProtocolError("flow entry ends inside its statistics")
    _, length = _TLV.unpack_from(raw, at)
    after = at + (length + 7) // 8 * 8
    if length < 4 or after > end:
        raise RemoteProtocolError(f"flow entry statistics of length {length} do not fit")
    return after


def _check_ports(version: int, raw: bytes, offset: int) -> None:
    """1.3 ports have a fixed size; from 1.4 on each carries its length, which os-ken trusts."""
    if version == 0x04:
        return
    end = len(raw)
    while offset < end:
        if end - offset < 8:
            raise RemoteProtocolError("port description ends inside a port")
        (length,) = _U16.unpack_from(raw, offset + 4)
        if length < _PORT_14_FIXED or length % 8 or offset + length > end:
            raise RemoteProtocolError(f"a port description of length {length} does not fit")
        offset += length
