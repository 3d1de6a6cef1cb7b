"""PACKET_IN decoding and packet-key extraction: the proxy's hot path, written by hand.

os-ken parses a full OF1.3 PACKET_IN at ~42k/s on our machines (FIELD-NOTES) and cannot build one;
plain `struct` extraction runs ~20x faster. So PACKET_IN headers and the Ethernet/IP/L4 headers of
the frame inside are read here with precompiled structs, straight into the packed key the
classifier hashes (see rules/fields.py). Everything else the proxy receives goes through os-ken.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..rules.fields import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ETH_TYPE_QINQ,
    ETH_TYPE_VLAN,
    FIELDS,
    IP_PROTO_ICMP,
    IP_PROTO_ICMPV6,
    IP_PROTO_SCTP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    VLAN_PRESENT,
)
from .framing import HEADER_LEN, OFP10, RemoteProtocolError

NO_BUFFER = 0xFFFFFFFF
OFPR_NO_MATCH = 0
OFPR_ACTION = 1
OFP10_PORT_RESERVED_BASE = 0xFF00

_PI10 = struct.Struct("!IHHBx")  # buffer_id, total_len, in_port, reason
_PI13 = struct.Struct("!IHBBQ2xH")  # buffer_id, total_len, reason, table_id, cookie, match len
_PI10_DATA = HEADER_LEN + _PI10.size
_PI13_MATCH = HEADER_LEN + 16  # where the ofp_match starts
_OXM_IN_PORT = bytes.fromhex("80000004")
_OXM_IN_PORT_HEADER = 0x80000004
# buffer_id, total_len, reason, table_id, cookie, (match type), match length, OXM header, in_port
_PI13_OVS = struct.Struct("!IHBBQ2xHII")
_PI13_OVS_DATA = HEADER_LEN + 16 + 16 + 2  # data after a 16-byte match and 2 pad bytes
_OXM_HDR = struct.Struct("!I")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
OXM_CLASS_OPENFLOW_BASIC = 0x8000
OXM_FIELD_IN_PORT = 0


@dataclass(frozen=True, slots=True)
class PacketIn:
    buffer_id: int
    total_len: int
    in_port: int  # 32-bit numbering, whatever the version
    reason: int
    table_id: int
    cookie: int
    data: bytes


def port_from_of10(port: int) -> int:
    """A 16-bit OF1.0 port number in 32-bit numbering (reserved ports move up)."""
    return port | 0xFFFF0000 if port >= OFP10_PORT_RESERVED_BASE else port


def parse_packet_in(version: int, raw: bytes) -> PacketIn:
    """Decode a PACKET_IN of any version we speak; raise RemoteProtocolError if it is malformed."""
    return PacketIn(*decode_packet_in(version, raw))


def decode_packet_in(version: int, raw: bytes) -> tuple[int, int, int, int, int, int, bytes]:
    """(buffer_id, total_len, in_port, reason, table_id, cookie, data): the fields of PacketIn
    as a tuple, for the miss path, which builds no object per packet."""
    try:
        if version == OFP10:
            buffer_id, total_len, in_port, reason = _PI10.unpack_from(raw, HEADER_LEN)
            if in_port >= OFP10_PORT_RESERVED_BASE:
                in_port |= 0xFFFF0000
            return buffer_id, total_len, in_port, reason, 0, 0, raw[_PI10_DATA:]
        if len(raw) >= _PI13_OVS_DATA:
            # OVS's own layout: a match holding in_port alone. One unpack, one slice.
            (buffer_id, total_len, reason, table_id, cookie, match_len, oxm,
             in_port) = _PI13_OVS.unpack_from(raw, HEADER_LEN)
            if match_len == 12 and oxm == _OXM_IN_PORT_HEADER:
                return buffer_id, total_len, in_port, reason, table_id, cookie, raw[_PI13_OVS_DATA:]
        buffer_id, total_len, reason, table_id, cookie, match_len = _PI13.unpack_from(raw, HEADER_LEN)
    except struct.error as exc:
        raise RemoteProtocolError(f"truncated PACKET_IN ({len(raw)} bytes)") from exc
    match_end = _PI13_MATCH + match_len
    if match_len < 4 or match_end > len(raw):
        raise RemoteProtocolError(f"PACKET_IN match length {match_len} does not fit")
    # OVS puts in_port first and alone: take that shortcut, else walk the TLVs.
    if match_len == 12 and raw[_PI13_MATCH + 4 : _PI13_MATCH + 8] == _OXM_IN_PORT:
        (in_port,) = _U32.unpack_from(raw, _PI13_MATCH + 8)
    else:
        in_port = _find_in_port(raw, _PI13_MATCH + 4, match_end)
    data_at = _PI13_MATCH + (match_len + 7) // 8 * 8 + 2  # match padded to 8, then 2 pad bytes
    if data_at > len(raw):
        raise RemoteProtocolError("PACKET_IN ends inside its match padding")
    return buffer_id, total_len, in_port, reason, table_id, cookie, raw[data_at:]


def _find_in_port(raw: bytes, offset: int, match_end: int) -> int:
    in_port = 0
    while offset + 4 <= match_end:
        (oxm,) = _OXM_HDR.unpack_from(raw, offset)
        length = oxm & 0xFF
        if oxm >> 16 == OXM_CLASS_OPENFLOW_BASIC and (oxm >> 9) & 0x7F == OXM_FIELD_IN_PORT:
            if length != 4 or offset + 8 > match_end:
                raise RemoteProtocolError("PACKET_IN in_port OXM has a bad length")
            (in_port,) = _U32.unpack_from(raw, offset + 4)
        offset += 4 + length
    if offset != match_end:
        raise RemoteProtocolError("PACKET_IN match TLVs overrun the match")
    return in_port


# ---- frame -> packed key ----

_OFF = {name: f.offset for name, f in FIELDS.items()}
_IN_PORT = _OFF["in_port"]
_ETH_DST = _OFF["eth_dst"]
_ETH_SRC = _OFF["eth_src"]
_ETH_TYPE = _OFF["eth_type"]
_VLAN_VID = _OFF["vlan_vid"]
_VLAN_PCP = _OFF["vlan_pcp"]
_IP_DSCP = _OFF["ip_dscp"]
_IP_ECN = _OFF["ip_ecn"]
_IP_PROTO = _OFF["ip_proto"]
_IPV4_SRC = _OFF["ipv4_src"]
_IPV4_DST = _OFF["ipv4_dst"]
_IPV6_SRC = _OFF["ipv6_src"]
_IPV6_DST = _OFF["ipv6_dst"]
_IPV6_FLABEL = _OFF["ipv6_flabel"]
_L4 = {
    IP_PROTO_TCP: (_OFF["tcp_src"], _OFF["tcp_dst"]),
    IP_PROTO_UDP: (_OFF["udp_src"], _OFF["udp_dst"]),
    IP_PROTO_SCTP: (_OFF["sctp_src"], _OFF["sctp_dst"]),
}
_ICMPV4 = (_OFF["icmpv4_type"], _OFF["icmpv4_code"])
_ICMPV6 = (_OFF["icmpv6_type"], _OFF["icmpv6_code"])
_ARP_OP = _OFF["arp_op"]
_ARP_SPA = _OFF["arp_spa"]
_ARP_TPA = _OFF["arp_tpa"]
_ARP_SHA = _OFF["arp_sha"]
_ARP_THA = _OFF["arp_tha"]

_from_bytes = int.from_bytes
_IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_BYTES2 = struct.Struct("!BB")


_NO_VLAN = bytes(3)  # vlan_vid (2 bytes) and vlan_pcp (1) of an untagged frame
# The key's low 34 bytes, most significant first: eth_dst eth_src, eth_type (always 0x0800 here),
# vlan_vid vlan_pcp, ip_dscp ip_ecn ip_proto, ipv4_src ipv4_dst, tcp ports, udp ports, in_port.
_KEY_UDP4 = struct.Struct("!12s2s3sBBB8s4x4sI")
_KEY_TCP4 = struct.Struct("!12s2s3sBBB12s4xI")
_IPV4 = b"\x08\x00"
_VLAN = b"\x81\x00"
_LAYOUT_CHECKED = (
    FIELDS["in_port"].offset, FIELDS["udp_dst"].offset, FIELDS["tcp_dst"].offset,
    FIELDS["ipv4_dst"].offset, FIELDS["ip_proto"].offset, FIELDS["vlan_pcp"].offset,
    FIELDS["vlan_vid"].offset, FIELDS["eth_type"].offset, FIELDS["eth_src"].offset,
    FIELDS["eth_dst"].offset,
) == (0, 32, 64, 96, 160, 184, 192, 208, 224, 272)
assert _LAYOUT_CHECKED, "packet_key's fast path assumes the key layout of fields.py"


def packet_key(in_port: int, frame: bytes) -> int:
    """The packed classifier key of a frame (fields the frame does not have stay 0).

    IPv4 TCP/UDP frames (untagged or with one 802.1Q tag, no IP options, not a later fragment)
    are keyed by concatenating frame slices in key-layout order; everything else goes through
    the general parser, which is the reference the fast path is tested against.
    """
    if len(frame) >= 42:
        if frame[12:14] == _IPV4:
            ip, vlan = 14, _NO_VLAN
        elif frame[12:14] == _VLAN and frame[16:18] == _IPV4:
            ip = 18
            tci_high = frame[14]
            vlan = bytes(((VLAN_PRESENT >> 8) | (tci_high & 0x0F), frame[15], tci_high >> 5))
        else:
            return packet_key_general(in_port, frame)
        proto = frame[ip + 9]
        if frame[ip] == 0x45 and not (frame[ip + 6] & 0x1F or frame[ip + 7]):
            tos = frame[ip + 1]
            if proto == IP_PROTO_UDP:
                return _from_bytes(_KEY_UDP4.pack(frame[0:12], _IPV4, vlan, tos >> 2, tos & 3, proto,
                                                  frame[ip + 12 : ip + 20],
                                                  frame[ip + 20 : ip + 24], in_port), "big")
            if proto == IP_PROTO_TCP:
                return _from_bytes(_KEY_TCP4.pack(frame[0:12], _IPV4, vlan, tos >> 2, tos & 3, proto,
                                                  frame[ip + 12 : ip + 24], in_port), "big")
    return packet_key_general(in_port, frame)


def _transport_key(frame: bytes, l4: int, proto: int, icmp_proto: int,
                   icmp_offsets: tuple[int, int]) -> int:
    """The key bits of the L4 header at `l4`: ports of TCP/UDP/SCTP, or ICMP type and code."""
    if proto == icmp_proto:
        if len(frame) >= l4 + 2:
            icmp_type, code = _BYTES2.unpack_from(frame, l4)
            return icmp_type << icmp_offsets[0] | code << icmp_offsets[1]
        return 0
    ports = _L4.get(proto)
    if ports is not None and len(frame) >= l4 + 4:
        sport, dport = _PORTS.unpack_from(frame, l4)
        return sport << ports[0] | dport << ports[1]
    return 0


_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_FRAGMENT, _IPV6_AH, _IPV6_DEST_OPTS = 0, 43, 44, 51, 60


def _skip_ipv6_extensions(frame: bytes, offset: int, next_header: int) -> tuple[int, int, bool]:
    """(L4 protocol, L4 offset or -1 if cut short, whether this is a later fragment), walking
    the extension headers as OVS's flow extraction does, so ip_proto is the real protocol."""
    n = len(frame)
    while next_header in (_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_DEST_OPTS, _IPV6_AH,
                          _IPV6_FRAGMENT):
        if n < offset + 8:
            return next_header, -1, False
        if next_header == _IPV6_FRAGMENT:
            later = bool(_U16.unpack_from(frame, offset + 2)[0] & 0xFFF8)
            next_header, offset = frame[offset], offset + 8
            if later:
                return next_header, offset, True
            continue
        length = (frame[offset + 1] + 2) * 4 if next_header == _IPV6_AH else (frame[offset + 1] + 1) * 8
        next_header, offset = frame[offset], offset + length
    return next_header, offset, False


def packet_key_general(in_port: int, frame: bytes) -> int:
    """packet_key for any frame, field by field.

    Truncated or odd frames are not an error: a switch may send only the first bytes of a
    packet; whatever headers are complete are keyed, the rest stays 0.
    """
    n = len(frame)
    key = in_port << _IN_PORT
    if n < 14:
        return key
    key |= _from_bytes(frame[0:6], "big") << _ETH_DST | _from_bytes(frame[6:12], "big") << _ETH_SRC
    (eth_type,) = _U16.unpack_from(frame, 12)
    offset = 14
    if eth_type in (ETH_TYPE_VLAN, ETH_TYPE_QINQ) and n >= 18:
        (tci, eth_type) = struct.unpack_from("!HH", frame, 14)
        key |= (VLAN_PRESENT | (tci & 0x0FFF)) << _VLAN_VID | (tci >> 13) << _VLAN_PCP
        offset = 18
        # A second (inner) tag is not a match field in OpenFlow 1.3; keep the inner ethertype.
        if eth_type == ETH_TYPE_VLAN and n >= 22:
            (eth_type,) = _U16.unpack_from(frame, 20)
            offset = 22
    key |= eth_type << _ETH_TYPE
    if eth_type == ETH_TYPE_IPV4:
        if n < offset + 20:
            return key
        vihl, tos, _tl, _id, frag, _ttl, proto, _sum, src, dst = _IPV4_HDR.unpack_from(frame, offset)
        key |= (
            (tos >> 2) << _IP_DSCP
            | (tos & 3) << _IP_ECN
            | proto << _IP_PROTO
            | _from_bytes(src, "big") << _IPV4_SRC
            | _from_bytes(dst, "big") << _IPV4_DST
        )
        if frag & 0x1FFF:  # a later fragment carries no L4 header
            return key
        key |= _transport_key(frame, offset + (vihl & 0x0F) * 4, proto, IP_PROTO_ICMP, _ICMPV4)
    elif eth_type == ETH_TYPE_IPV6:
        if n < offset + 40:
            return key
        (word,) = _U32.unpack_from(frame, offset)
        proto, l4, later_fragment = _skip_ipv6_extensions(frame, offset + 40, frame[offset + 6])
        tclass = (word >> 20) & 0xFF
        key |= (
            (tclass >> 2) << _IP_DSCP
            | (tclass & 3) << _IP_ECN
            | (word & 0xFFFFF) << _IPV6_FLABEL
            | proto << _IP_PROTO
            | _from_bytes(frame[offset + 8 : offset + 24], "big") << _IPV6_SRC
            | _from_bytes(frame[offset + 24 : offset + 40], "big") << _IPV6_DST
        )
        if later_fragment or l4 < 0:
            return key
        key |= _transport_key(frame, l4, proto, IP_PROTO_ICMPV6, _ICMPV6)
    elif eth_type == ETH_TYPE_ARP:
        if n < offset + 28:
            return key
        (op,) = _U16.unpack_from(frame, offset + 6)
        key |= (
            op << _ARP_OP
            | _from_bytes(frame[offset + 8 : offset + 14], "big") << _ARP_SHA
            | _from_bytes(frame[offset + 14 : offset + 18], "big") << _ARP_SPA
            | _from_bytes(frame[offset + 18 : offset + 24], "big") << _ARP_THA
            | _from_bytes(frame[offset + 24 : offset + 28], "big") << _ARP_TPA
        )
    return key
