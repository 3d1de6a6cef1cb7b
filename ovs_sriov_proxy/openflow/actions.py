"""Walking the actions of raw OpenFlow messages, for the few rewrites the proxy makes in them
(group and meter ids, learn() actions), without decoding the rest.

Every action list a controller can send is reached: a FLOW_MOD's (1.0) or its apply- and
write-actions instructions (1.1+), a PACKET_OUT's, the buckets of a 1.1-1.4 GROUP_MOD, and the
actions nested in Nicira's clone(...). Visitors get the buffer and the action's offset, type
and length, and may rewrite it in place (same length). Lengths that do not fit end a walk
quietly: the messages were checked (openflow/wellformed.py) or come from the bridge.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

OFP10, OFP15 = 0x01, 0x06
OFPT_PACKET_OUT, OFPT_FLOW_MOD, OFPT_GROUP_MOD = 13, 14, 15
OFPIT_WRITE_ACTIONS, OFPIT_APPLY_ACTIONS = 3, 4
OFPAT_EXPERIMENTER = 0xFFFF
NX_VENDOR, NXAST_CLONE = 0x00002320, 42

# (buffer, offset, type, length) of one action, or of one instruction.
Visitor = Callable[[bytearray, int, int, int], None]

_TL = struct.Struct("!HH")
_U16 = struct.Struct("!H")


def nicira_subtype(buf: bytearray, at: int, length: int) -> int | None:
    """The subtype of a Nicira experimenter action at `at`, else None."""
    if length < 16:
        return None
    vendor, subtype = struct.unpack_from("!IH", buf, at + 4)
    return subtype if vendor == NX_VENDOR else None


MAX_NESTING = 16  # clone(clone(...)): deeper lists are not walked (OVS refuses far less)


def walk_actions(buf: bytearray, at: int, end: int, visit: Visitor, depth: int = 0) -> None:
    while at + 8 <= end:
        action_type, length = _TL.unpack_from(buf, at)
        if length < 8 or at + length > end:
            return
        visit(buf, at, action_type, length)
        if (action_type == OFPAT_EXPERIMENTER and depth < MAX_NESTING
                and nicira_subtype(buf, at, length) == NXAST_CLONE):
            walk_actions(buf, at + 16, at + length, visit, depth + 1)
        at += length


def walk_instructions(buf: bytearray, at: int, end: int, visit_action: Visitor,
                      visit_instruction: Visitor | None = None) -> None:
    while at + 8 <= end:
        kind, length = _TL.unpack_from(buf, at)
        if length < 8 or at + length > end:
            return
        if kind in (OFPIT_WRITE_ACTIONS, OFPIT_APPLY_ACTIONS):
            walk_actions(buf, at + 8, at + length, visit_action)
        elif visit_instruction is not None:
            visit_instruction(buf, at, kind, length)
        at += length


def padded_match_end(buf: bytearray, match_at: int) -> int:
    """Where an OXM match (1.1+) that starts at `match_at` ends, padding included."""
    (match_len,) = _U16.unpack_from(buf, match_at + 2)
    return match_at + (match_len + 7) // 8 * 8


def walk_buckets(buf: bytearray, at: int, end: int, visit: Visitor,
                 visit_bucket: Callable[[bytearray, int], None] | None = None) -> None:
    """1.1-1.4 buckets: length, weight, watch_port, watch_group, pad, actions."""
    while at + 16 <= end:
        (length,) = _U16.unpack_from(buf, at)
        if length < 16 or at + length > end:
            return
        if visit_bucket is not None:
            visit_bucket(buf, at)
        walk_actions(buf, at + 16, at + length, visit)
        at += length


OFPGBPT15_WATCH_GROUP = 2  # a 1.5 bucket property: the group whose liveness it watches


def walk_buckets15(buf: bytearray, at: int, end: int, visit: Visitor,
                   visit_watch_group: Callable[[bytearray, int], None] | None = None) -> None:
    """1.5 buckets: length, action_array_len, bucket_id, actions, properties (the watch_group
    property's value is passed to `visit_watch_group` by offset)."""
    while at + 8 <= end:
        length, actions_len = _TL.unpack_from(buf, at)
        if length < 8 or at + length > end or 8 + actions_len > length:
            return
        walk_actions(buf, at + 8, at + 8 + actions_len, visit)
        prop = at + 8 + actions_len
        while visit_watch_group is not None and prop + 8 <= at + length:
            kind, prop_len = _TL.unpack_from(buf, prop)
            if prop_len < 4 or prop + prop_len > at + length:
                break
            if kind == OFPGBPT15_WATCH_GROUP and prop_len >= 8:
                visit_watch_group(buf, prop + 4)
            prop += (prop_len + 7) // 8 * 8
        at += length


def walk_message(buf: bytearray, visit: Visitor) -> None:
    """Every action of a FLOW_MOD, PACKET_OUT or GROUP_MOD; other messages have none."""
    if len(buf) < 8:
        return
    version, msg_type = buf[0], buf[1]
    if version == OFP10:
        if msg_type == OFPT_FLOW_MOD:
            walk_actions(buf, 72, len(buf), visit)
        elif msg_type == OFPT_PACKET_OUT and len(buf) >= 16:
            (actions_len,) = _U16.unpack_from(buf, 14)
            walk_actions(buf, 16, min(16 + actions_len, len(buf)), visit)
        return
    if msg_type == OFPT_FLOW_MOD and len(buf) >= 56:
        walk_instructions(buf, padded_match_end(buf, 48), len(buf), visit)
    elif msg_type == OFPT_PACKET_OUT and len(buf) >= 24:
        if version >= OFP15:
            (actions_len,) = _U16.unpack_from(buf, 12)
            at = padded_match_end(buf, 16)
        else:
            (actions_len,) = _U16.unpack_from(buf, 16)
            at = 24
        walk_actions(buf, at, min(at + actions_len, len(buf)), visit)
    elif msg_type == OFPT_GROUP_MOD and version < OFP15:
        walk_buckets(buf, 16, len(buf), visit)
    elif msg_type == OFPT_GROUP_MOD and len(buf) >= 24:
        (buckets_len,) = _U16.unpack_from(buf, 16)
        walk_buckets15(buf, 24, min(24 + buckets_len, len(buf)), visit)
