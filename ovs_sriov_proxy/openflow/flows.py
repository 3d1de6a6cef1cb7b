"""Encoding the proxy's version-neutral rules into OpenFlow messages, and decoding them back.

This module owns the mapping between rules/model.py (OXM field names, packed value/mask matches,
32-bit port numbers) and the wire messages of OpenFlow 1.0, 1.3, 1.4 and 1.5: FLOW_MOD add and
delete, the table-miss flow, PACKET_OUT. os-ken's parsers do the serialization, so every message
is what os-ken itself would send (one os-ken bug aside, see packet_out); the two templates at the
end render the same bytes by hand, for the miss path.

What a version cannot say raises `Unrepresentable`. A match whose masks a version cannot express
can be narrowed with the key of the packet being answered: each such field is pinned to (a
coarser-grained mask around) the packet's own value, so the installed flow matches a subset of
the rule and still matches that packet.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as of10p

from ..rules.fields import (
    ETH_TYPE_ARP,
    FIELDS,
    IP_PROTO_ICMP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    VLAN_PRESENT,
)
from ..rules.model import Action, Match, Output, PopVlan, PushVlan, SetField, SetQueue
from .packet import port_from_of10

OF10 = 0x01
OF13 = 0x04
OF14 = 0x05
OF15 = 0x06
SUPPORTED_VERSIONS = frozenset({OF10, OF13, OF14, OF15})

NO_BUFFER = 0xFFFFFFFF
OFPT_PACKET_OUT = 13  # the same number in every supported version
_MAX_MESSAGE = 0xFFFF

# OF1.0 reserved ports are OF1.3's minus this; OF1.0 has no port numbers in between.
_OF10_PORT_OFFSET = 0xFFFF0000
_OF10_PORT_MAX = 0xFF00
_OF13_PORT_MAX = 0xFFFFFF00
_OUTPUT_DEFAULT_MAX_LEN = Output(0).max_len


class Unrepresentable(ValueError):
    """The OpenFlow version at hand cannot express this match or action list."""


# ---------------------------------------------------------------------------------------------
# Versions and ports


@cache
def _datapath(version: int) -> ofproto_protocol.ProtocolDesc:
    """os-ken's stand-in for a datapath: only carries the version's ofproto modules."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported OpenFlow version 0x{version:02x}")
    return ofproto_protocol.ProtocolDesc(version)


def port_to_of10(port: int) -> int:
    """A 32-bit (OF1.1+) port number as OF1.0's 16-bit one."""
    if 0 <= port < _OF10_PORT_MAX:
        return port
    if _OF13_PORT_MAX <= port <= 0xFFFFFFFF:
        return port - _OF10_PORT_OFFSET
    raise Unrepresentable(f"port {port:#x} has no OpenFlow 1.0 number")


# ---------------------------------------------------------------------------------------------
# Field values in os-ken's user format (OF1.3+ OXM)

_MAC_FIELDS = frozenset({"eth_dst", "eth_src", "arp_sha", "arp_tha"})
_IPV4_FIELDS = frozenset({"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"})
_IPV6_FIELDS = frozenset({"ipv6_src", "ipv6_dst"})


def _mac_text(value: int) -> str:
    raw = value.to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


def _to_user(name: str, value: int) -> Any:
    if name in _MAC_FIELDS:
        return _mac_text(value)
    if name in _IPV4_FIELDS:
        return str(ipaddress.IPv4Address(value))
    if name in _IPV6_FIELDS:
        return str(ipaddress.IPv6Address(value))
    return value


def _from_user(name: str, value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    if name in _MAC_FIELDS:
        return int(value.replace(":", ""), 16)
    if name in _IPV4_FIELDS:
        return int(ipaddress.IPv4Address(value))
    if name in _IPV6_FIELDS:
        return int(ipaddress.IPv6Address(value))
    raise Unrepresentable(f"cannot read value {value!r} of field {name}")


# ---------------------------------------------------------------------------------------------
# Which masks each version can express

_ANY = "any"  # arbitrary bitwise mask
_PREFIX = "prefix"  # CIDR prefix only
_EXACT = "exact"  # all-ones or wildcarded

# OF1.3+: the maskable fields of the OF1.3 spec (table 11), plus the L4 ports, which Open vSwitch
# accepts masked as well. A mask on any other field earns OFPBMC_BAD_MASK from the switch.
_MASKS_OXM: dict[str, str] = {name: _EXACT for name in FIELDS}
_MASKS_OXM.update(
    {
        name: _ANY
        for name in (
            "eth_dst", "eth_src", "vlan_vid", "ipv4_src", "ipv4_dst",
            "tcp_src", "tcp_dst", "udp_src", "udp_dst", "sctp_src", "sctp_dst",
            "arp_spa", "arp_tpa", "arp_sha", "arp_tha",
            "ipv6_src", "ipv6_dst", "ipv6_flabel",
        )
    }
)  # fmt: skip

# OF1.0: only nw_src/nw_dst take CIDR masks; fields missing here do not exist in OF1.0.
_MASKS_OF10: dict[str, str] = {
    "in_port": _EXACT, "eth_dst": _EXACT, "eth_src": _EXACT, "eth_type": _EXACT,
    "vlan_vid": _EXACT, "vlan_pcp": _EXACT, "ip_dscp": _EXACT, "ip_proto": _EXACT,
    "ipv4_src": _PREFIX, "ipv4_dst": _PREFIX,
    "tcp_src": _EXACT, "tcp_dst": _EXACT, "udp_src": _EXACT, "udp_dst": _EXACT,
    "icmpv4_type": _EXACT, "icmpv4_code": _EXACT,
    "arp_op": _EXACT, "arp_spa": _PREFIX, "arp_tpa": _PREFIX,
}  # fmt: skip


def _expressible(policy: str, mask: int, bits: int) -> int:
    """The narrowest mask `policy` can express that keeps every bit of `mask`."""
    if policy == _ANY:
        return mask
    full = (1 << bits) - 1
    if policy == _EXACT:
        return full
    trailing_zeros = (mask & -mask).bit_length() - 1
    return full & ~((1 << trailing_zeros) - 1)


def _expressible_fields(
    match: Match, version: int, key: int | None
) -> dict[str, tuple[int, int]]:
    """match.fields(), with each field narrowed to what `version` can express, or raise."""
    policies = _MASKS_OF10 if version == OF10 else _MASKS_OXM
    if key is not None and not match.matches(key):
        raise ValueError("the packet key does not match the rule it should narrow")
    out: dict[str, tuple[int, int]] = {}
    for name, (value, mask) in match.fields().items():
        policy = policies.get(name)
        if policy is None:
            raise Unrepresentable(f"OpenFlow 0x{version:02x} has no field {name}")
        field = FIELDS[name]
        wanted = _expressible(policy, mask, field.bits)
        if wanted != mask:
            if key is None:
                raise Unrepresentable(
                    f"OpenFlow 0x{version:02x} cannot match {name} with mask {mask:#x}"
                )
            value = (key >> field.offset) & wanted
            mask = wanted
        out[name] = (value, mask)
    return out


# ---------------------------------------------------------------------------------------------
# Matches


def encode_match(match: Match, version: int, key: int | None = None) -> Any:
    """`match` as an os-ken OFPMatch of `version`; see the module docstring for `key`."""
    dp = _datapath(version)
    fields = _expressible_fields(match, version, key)
    if version == OF10:
        return _encode_match_of10(fields)
    kwargs: dict[str, Any] = {}
    for name, (value, mask) in fields.items():
        if mask == FIELDS[name].full_mask:
            kwargs[name] = _to_user(name, value)
        else:
            kwargs[name] = (_to_user(name, value), _to_user(name, mask))
    return dp.ofproto_parser.OFPMatch(**kwargs)


def _encode_match_of10(fields: dict[str, tuple[int, int]]) -> Any:
    values = {name: value for name, (value, _) in fields.items()}
    wildcards = of10.OFPFW_ALL
    attrs: dict[str, int | bytes] = {}

    def put(attr: str, value: int | bytes, flag: int, source: str) -> None:
        nonlocal wildcards
        if attr in attrs:
            raise Unrepresentable(
                f"OpenFlow 1.0 has one {attr} for {source} and another field"
            )
        attrs[attr] = value
        wildcards &= ~flag

    eth_type = values.get("eth_type")
    ip_proto = values.get("ip_proto")

    def need_arp(name: str) -> None:
        if eth_type != ETH_TYPE_ARP:
            raise Unrepresentable(
                f"OpenFlow 1.0 can match {name} only with eth_type=ARP"
            )

    def need_ip(name: str) -> None:
        if eth_type == ETH_TYPE_ARP:
            raise Unrepresentable(f"OpenFlow 1.0 cannot match {name} with eth_type=ARP")

    def need_proto(name: str, proto: int) -> None:
        if ip_proto != proto:
            raise Unrepresentable(
                f"OpenFlow 1.0 can match {name} only with ip_proto={proto}"
            )

    for name, (value, mask) in fields.items():
        if name == "in_port":
            put("in_port", port_to_of10(value), of10.OFPFW_IN_PORT, name)
        elif name in ("eth_src", "eth_dst"):
            flag = of10.OFPFW_DL_SRC if name == "eth_src" else of10.OFPFW_DL_DST
            put(
                "dl_src" if name == "eth_src" else "dl_dst",
                value.to_bytes(6, "big"),
                flag,
                name,
            )
        elif name == "eth_type":
            put("dl_type", value, of10.OFPFW_DL_TYPE, name)
        elif name == "vlan_vid":
            if value == 0:
                dl_vlan = of10.OFP_VLAN_NONE
            elif value & VLAN_PRESENT:
                dl_vlan = value & 0xFFF
            else:
                raise Unrepresentable(f"vlan_vid {value:#x} names a VLAN without a tag")
            put("dl_vlan", dl_vlan, of10.OFPFW_DL_VLAN, name)
        elif name == "vlan_pcp":
            put("dl_vlan_pcp", value, of10.OFPFW_DL_VLAN_PCP, name)
        elif name == "ip_dscp":
            need_ip(name)
            put("nw_tos", value << 2, of10.OFPFW_NW_TOS, name)
        elif name == "ip_proto":
            need_ip(name)
            put("nw_proto", value, of10.OFPFW_NW_PROTO, name)
        elif name == "arp_op":
            need_arp(name)
            if value > 0xFF:
                raise Unrepresentable(
                    f"OpenFlow 1.0 matches arp_op up to 255, not {value}"
                )
            put("nw_proto", value, of10.OFPFW_NW_PROTO, name)
        elif name in ("ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"):
            (need_arp if name.startswith("arp") else need_ip)(name)
            src = name.endswith(("_src", "_spa"))
            shift = of10.OFPFW_NW_SRC_SHIFT if src else of10.OFPFW_NW_DST_SHIFT
            all_bits = of10.OFPFW_NW_SRC_MASK if src else of10.OFPFW_NW_DST_MASK
            put("nw_src" if src else "nw_dst", value, 0, name)
            wildcards = (wildcards & ~all_bits) | ((32 - mask.bit_count()) << shift)
        elif name in ("tcp_src", "tcp_dst", "udp_src", "udp_dst"):
            need_proto(name, IP_PROTO_TCP if name.startswith("tcp") else IP_PROTO_UDP)
            src = name.endswith("_src")
            flag = of10.OFPFW_TP_SRC if src else of10.OFPFW_TP_DST
            put("tp_src" if src else "tp_dst", value, flag, name)
        elif name in ("icmpv4_type", "icmpv4_code"):
            need_proto(name, IP_PROTO_ICMP)
            src = name == "icmpv4_type"
            flag = of10.OFPFW_TP_SRC if src else of10.OFPFW_TP_DST
            put("tp_src" if src else "tp_dst", value, flag, name)
        else:  # _MASKS_OF10 lists exactly the fields handled above
            raise AssertionError(name)

    zero_mac = bytes(6)
    return of10p.OFPMatch(
        wildcards,
        attrs.get("in_port", 0),
        attrs.get("dl_src", zero_mac),
        attrs.get("dl_dst", zero_mac),
        attrs.get("dl_vlan", 0),
        attrs.get("dl_vlan_pcp", 0),
        attrs.get("dl_type", 0),
        attrs.get("nw_tos", 0),
        attrs.get("nw_proto", 0),
        attrs.get("nw_src", 0),
        attrs.get("nw_dst", 0),
        attrs.get("tp_src", 0),
        attrs.get("tp_dst", 0),
    )


def decode_match(ofmatch: Any, version: int) -> Match:
    """An os-ken OFPMatch of `version` (as parsed from the wire) as a Match."""
    _datapath(version)
    if version == OF10:
        return Match.from_fields(_decode_match_of10(ofmatch))
    fields: dict[str, tuple[int, int]] = {}
    for name, user_value in ofmatch.items():
        field = FIELDS.get(name)
        if field is None:
            raise Unrepresentable(f"the proxy does not model match field {name}")
        if isinstance(user_value, tuple):
            value, mask = (_from_user(name, v) for v in user_value)
        else:
            value, mask = _from_user(name, user_value), field.full_mask
        fields[name] = (value & field.full_mask, mask & field.full_mask)
    return Match.from_fields(fields)


def _decode_match_of10(m: Any) -> dict[str, tuple[int, int]]:
    wc = m.wildcards

    def exact(flag: int) -> bool:
        return not wc & flag

    def full(name: str) -> int:
        return FIELDS[name].full_mask

    out: dict[str, tuple[int, int]] = {}
    if exact(of10.OFPFW_IN_PORT):
        out["in_port"] = (port_from_of10(m.in_port), full("in_port"))
    if exact(of10.OFPFW_DL_SRC):
        out["eth_src"] = (_from_user("eth_src", m.dl_src), full("eth_src"))
    if exact(of10.OFPFW_DL_DST):
        out["eth_dst"] = (_from_user("eth_dst", m.dl_dst), full("eth_dst"))
    if exact(of10.OFPFW_DL_VLAN):
        vid = (
            0 if m.dl_vlan == of10.OFP_VLAN_NONE else VLAN_PRESENT | (m.dl_vlan & 0xFFF)
        )
        out["vlan_vid"] = (vid, full("vlan_vid"))
    if exact(of10.OFPFW_DL_VLAN_PCP):
        out["vlan_pcp"] = (m.dl_vlan_pcp, full("vlan_pcp"))
    arp = False
    if exact(of10.OFPFW_DL_TYPE):
        out["eth_type"] = (m.dl_type, full("eth_type"))
        arp = m.dl_type == ETH_TYPE_ARP
    if exact(of10.OFPFW_NW_TOS):
        out["ip_dscp"] = (m.nw_tos >> 2, full("ip_dscp"))
    proto = None
    if exact(of10.OFPFW_NW_PROTO):
        if arp:
            out["arp_op"] = (m.nw_proto, full("arp_op"))
        else:
            proto = m.nw_proto
            out["ip_proto"] = (proto, full("ip_proto"))
    for attr, shift, names in (
        ("nw_src", of10.OFPFW_NW_SRC_SHIFT, ("ipv4_src", "arp_spa")),
        ("nw_dst", of10.OFPFW_NW_DST_SHIFT, ("ipv4_dst", "arp_tpa")),
    ):
        wild_bits = (wc >> shift) & 0x3F
        if wild_bits < 32:
            mask = (0xFFFFFFFF << wild_bits) & 0xFFFFFFFF
            value = _from_user(names[0], getattr(m, attr))
            out[names[1] if arp else names[0]] = (value & mask, mask)
    for attr, flag, index in (
        ("tp_src", of10.OFPFW_TP_SRC, 0),
        ("tp_dst", of10.OFPFW_TP_DST, 1),
    ):
        if not exact(flag):
            continue
        if proto == IP_PROTO_TCP:
            name = ("tcp_src", "tcp_dst")[index]
        elif proto == IP_PROTO_UDP:
            name = ("udp_src", "udp_dst")[index]
        elif proto == IP_PROTO_ICMP and not arp:
            name = ("icmpv4_type", "icmpv4_code")[index]
        else:
            raise Unrepresentable(
                f"OpenFlow 1.0 {attr} with nw_proto {proto} has no OXM name"
            )
        out[name] = (getattr(m, attr) & full(name), full(name))
    return out


# ---------------------------------------------------------------------------------------------
# Actions


def encode_actions(actions: Sequence[Action], version: int) -> list[Any]:
    """`actions` as os-ken action objects of `version`."""
    dp = _datapath(version)
    if version == OF10:
        return _encode_actions_of10(actions)
    parser = dp.ofproto_parser
    out: list[Any] = []
    for action in actions:
        if isinstance(action, Output):
            out.append(parser.OFPActionOutput(action.port, action.max_len))
        elif isinstance(action, SetField):
            if action.field not in FIELDS:
                raise Unrepresentable(f"unknown field {action.field}")
            out.append(
                parser.OFPActionSetField(
                    **{action.field: _to_user(action.field, action.value)}
                )
            )
        elif isinstance(action, PushVlan):
            out.append(parser.OFPActionPushVlan(action.ethertype))
        elif isinstance(action, PopVlan):
            out.append(parser.OFPActionPopVlan())
        elif isinstance(action, SetQueue):
            out.append(parser.OFPActionSetQueue(action.queue_id))
        else:
            raise Unrepresentable(f"unknown action {action!r}")
    return out


def _encode_actions_of10(actions: Sequence[Action]) -> list[Any]:
    # OF1.3's set_queue applies to every later output; OF1.0 names the queue in each output
    # (enqueue), so a queue must be followed by an output to mean anything.
    out: list[Any] = []
    queue: int | None = None
    queue_used = True
    for action in actions:
        if isinstance(action, Output):
            port = port_to_of10(action.port)
            if queue is None:
                out.append(of10p.OFPActionOutput(port, action.max_len))
            elif action.max_len != _OUTPUT_DEFAULT_MAX_LEN:
                raise Unrepresentable("OpenFlow 1.0 enqueue has no max_len")
            else:
                out.append(of10p.OFPActionEnqueue(port, queue))
                queue_used = True
        elif isinstance(action, SetQueue):
            if not queue_used:
                raise Unrepresentable(
                    "OpenFlow 1.0 needs an output after each set_queue"
                )
            queue, queue_used = action.queue_id, False
        elif isinstance(action, PopVlan):
            out.append(of10p.OFPActionStripVlan())
        elif isinstance(action, PushVlan):
            raise Unrepresentable("OpenFlow 1.0 has no push_vlan")
        elif isinstance(action, SetField):
            out.append(_set_field_of10(action))
        else:
            raise Unrepresentable(f"unknown action {action!r}")
    if not queue_used:
        raise Unrepresentable("OpenFlow 1.0 needs an output after each set_queue")
    return out


def _set_field_of10(action: SetField) -> Any:
    name, value = action.field, action.value
    if name == "vlan_vid":
        if not value & VLAN_PRESENT:
            raise Unrepresentable("set_field vlan_vid needs the VLAN-present bit")
        return of10p.OFPActionVlanVid(value & 0xFFF)
    if name == "vlan_pcp":
        return of10p.OFPActionVlanPcp(value)
    if name == "eth_src":
        return of10p.OFPActionSetDlSrc(value.to_bytes(6, "big"))
    if name == "eth_dst":
        return of10p.OFPActionSetDlDst(value.to_bytes(6, "big"))
    if name == "ipv4_src":
        return of10p.OFPActionSetNwSrc(value)
    if name == "ipv4_dst":
        return of10p.OFPActionSetNwDst(value)
    if name == "ip_dscp":
        return of10p.OFPActionSetNwTos(value << 2)
    if name in ("tcp_src", "udp_src"):
        return of10p.OFPActionSetTpSrc(value)
    if name in ("tcp_dst", "udp_dst"):
        return of10p.OFPActionSetTpDst(value)
    raise Unrepresentable(f"OpenFlow 1.0 cannot set {name}")


def decode_actions(
    actions_or_instructions: Iterable[Any], version: int, match: Match | None = None
) -> tuple[Action, ...]:
    """os-ken actions, or OF1.3+ instructions (apply-actions only), as model actions.

    OF1.0's set_tp_src/dst do not say whether they rewrite a TCP or a UDP port; `match` (the
    flow's own) must then pin ip_proto to tell.
    """
    dp = _datapath(version)
    if version == OF10:
        return _decode_actions_of10(actions_or_instructions, match)
    parser = dp.ofproto_parser
    apply_actions = dp.ofproto.OFPIT_APPLY_ACTIONS
    out: list[Action] = []
    for item in actions_or_instructions:
        if isinstance(item, parser.OFPInstruction):
            if (
                not isinstance(item, parser.OFPInstructionActions)
                or item.type != apply_actions
            ):
                raise Unrepresentable(
                    f"the proxy models apply-actions only, not {item!r}"
                )
            out.extend(_decode_action_oxm(parser, a) for a in item.actions)
        else:
            out.append(_decode_action_oxm(parser, item))
    return tuple(out)


def _decode_action_oxm(parser: Any, action: Any) -> Action:
    if isinstance(action, parser.OFPActionOutput):
        return Output(action.port, action.max_len)
    if isinstance(action, parser.OFPActionSetField):
        if action.key not in FIELDS or isinstance(action.value, tuple):
            raise Unrepresentable(f"the proxy does not model set_field {action.key}")
        return SetField(action.key, _from_user(action.key, action.value))
    if isinstance(action, parser.OFPActionPushVlan):
        return PushVlan(action.ethertype)
    if isinstance(action, parser.OFPActionPopVlan):
        return PopVlan()
    if isinstance(action, parser.OFPActionSetQueue):
        return SetQueue(action.queue_id)
    raise Unrepresentable(f"the proxy does not model action {action!r}")


def _decode_actions_of10(
    actions: Iterable[Any], match: Match | None
) -> tuple[Action, ...]:
    out: list[Action] = []
    queue: int | None = None
    for a in actions:
        if isinstance(a, of10p.OFPActionEnqueue):
            if a.queue_id != queue:
                queue = a.queue_id
                out.append(SetQueue(queue))
            out.append(Output(port_from_of10(a.port)))
        elif isinstance(a, of10p.OFPActionOutput):
            if queue is not None:
                raise Unrepresentable("an output without queue after an enqueue")
            out.append(Output(port_from_of10(a.port), a.max_len))
        elif isinstance(a, of10p.OFPActionVlanVid):
            out.append(SetField("vlan_vid", VLAN_PRESENT | a.vlan_vid))
        elif isinstance(a, of10p.OFPActionVlanPcp):
            out.append(SetField("vlan_pcp", a.vlan_pcp))
        elif isinstance(a, of10p.OFPActionStripVlan):
            out.append(PopVlan())
        elif isinstance(a, of10p.OFPActionSetDlSrc):
            out.append(SetField("eth_src", _from_user("eth_src", a.dl_addr)))
        elif isinstance(a, of10p.OFPActionSetDlDst):
            out.append(SetField("eth_dst", _from_user("eth_dst", a.dl_addr)))
        elif isinstance(a, of10p.OFPActionSetNwSrc):
            out.append(SetField("ipv4_src", a.nw_addr))
        elif isinstance(a, of10p.OFPActionSetNwDst):
            out.append(SetField("ipv4_dst", a.nw_addr))
        elif isinstance(a, of10p.OFPActionSetNwTos):
            out.append(SetField("ip_dscp", a.tos >> 2))
        elif isinstance(a, (of10p.OFPActionSetTpSrc, of10p.OFPActionSetTpDst)):
            proto = match.fields().get("ip_proto") if match is not None else None
            if proto == (IP_PROTO_TCP, 0xFF):
                layer = "tcp"
            elif proto == (IP_PROTO_UDP, 0xFF):
                layer = "udp"
            else:
                raise Unrepresentable(
                    "set_tp_port in a flow that pins no TCP or UDP ip_proto"
                )
            end = "src" if isinstance(a, of10p.OFPActionSetTpSrc) else "dst"
            out.append(SetField(f"{layer}_{end}", a.tp))
        else:
            raise Unrepresentable(f"the proxy does not model action {a!r}")
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Messages


def _serialize(msg: Any, xid: int) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def _flow_mod_add(
    version: int,
    ofmatch: Any,
    actions: list[Any],
    *,
    priority: int,
    cookie: int,
    idle_timeout: int,
    hard_timeout: int,
    flags: int,
    buffer_id: int,
    xid: int,
) -> bytes:
    dp = _datapath(version)
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if version == OF10:
        msg = parser.OFPFlowMod(
            dp, ofmatch, cookie, ofp.OFPFC_ADD, idle_timeout, hard_timeout, priority,
            buffer_id, ofp.OFPP_NONE, flags, actions,
        )  # fmt: skip
    else:
        # A drop flow carries no instruction, as ovs-ofctl sends it.
        instructions = (
            [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
            if actions
            else []
        )
        msg = parser.OFPFlowMod(
            dp, cookie=cookie, cookie_mask=0, table_id=0, command=ofp.OFPFC_ADD,
            idle_timeout=idle_timeout, hard_timeout=hard_timeout, priority=priority,
            buffer_id=buffer_id, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, flags=flags,
            match=ofmatch, instructions=instructions,
        )  # fmt: skip
    return _serialize(msg, xid)


def flow_add(
    version: int,
    match: Match,
    actions: Sequence[Action],
    *,
    priority: int,
    cookie: int,
    idle_timeout: int = 0,
    hard_timeout: int = 0,
    send_flow_removed: bool = True,
    buffer_id: int = NO_BUFFER,
    key: int | None = None,
    xid: int = 0,
) -> bytes:
    """A serialized FLOW_MOD ADD into table 0 (apply-actions on OF1.3+)."""
    dp = _datapath(version)
    return _flow_mod_add(
        version,
        encode_match(match, version, key),
        encode_actions(actions, version),
        priority=priority,
        cookie=cookie,
        idle_timeout=idle_timeout,
        hard_timeout=hard_timeout,
        flags=dp.ofproto.OFPFF_SEND_FLOW_REM if send_flow_removed else 0,
        buffer_id=buffer_id,
        xid=xid,
    )


def flow_delete(
    version: int,
    *,
    match: Match | None = None,
    cookie: int = 0,
    cookie_mask: int = 0,
    strict: bool = False,
    priority: int = 0,
    xid: int = 0,
) -> bytes:
    """A serialized FLOW_MOD DELETE (or DELETE_STRICT) over every table.

    The match is never narrowed: a narrower delete would leave flows behind. Delete narrowed
    flows by cookie instead.
    """
    dp = _datapath(version)
    ofp, parser = dp.ofproto, dp.ofproto_parser
    ofmatch = encode_match(match if match is not None else Match(), version)
    command = ofp.OFPFC_DELETE_STRICT if strict else ofp.OFPFC_DELETE
    if version == OF10:
        if cookie_mask:
            raise Unrepresentable("OpenFlow 1.0 cannot delete flows by cookie")
        msg = parser.OFPFlowMod(
            dp,
            ofmatch,
            cookie,
            command,
            0,
            0,
            priority,
            NO_BUFFER,
            ofp.OFPP_NONE,
            0,
            [],
        )
    else:
        msg = parser.OFPFlowMod(
            dp, cookie=cookie, cookie_mask=cookie_mask, table_id=ofp.OFPTT_ALL, command=command,
            priority=priority, buffer_id=NO_BUFFER, out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY, match=ofmatch, instructions=[],
        )  # fmt: skip
    return _serialize(msg, xid)


def flow_stats_request_all(version: int, xid: int = 0, *, cookie: int = 0,
                           cookie_mask: int = 0) -> bytes:
    """A request for every flow in every table (any out port); on 1.3+ only those whose cookie
    matches cookie/cookie_mask (OpenFlow 1.0 cannot filter by cookie: all flows)."""
    dp = _datapath(version)
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if version == OF10:
        msg = parser.OFPFlowStatsRequest(dp, 0, parser.OFPMatch(wildcards=ofp.OFPFW_ALL), 0xFF,
                                         ofp.OFPP_NONE)
    elif version >= OF15:
        # 1.5 renamed the full flow dump FLOW_DESC (type 1); its FLOW_STATS (type 17) carries no
        # instructions, and OVS 3.1 does not implement it.
        msg = parser.OFPFlowDescStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                             cookie, cookie_mask, parser.OFPMatch())
    else:
        msg = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         cookie, cookie_mask, parser.OFPMatch())
    return _serialize(msg, xid)


def table_miss_flow(version: int, xid: int = 0) -> bytes:
    """The flow that sends misses to the controller (b"" on OF1.0, which does so by itself)."""
    dp = _datapath(version)
    if version == OF10:
        return b""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    output = parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)
    return _flow_mod_add(
        version, parser.OFPMatch(), [output], priority=0, cookie=0, idle_timeout=0,
        hard_timeout=0, flags=0, buffer_id=NO_BUFFER, xid=xid,
    )  # fmt: skip


def _packet_out_msg(
    version: int, in_port: int, ofactions: list[Any], data: bytes, buffer_id: int
) -> Any:
    dp = _datapath(version)
    parser = dp.ofproto_parser
    if data and buffer_id != NO_BUFFER:
        raise ValueError(
            "a PACKET_OUT carries either a buffer id or packet data, not both"
        )
    # os-ken asserts data is None whenever a buffer is named (and, on 1.5, not None otherwise).
    payload = data if buffer_id == NO_BUFFER else None
    if version == OF10:
        return parser.OFPPacketOut(
            dp, buffer_id, port_to_of10(in_port), ofactions, payload
        )
    if version == OF15:
        return parser.OFPPacketOut(
            dp, buffer_id, parser.OFPMatch(in_port=in_port), ofactions, payload
        )
    return parser.OFPPacketOut(dp, buffer_id, in_port, ofactions, payload)


def packet_out(
    version: int,
    *,
    in_port: int,
    actions: Sequence[Action],
    data: bytes = b"",
    buffer_id: int = NO_BUFFER,
    xid: int = 0,
) -> bytes:
    """A serialized PACKET_OUT, built by os-ken (see PacketOutTemplate for the fast path)."""
    if data and buffer_id != NO_BUFFER:
        raise ValueError(
            "a PACKET_OUT carries either a buffer id or packet data, not both"
        )
    ofactions = encode_actions(actions, version)
    if ofactions or version == OF15 or not data:
        return _serialize(
            _packet_out_msg(version, in_port, ofactions, data, buffer_id), xid
        )
    # os-ken quirk (1.0/1.3/1.4): with no actions it appends the data right after the header,
    # then packs buffer_id/in_port/actions_len over it. Serialize without data and append it.
    head = bytearray(
        _serialize(_packet_out_msg(version, in_port, [], b"", buffer_id), xid)
    )
    length = len(head) + len(data)
    if length > _MAX_MESSAGE:
        raise ValueError(f"PACKET_OUT of {length} bytes exceeds the OpenFlow maximum")
    struct.pack_into("!H", head, 2, length)
    return bytes(head) + data


# ---------------------------------------------------------------------------------------------
# Hot-path templates
#
# Hand-built because of os-ken's measured cost (bench/encode_speed.py, one core): a PACKET_OUT
# takes ~15 µs on 1.0 and ~60 µs on 1.3/1.4, a FLOW_MOD from a rule ~80 µs on 1.0 and ~450 µs on
# 1.3+ (OXM match building), i.e. 2-65k messages/s: far below what answering flow misses needs.
# The templates run os-ken once, at build time, then render with one struct.pack and a
# concatenation (~0.8-1.2M messages/s). Tests check every rendering against os-ken's bytes.

_PACKET_OUT_HEAD_OF10 = struct.Struct(
    "!BBHIIHH"
)  # header, buffer_id, in_port, actions_len
_PACKET_OUT_HEAD_OF13 = struct.Struct("!BBHIIIH6x")  # same layout in OF1.3 and OF1.4
_U32 = struct.Struct("!I")


class PacketOutTemplate:
    """A PACKET_OUT with fixed actions, pre-serialized for one version."""

    __slots__ = (
        "_body",
        "_body_len",
        "_fixed",
        "_head",
        "_ofactions",
        "actions",
        "version",
    )

    def __init__(self, actions: Sequence[Action], version: int) -> None:
        self.version = version
        self.actions = tuple(actions)
        self._ofactions = encode_actions(self.actions, version)
        if version == OF15:  # in_port sits in a match: left to os-ken
            self._head = None
            self._fixed = 0
            self._body = b""
            self._body_len = 0
            return
        self._head = _PACKET_OUT_HEAD_OF10 if version == OF10 else _PACKET_OUT_HEAD_OF13
        self._fixed = self._head.size
        sample = _serialize(
            _packet_out_msg(version, 0, self._ofactions, b"", NO_BUFFER), 0
        )
        self._body = sample[self._fixed :]
        self._body_len = len(self._body)

    def render(
        self, xid: int, in_port: int, buffer_id: int = NO_BUFFER, data: bytes = b""
    ) -> bytes:
        head = self._head
        if head is None:
            return _serialize(
                _packet_out_msg(
                    self.version, in_port, self._ofactions, data, buffer_id
                ),
                xid,
            )
        if data and buffer_id != NO_BUFFER:
            raise ValueError(
                "a PACKET_OUT carries either a buffer id or packet data, not both"
            )
        length = self._fixed + self._body_len + len(data)
        if length > _MAX_MESSAGE:
            raise ValueError(
                f"PACKET_OUT of {length} bytes exceeds the OpenFlow maximum"
            )
        if self.version == OF10 and in_port >= _OF10_PORT_MAX:
            in_port = port_to_of10(in_port)
        return (
            head.pack(
                self.version,
                OFPT_PACKET_OUT,
                length,
                xid,
                buffer_id,
                in_port,
                self._body_len,
            )
            + self._body
            + data
        )


class FlowAddTemplate:
    """A FLOW_MOD ADD with everything fixed but xid and buffer id, pre-serialized."""

    __slots__ = ("_head", "_middle", "_tail", "version")

    def __init__(
        self,
        version: int,
        match: Match,
        actions: Sequence[Action],
        *,
        priority: int,
        cookie: int,
        idle_timeout: int = 0,
        hard_timeout: int = 0,
        send_flow_removed: bool = True,
        key: int | None = None,
    ) -> None:
        self.version = version
        sample = flow_add(
            version, match, actions, priority=priority, cookie=cookie,
            idle_timeout=idle_timeout, hard_timeout=hard_timeout,
            send_flow_removed=send_flow_removed, buffer_id=NO_BUFFER, key=key, xid=0,
        )  # fmt: skip
        # buffer_id follows the 40-byte ofp_match in OF1.0, the fixed fields in OF1.3+.
        offset = 8 + 40 + 16 if version == OF10 else 32
        self._head = sample[:4]
        self._middle = sample[8:offset]
        self._tail = sample[offset + 4 :]

    def render(self, xid: int, buffer_id: int = NO_BUFFER) -> bytes:
        pack = _U32.pack
        return b"".join(
            (self._head, pack(xid), self._middle, pack(buffer_id), self._tail)
        )
