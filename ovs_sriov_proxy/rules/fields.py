"""The match fields the proxy classifies on, and how they pack into one integer key.

Every field is named as OpenFlow 1.3+ OXM names it (the names os-ken uses). A packet's key and a
rule's value/mask are packed into single Python integers, each field at its own bit offset, so that
"does this packet match this rule" is one AND and one compare, and a tuple-space classifier can
hash a masked key directly. Field values use OpenFlow 1.3 conventions: `vlan_vid` carries the
OFPVID_PRESENT bit (0x1000) when a tag is present and is 0 when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_QINQ = 0x88A8
IP_PROTO_ICMP = 1
IP_PROTO_TCP = 6
IP_PROTO_UDP = 17
IP_PROTO_ICMPV6 = 58
IP_PROTO_SCTP = 132
VLAN_PRESENT = 0x1000

# A prerequisite is a conjunction of (field, allowed values): a rule that matches the field must
# pin each named field to one of the allowed values (OpenFlow 1.3 spec, section 7.2.3.6).
Prerequisite = tuple[tuple[str, frozenset[int]], ...]

_IP = ("eth_type", frozenset({ETH_TYPE_IPV4, ETH_TYPE_IPV6}))
_IPV4 = ("eth_type", frozenset({ETH_TYPE_IPV4}))
_IPV6 = ("eth_type", frozenset({ETH_TYPE_IPV6}))
_ARP = ("eth_type", frozenset({ETH_TYPE_ARP}))


def _proto(number: int) -> tuple[str, frozenset[int]]:
    return ("ip_proto", frozenset({number}))


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    bits: int
    offset: int
    prerequisite: Prerequisite

    @property
    def full_mask(self) -> int:
        return (1 << self.bits) - 1


_SPECS: tuple[tuple[str, int, Prerequisite], ...] = (
    ("in_port", 32, ()),
    ("eth_dst", 48, ()),
    ("eth_src", 48, ()),
    ("eth_type", 16, ()),
    ("vlan_vid", 13, ()),
    ("vlan_pcp", 3, (("vlan_vid", frozenset(range(VLAN_PRESENT, 2 * VLAN_PRESENT))),)),
    ("ip_dscp", 6, (_IP,)),
    ("ip_ecn", 2, (_IP,)),
    ("ip_proto", 8, (_IP,)),
    ("ipv4_src", 32, (_IPV4,)),
    ("ipv4_dst", 32, (_IPV4,)),
    ("tcp_src", 16, (_IP, _proto(IP_PROTO_TCP))),
    ("tcp_dst", 16, (_IP, _proto(IP_PROTO_TCP))),
    ("udp_src", 16, (_IP, _proto(IP_PROTO_UDP))),
    ("udp_dst", 16, (_IP, _proto(IP_PROTO_UDP))),
    ("sctp_src", 16, (_IP, _proto(IP_PROTO_SCTP))),
    ("sctp_dst", 16, (_IP, _proto(IP_PROTO_SCTP))),
    ("icmpv4_type", 8, (_IPV4, _proto(IP_PROTO_ICMP))),
    ("icmpv4_code", 8, (_IPV4, _proto(IP_PROTO_ICMP))),
    ("arp_op", 16, (_ARP,)),
    ("arp_spa", 32, (_ARP,)),
    ("arp_tpa", 32, (_ARP,)),
    ("arp_sha", 48, (_ARP,)),
    ("arp_tha", 48, (_ARP,)),
    ("ipv6_src", 128, (_IPV6,)),
    ("ipv6_dst", 128, (_IPV6,)),
    ("ipv6_flabel", 20, (_IPV6,)),
    ("icmpv6_type", 8, (_IPV6, _proto(IP_PROTO_ICMPV6))),
    ("icmpv6_code", 8, (_IPV6, _proto(IP_PROTO_ICMPV6))),
)


# Where each field sits in the packed key, least significant first. Every field gets whole bytes,
# and the fields of an IPv4 TCP/UDP packet come in reverse wire order, so that the miss path can
# build such a key from slices of the frame and one int.from_bytes (openflow/packet.py) instead
# of a dozen big-integer shifts. The layout is independent of _SPECS, whose order is the
# prerequisite order (FIELD_ORDER).
_LAYOUT = (
    "in_port", "udp_dst", "udp_src", "tcp_dst", "tcp_src", "ipv4_dst", "ipv4_src",
    "ip_proto", "ip_ecn", "ip_dscp", "vlan_pcp", "vlan_vid", "eth_type", "eth_src", "eth_dst",
    "sctp_src", "sctp_dst", "icmpv4_type", "icmpv4_code", "arp_op", "arp_spa", "arp_tpa",
    "arp_sha", "arp_tha", "ipv6_src", "ipv6_dst", "ipv6_flabel", "icmpv6_type", "icmpv6_code",
)


def _layout() -> tuple[dict[str, Field], int]:
    specs = {name: (bits, prerequisite) for name, bits, prerequisite in _SPECS}
    assert sorted(_LAYOUT) == sorted(specs), "every field needs a place in the key"
    offsets: dict[str, int] = {}
    offset = 0
    for name in _LAYOUT:
        offsets[name] = offset
        offset += (specs[name][0] + 7) // 8 * 8
    fields = {name: Field(name, bits, offsets[name], prerequisite)
              for name, bits, prerequisite in _SPECS}
    return fields, offset


FIELDS, KEY_BITS = _layout()
FIELD_ORDER: tuple[str, ...] = tuple(FIELDS)  # prerequisite order: eth_type before ip_proto ...


def pack(values: dict[str, int]) -> int:
    """Pack per-field integers into one key (unknown names raise KeyError)."""
    key = 0
    for name, value in values.items():
        field = FIELDS[name]
        key |= (value & field.full_mask) << field.offset
    return key


def unpack(key: int, mask: int | None = None) -> dict[str, int]:
    """The fields of a packed key; with a mask, only the fields the mask touches."""
    out: dict[str, int] = {}
    for field in FIELDS.values():
        if mask is not None and not (mask >> field.offset) & field.full_mask:
            continue
        out[field.name] = (key >> field.offset) & field.full_mask
    return out


def field_of(packed: int, name: str) -> int:
    field = FIELDS[name]
    return (packed >> field.offset) & field.full_mask
