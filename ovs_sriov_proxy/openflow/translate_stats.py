"""OpenFlow 1.0 STATS <-> 1.3 MULTIPART translation (see translate.py for the whole picture).

Requests are read by hand with `struct`: os-ken decodes no statistics request of either version
(FIELD-NOTES); the match inside a flow or aggregate request goes through os-ken's match parser.
Replies come from the bridge and are decoded with os-ken where the bodies differ (flows); the
bodies that differ only in layout (tables, ports) or not at all (description, aggregate) are
moved with `struct`.

What is translated, by statistics type: DESC, FLOW, AGGREGATE, TABLE, PORT and QUEUE in both
directions; OF1.3's PORT_DESC request to an OF1.0 bridge becomes a FEATURES_REQUEST, and the
FEATURES_REPLY that answers it a PORT_DESC reply (OF1.0 lists ports in its features). GROUP,
METER, TABLE_FEATURES and experimenter statistics have no counterpart: Untranslatable.

A flow entry of an OF1.3 reply that OF1.0 cannot show (another table's goto_table, groups,
OXM fields OF1.0 lacks) is left out of the OF1.0 reply: the controller cannot have installed
it, and its flows are still listed whole.
"""

from __future__ import annotations

import struct
from typing import Any

from os_ken.ofproto import ofproto_v1_0_parser as of10p
from os_ken.ofproto import ofproto_v1_3_parser as of13p

from ..rules.model import OFPP_ANY
from . import flows, switch_side
from .framing import (
    HEADER,
    HEADER_LEN,
    MAX_MESSAGE_LEN,
    OFP10,
    OFP13,
    OFPT10_STATS_REPLY,
    OFPT10_STATS_REQUEST,
    OFPT13_MULTIPART_REPLY,
    OFPT13_MULTIPART_REQUEST,
    OFPT_FEATURES_REPLY,
    OFPT_FEATURES_REQUEST,
    RemoteProtocolError,
)
from .packet import port_from_of10
from .translate import (
    OFPG_ANY,
    OFPP10_NONE,
    Untranslatable,
    _decode,
    from_model_actions,
    from_model_match,
    match_bytes,
    oxm_match,
    port_desc_of,
    port_for,
    serialize_actions,
    serialize_instructions,
    to_model_actions,
    to_model_match,
)
from .translate_errors import BRC_BAD_MULTIPART, BRC_BAD_PORT, ET_BAD_REQUEST

ST_DESC, ST_FLOW, ST_AGGREGATE, ST_TABLE, ST_PORT, ST_QUEUE = 0, 1, 2, 3, 4, 5
MP_PORT_DESC = 13
MORE = 1

_HEAD10 = struct.Struct("!HH")  # type, flags
_HEAD13 = struct.Struct("!HH4x")
_FLOW_REQ10 = struct.Struct("!BxH")  # after the 40-byte match: table_id, out_port
_FLOW_REQ13 = struct.Struct("!B3xII4xQQ")  # table_id, out_port, out_group, cookie, cookie_mask
_PORT_REQ10 = struct.Struct("!H6x")
_PORT_REQ13 = struct.Struct("!I4x")
_TABLE10 = struct.Struct("!B3x32sIIIQQ")
_TABLE13 = struct.Struct("!B3xIQQ")
_PORT10 = struct.Struct("!H6x12Q")
_PORT13 = struct.Struct("!I4x12QII")
_QUEUE_REQ10 = struct.Struct("!H2xI")  # port_no, queue_id
_QUEUE_REQ13 = struct.Struct("!II")
_QUEUE10 = struct.Struct("!H2xIQQQ")  # port_no, queue_id, tx_bytes, tx_packets, tx_errors
_QUEUE13 = struct.Struct("!IIQQQII")  # ... and duration_sec, duration_nsec
# A queue statistics request names every port with OFPP_ALL in OF1.0 and OFPP_ANY in OF1.3.
OFPP10_ALL = 0xFFFC
_FLOW10_HEAD = struct.Struct("!HBx")  # length, table_id; the match follows
_FLOW10_TAIL = struct.Struct("!IIHHH6xQQQ")
_FLOW13 = struct.Struct("!HBxIIHHHH4xQQQ")
_OFPFW10_ALL = (1 << 22) - 1


def translate_stats(raw: bytes, to_version: int) -> list[bytes]:
    version, msg_type, _, xid = HEADER.unpack_from(raw)
    if msg_type == OFPT_FEATURES_REPLY:  # only ever the answer to a translated PORT_DESC
        return _features_to_port_desc(raw, xid)
    request = msg_type == (OFPT10_STATS_REQUEST if version == OFP10 else OFPT13_MULTIPART_REQUEST)
    head = _HEAD10 if version == OFP10 else _HEAD13
    if len(raw) < HEADER_LEN + head.size:
        raise RemoteProtocolError(f"statistics message of {len(raw)} bytes")
    stats_type, flags = head.unpack_from(raw, HEADER_LEN)
    body = raw[HEADER_LEN + head.size :]
    if request:
        if version == OFP13 and stats_type == MP_PORT_DESC:
            return [HEADER.pack(OFP10, OFPT_FEATURES_REQUEST, HEADER_LEN, xid)]
        translated = _request_body(version, stats_type, body)
        return [_stats_message(to_version, True, stats_type, flags, translated, xid)]
    entries = _reply_entries(version, stats_type, raw, body)
    return _replies(to_version, stats_type, flags & MORE, entries, xid)


def _stats_message(version: int, request: bool, stats_type: int, flags: int, body: bytes,
                   xid: int) -> bytes:
    if version == OFP10:
        msg_type = OFPT10_STATS_REQUEST if request else OFPT10_STATS_REPLY
        head = _HEAD10.pack(stats_type, flags)
    else:
        msg_type = OFPT13_MULTIPART_REQUEST if request else OFPT13_MULTIPART_REPLY
        head = _HEAD13.pack(stats_type, flags)
    length = HEADER_LEN + len(head) + len(body)
    return HEADER.pack(version, msg_type, length, xid) + head + body


def _replies(version: int, stats_type: int, more: int, entries: list[bytes],
             xid: int) -> list[bytes]:
    """Reply messages holding `entries`, split where one message would overflow; all but the
    last flagged MORE (and the last too when the original was)."""
    room = MAX_MESSAGE_LEN - HEADER_LEN - (_HEAD10.size if version == OFP10 else _HEAD13.size)
    chunks: list[list[bytes]] = [[]]
    size = 0
    for entry in entries:
        if size + len(entry) > room and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += len(entry)
    return [_stats_message(version, False, stats_type,
                           MORE if i < len(chunks) - 1 or more else 0, b"".join(chunk), xid)
            for i, chunk in enumerate(chunks)]


# ---- requests ----


def _request_body(version: int, stats_type: int, body: bytes) -> bytes:
    if stats_type in (ST_DESC, ST_TABLE):
        return b""
    if stats_type in (ST_FLOW, ST_AGGREGATE):
        return _flow_request(version, body)
    if stats_type == ST_PORT:
        if version == OFP10:
            (port_no,) = _PORT_REQ10.unpack_from(body)
            return _PORT_REQ13.pack(OFPP_ANY if port_no == OFPP10_NONE else
                                    port_from_of10(port_no))
        (port_no,) = _PORT_REQ13.unpack_from(body)
        return _PORT_REQ10.pack(OFPP10_NONE if port_no == OFPP_ANY else _of10_port(port_no))
    if stats_type == ST_QUEUE:
        if version == OFP10:
            port_no, queue_id = _QUEUE_REQ10.unpack_from(body)
            return _QUEUE_REQ13.pack(OFPP_ANY if port_no == OFPP10_ALL else
                                     port_from_of10(port_no), queue_id)
        port_no, queue_id = _QUEUE_REQ13.unpack_from(body)
        return _QUEUE_REQ10.pack(OFPP10_ALL if port_no == OFPP_ANY else _of10_port(port_no),
                                 queue_id)
    raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_MULTIPART,
                         f"statistics type {stats_type} has no counterpart")


def _of10_port(port: int) -> int:
    try:
        return flows.port_to_of10(port)
    except flows.Unrepresentable as exc:
        raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_PORT, str(exc)) from exc


def _flow_request(version: int, body: bytes) -> bytes:
    if version == OFP10:
        match = to_model_match(of10p.OFPMatch.parse(body, 0), OFP10)
        table_id, out_port = _FLOW_REQ10.unpack_from(body, 40)
        out = OFPP_ANY if out_port == OFPP10_NONE else port_from_of10(out_port)
        return _FLOW_REQ13.pack(table_id, out, OFPG_ANY, 0, 0) + oxm_match(match)
    table_id, out_port, out_group, _cookie, cookie_mask = _FLOW_REQ13.unpack_from(body)
    if cookie_mask:
        raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_MULTIPART,
                             "OpenFlow 1.0 cannot select flows by cookie")
    if out_group != OFPG_ANY:
        raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_MULTIPART, "OpenFlow 1.0 has no groups")
    ofmatch = of13p.OFPMatch.parser(body, _FLOW_REQ13.size)
    match = from_model_match(to_model_match(ofmatch, OFP13), OFP10)
    buf = bytearray(40)
    match.serialize(buf, 0)
    out = OFPP10_NONE if out_port == OFPP_ANY else _of10_port(out_port)
    return bytes(buf) + _FLOW_REQ10.pack(table_id, out)


# ---- replies ----


def _reply_entries(version: int, stats_type: int, raw: bytes, body: bytes) -> list[bytes]:
    if stats_type in (ST_DESC, ST_AGGREGATE):
        return [body]  # the same layout in both versions
    if stats_type == ST_TABLE:
        return _table_entries(version, body)
    if stats_type == ST_PORT:
        return _port_entries(version, body)
    if stats_type == ST_FLOW:
        return _flow_entries(version, raw)
    if stats_type == ST_QUEUE:
        return _queue_entries(version, body)
    raise Untranslatable(ET_BAD_REQUEST, BRC_BAD_MULTIPART,
                         f"statistics type {stats_type} has no counterpart")


def _table_entries(version: int, body: bytes) -> list[bytes]:
    out = []
    if version == OFP10:
        for offset in range(0, len(body) - _TABLE10.size + 1, _TABLE10.size):
            table_id, _name, _wc, _max, active, lookup, matched = _TABLE10.unpack_from(body, offset)
            out.append(_TABLE13.pack(table_id, active, lookup, matched))
        return out
    for offset in range(0, len(body) - _TABLE13.size + 1, _TABLE13.size):
        table_id, active, lookup, matched = _TABLE13.unpack_from(body, offset)
        # OF1.0 wants a name, the wildcards it supports and a size: OF1.3 no longer says.
        out.append(_TABLE10.pack(table_id, f"table{table_id}".encode(), _OFPFW10_ALL,
                                 1_000_000, active, lookup, matched))
    return out


def _port_entries(version: int, body: bytes) -> list[bytes]:
    out = []
    if version == OFP10:
        for offset in range(0, len(body) - _PORT10.size + 1, _PORT10.size):
            port_no, *counters = _PORT10.unpack_from(body, offset)
            out.append(_PORT13.pack(port_from_of10(port_no), *counters, 0, 0))
        return out
    for offset in range(0, len(body) - _PORT13.size + 1, _PORT13.size):
        port_no, *counters = _PORT13.unpack_from(body, offset)
        try:
            port10 = flows.port_to_of10(port_no)
        except flows.Unrepresentable:
            continue  # a port number OF1.0 cannot name
        out.append(_PORT10.pack(port10, *counters[:12]))
    return out


def _queue_entries(version: int, body: bytes) -> list[bytes]:
    out = []
    if version == OFP10:
        for offset in range(0, len(body) - _QUEUE10.size + 1, _QUEUE10.size):
            port_no, queue_id, *counters = _QUEUE10.unpack_from(body, offset)
            # OF1.0 does not say how long a queue has existed: 0, as for port statistics.
            out.append(_QUEUE13.pack(port_from_of10(port_no), queue_id, *counters, 0, 0))
        return out
    for offset in range(0, len(body) - _QUEUE13.size + 1, _QUEUE13.size):
        port_no, queue_id, *counters = _QUEUE13.unpack_from(body, offset)
        try:
            port10 = flows.port_to_of10(port_no)
        except flows.Unrepresentable:
            continue  # a port number OF1.0 cannot name
        out.append(_QUEUE10.pack(port10, queue_id, *counters[:3]))
    return out


def _flow_entries(version: int, raw: bytes) -> list[bytes]:
    msg = _decode(raw)
    out = []
    for stat in msg.body:
        try:
            out.append(_flow_entry_10_to_13(stat) if version == OFP10 else
                       _flow_entry_13_to_10(stat))
        except Untranslatable:
            continue  # see the module docstring
    return out


def _flow_entry_10_to_13(stat: Any) -> bytes:
    match = to_model_match(stat.match, OFP10)
    actions = from_model_actions(to_model_actions(stat.actions, OFP10, match), OFP13)
    ofmatch = oxm_match(match)
    instructions = serialize_instructions(actions)
    length = _FLOW13.size + len(ofmatch) + len(instructions)
    return _FLOW13.pack(length, stat.table_id, stat.duration_sec, stat.duration_nsec,
                        stat.priority, stat.idle_timeout, stat.hard_timeout, 0, stat.cookie,
                        stat.packet_count, stat.byte_count) + ofmatch + instructions


def _flow_entry_13_to_10(stat: Any) -> bytes:
    match = to_model_match(stat.match, OFP13)
    from_model_match(match, OFP10)
    actions = from_model_actions(to_model_actions(stat.instructions, OFP13, match), OFP10,
                                 match)
    ofmatch = match_bytes(match, OFP10)
    encoded = serialize_actions(actions)
    length = _FLOW10_HEAD.size + len(ofmatch) + _FLOW10_TAIL.size + len(encoded)
    return (_FLOW10_HEAD.pack(length, stat.table_id) + ofmatch
            + _FLOW10_TAIL.pack(stat.duration_sec, stat.duration_nsec, stat.priority,
                                stat.idle_timeout, stat.hard_timeout, stat.cookie,
                                stat.packet_count, stat.byte_count) + encoded)


def _features_to_port_desc(raw: bytes, xid: int) -> list[bytes]:
    """An OF1.0 FEATURES_REPLY, asked for by a translated PORT_DESC request: its ports."""
    msg = _decode(raw)
    ports = [port_for(port_desc_of(p, OFP10), OFP13) for p in msg.ports.values()]
    return switch_side.port_desc_replies(OFP13, ports, xid)
