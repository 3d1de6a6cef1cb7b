"""PACKET_IN decoding and frame keys, checked against os-ken's own parsers and packet library."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from os_ken.lib.packet import arp, ethernet, icmp, ipv4, ipv6, packet, tcp, udp, vlan
from os_ken.ofproto import ofproto_protocol, ofproto_v1_0_parser, ofproto_v1_3_parser

from ovs_sriov_proxy.openflow.framing import OFP10, OFP13, RemoteProtocolError
from ovs_sriov_proxy.openflow.packet import (
    NO_BUFFER,
    packet_key,
    packet_key_general,
    parse_packet_in,
)
from ovs_sriov_proxy.rules.fields import unpack


def build(*protocols) -> bytes:
    pkt = packet.Packet()
    for proto in protocols:
        pkt.add_protocol(proto)
    pkt.serialize()
    return bytes(pkt.data)


def packet_in_13(in_port: int, frame: bytes, buffer_id: int = NO_BUFFER, reason: int = 0) -> bytes:
    oxm = struct.pack("!IIHH", 0x80000004, in_port, 0, 0)[:8]  # in_port OXM
    match = struct.pack("!HH", 1, 4 + len(oxm)) + oxm
    match += b"\0" * (-len(match) % 8)
    body = struct.pack("!IHBBQ", buffer_id, len(frame), reason, 0, 0xFFFFFFFFFFFFFFFF) + match + b"\0\0" + frame
    return struct.pack("!BBHI", OFP13, 10, 8 + len(body), 7) + body


def packet_in_10(in_port: int, frame: bytes, buffer_id: int = NO_BUFFER) -> bytes:
    body = struct.pack("!IHHBx", buffer_id, len(frame), in_port, 0) + frame
    return struct.pack("!BBHI", OFP10, 10, 8 + len(body), 7) + body


UDP_FRAME = build(
    ethernet.ethernet("00:00:00:00:00:02", "00:00:00:00:00:01", 0x0800),
    ipv4.ipv4(src="10.0.0.1", dst="10.0.0.2", proto=17, tos=0xB9),
    udp.udp(1234, 5060),
    b"payload",
)


def test_packet_in_13_agrees_with_os_ken() -> None:
    raw = packet_in_13(3, UDP_FRAME, buffer_id=77)
    mine = parse_packet_in(OFP13, raw)
    theirs = ofproto_v1_3_parser.OFPPacketIn.parser(
        ofproto_protocol.ProtocolDesc(OFP13), OFP13, 10, len(raw), 7, raw)
    assert (mine.buffer_id, mine.in_port, mine.data, mine.reason) == (
        theirs.buffer_id, theirs.match["in_port"], theirs.data, theirs.reason)


def test_packet_in_10_agrees_with_os_ken_and_widens_reserved_ports() -> None:
    raw = packet_in_10(0xFFFE, UDP_FRAME)
    mine = parse_packet_in(OFP10, raw)
    theirs = ofproto_v1_0_parser.OFPPacketIn.parser(
        ofproto_protocol.ProtocolDesc(OFP10), OFP10, 10, len(raw), 7, raw)
    assert mine.data == theirs.data and theirs.in_port == 0xFFFE
    assert mine.in_port == 0xFFFFFFFE


@pytest.mark.parametrize("cut", [9, 20, 27])
def test_truncated_packet_in_is_a_remote_error(cut: int) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_packet_in(OFP13, packet_in_13(1, UDP_FRAME)[:cut])


def test_udp_key() -> None:
    fields = unpack(packet_key(3, UDP_FRAME))
    assert fields["in_port"] == 3
    assert fields["eth_src"] == 1 and fields["eth_dst"] == 2 and fields["eth_type"] == 0x0800
    assert fields["ipv4_src"] == 0x0A000001 and fields["ipv4_dst"] == 0x0A000002
    assert fields["ip_proto"] == 17 and fields["ip_dscp"] == 0xB9 >> 2 and fields["ip_ecn"] == 1
    assert (fields["udp_src"], fields["udp_dst"]) == (1234, 5060)
    assert fields["tcp_dst"] == 0 and fields["vlan_vid"] == 0


def test_vlan_tcp_key() -> None:
    frame = build(
        ethernet.ethernet("00:00:00:00:00:02", "00:00:00:00:00:01", 0x8100),
        vlan.vlan(pcp=5, vid=42, ethertype=0x0800),
        ipv4.ipv4(src="1.2.3.4", dst="5.6.7.8", proto=6),
        tcp.tcp(80, 443),
    )
    fields = unpack(packet_key(1, frame))
    assert fields["vlan_vid"] == 0x1000 | 42 and fields["vlan_pcp"] == 5
    assert fields["eth_type"] == 0x0800 and (fields["tcp_src"], fields["tcp_dst"]) == (80, 443)


def test_ipv6_icmp_and_arp_keys() -> None:
    frame6 = build(
        ethernet.ethernet("00:00:00:00:00:02", "00:00:00:00:00:01", 0x86DD),
        ipv6.ipv6(src="fe80::1", dst="ff02::1", nxt=17, flow_label=0x12345),
        udp.udp(1, 2),
    )
    f6 = unpack(packet_key(1, frame6))
    assert f6["ipv6_src"] == 0xFE80 << 112 | 1 and f6["ipv6_flabel"] == 0x12345
    assert (f6["udp_src"], f6["udp_dst"]) == (1, 2)
    frame_icmp = build(
        ethernet.ethernet("00:00:00:00:00:02", "00:00:00:00:00:01", 0x0800),
        ipv4.ipv4(src="1.1.1.1", dst="2.2.2.2", proto=1),
        icmp.icmp(type_=8, code=0, data=icmp.echo()),
    )
    assert unpack(packet_key(1, frame_icmp))["icmpv4_type"] == 8
    frame_arp = build(
        ethernet.ethernet("ff:ff:ff:ff:ff:ff", "00:00:00:00:00:01", 0x0806),
        arp.arp(opcode=1, src_mac="00:00:00:00:00:01", src_ip="10.0.0.1", dst_ip="10.0.0.9"),
    )
    fa = unpack(packet_key(2, frame_arp))
    assert fa["arp_op"] == 1 and fa["arp_spa"] == 0x0A000001 and fa["arp_tpa"] == 0x0A000009
    assert fa["arp_sha"] == 1


def test_short_frames_key_what_is_there() -> None:
    assert unpack(packet_key(5, b"\x01" * 10))["eth_dst"] == 0
    partial = UDP_FRAME[:30]  # Ethernet complete, IPv4 header cut
    fields = unpack(packet_key(5, partial))
    assert fields["eth_type"] == 0x0800 and fields["ipv4_src"] == 0


@given(
    in_port=st.integers(0, 2**32 - 1),
    proto=st.sampled_from([6, 17, 1, 132, 47]),
    vlan_tci=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    ihl=st.sampled_from([5, 5, 6]),
    fragment=st.sampled_from([0, 0, 0x2000, 0x0001, 0x1FFF]),
    tos=st.integers(0, 255),
    rest=st.binary(min_size=34, max_size=34),
    tail=st.binary(min_size=0, max_size=30),
)
def test_fast_key_equals_the_general_parser(in_port, proto, vlan_tci, ihl, fragment, tos, rest,
                                            tail) -> None:
    macs, addresses, ports = rest[:12], rest[12:20], rest[20:24]
    ip_header = (bytes([0x40 | ihl, tos]) + rest[24:28] + struct.pack("!H", fragment)
                 + bytes([64, proto]) + b"\0\0" + addresses + b"\0" * (4 * (ihl - 5)))
    tag = b"" if vlan_tci is None else struct.pack("!HH", 0x8100, vlan_tci)
    frame = macs + tag + b"\x08\x00" + ip_header + ports + tail
    assert packet_key(in_port, frame) == packet_key_general(in_port, frame)


def test_ipv6_extension_headers_are_walked_to_the_real_protocol() -> None:
    ip6 = struct.pack("!IHBB", 6 << 28, 8 + 8 + 8, 0, 64) + b"\xfe\x80" + b"\0" * 13 + b"\x01" \
        + b"\xff\x02" + b"\0" * 13 + b"\x01"
    hop_by_hop = bytes([60, 0]) + b"\0" * 6         # next: destination options, 8 bytes
    dest_opts = bytes([17, 0]) + b"\0" * 6           # next: UDP
    frame = (b"\0\0\0\0\0\x02" + b"\0\0\0\0\0\x01" + b"\x86\xdd" + ip6 + hop_by_hop + dest_opts
             + struct.pack("!HHHH", 546, 547, 8, 0))
    fields = unpack(packet_key(1, frame))
    assert fields["ip_proto"] == 17 and (fields["udp_src"], fields["udp_dst"]) == (546, 547)
    later_fragment = bytes([17, 0]) + struct.pack("!HI", 8 << 3, 1)  # offset 8: no L4 header here
    frame = frame[:54] + later_fragment + frame[70:]
    frame = frame[:20] + bytes([44]) + frame[21:]  # the IPv6 next header is now "fragment"
    fields = unpack(packet_key(1, frame))
    assert fields["ip_proto"] == 17 and fields["udp_dst"] == 0
