"""Pure pieces of the northbound relay."""

from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.northbound import _is_table_miss_to_controller, untag_flow_stats
from ovs_sriov_proxy.openflow.framing import Framer, Message

DP13 = ofproto_protocol.ProtocolDesc(0x04)
DP10 = ofproto_protocol.ProtocolDesc(0x01)


def message(msg) -> Message:
    msg.serialize()
    return Framer().receive_data(bytes(msg.buf))[0]


def mod13(priority: int, action, match=None) -> Message:
    return message(p13.OFPFlowMod(DP13, priority=priority, match=match or p13.OFPMatch(),
                                  instructions=[p13.OFPInstructionActions(
                                      of13.OFPIT_APPLY_ACTIONS, [action])]))


def test_a_controllers_table_miss_to_controller_is_recognised_on_13_and_10() -> None:
    assert _is_table_miss_to_controller(mod13(0, p13.OFPActionOutput(of13.OFPP_CONTROLLER, 128)))
    assert _is_table_miss_to_controller(message(p10.OFPFlowMod(
        DP10, match=p10.OFPMatch(wildcards=of10.OFPFW_ALL), cookie=0, command=of10.OFPFC_ADD,
        priority=0, actions=[p10.OFPActionOutput(of10.OFPP_CONTROLLER, 128)])))


def test_other_low_flows_are_not_mistaken_for_it() -> None:
    assert not _is_table_miss_to_controller(mod13(0, p13.OFPActionOutput(2)))  # a drop-all-ish flow
    assert not _is_table_miss_to_controller(mod13(1, p13.OFPActionOutput(of13.OFPP_CONTROLLER)))
    assert not _is_table_miss_to_controller(
        mod13(0, p13.OFPActionOutput(of13.OFPP_CONTROLLER), p13.OFPMatch(in_port=1)))
    assert not _is_table_miss_to_controller(message(p10.OFPFlowMod(
        DP10, match=p10.OFPMatch(wildcards=of10.OFPFW_ALL), cookie=0, command=of10.OFPFC_ADD,
        priority=0, actions=[p10.OFPActionOutput(2)])))


def test_flow_stats_replies_show_a_controller_its_own_cookies_untagged() -> None:
    tag = 0x4301
    own, foreign = tag << 48 | 0xABC, 0x5052 << 48 | 7
    empty_match = struct.pack("!HH4x", 1, 4)  # an OXM match with no fields, padded to 8

    def entry(cookie: int) -> bytes:  # ofp_flow_stats (1.3), no instructions
        return struct.pack("!HBxIIHHHH4xQQQ", 48 + len(empty_match), 0, 1, 0, 5, 0, 0, 0,
                           cookie, 0, 0) + empty_match

    body = entry(own) + entry(foreign)
    reply = Framer().receive_data(struct.pack("!BBHIHH4x", 4, 19, 16 + len(body), 9, 1, 0)
                                  + body)[0]
    untagged = untag_flow_stats(reply, tag)
    parsed = p13.OFPMultipartReply.parser(DP13, 4, 19, len(untagged), 9, untagged)
    assert [s.cookie for s in parsed.body] == [0xABC, foreign]
    port_stats = Framer().receive_data(reply.raw[:8] + struct.pack("!H", 4) + reply.raw[10:])[0]
    assert untag_flow_stats(port_stats, tag) == port_stats.raw  # only flow stats are touched


def test_a_port_mod_cannot_turn_off_a_ports_packet_ins() -> None:
    from ovs_sriov_proxy.northbound import keep_port_packet_ins

    for dp, parser, ofp in ((DP13, p13, of13), (DP10, p10, of10)):
        both = message(parser.OFPPortMod(
            dp, 1, "02:00:00:00:00:01", ofp.OFPPC_NO_PACKET_IN | ofp.OFPPC_PORT_DOWN,
            ofp.OFPPC_NO_PACKET_IN | ofp.OFPPC_PORT_DOWN, 0))
        kept, changed = keep_port_packet_ins(dp.ofproto.OFP_VERSION, both.raw)
        at = 28 if dp is DP13 else 20
        assert changed and struct.unpack_from("!I", kept, at)[0] == ofp.OFPPC_PORT_DOWN
        assert kept[:at] == both.raw[:at] and kept[at + 4:] == both.raw[at + 4:]
        down_only = message(parser.OFPPortMod(dp, 1, "02:00:00:00:00:01", ofp.OFPPC_PORT_DOWN,
                                              ofp.OFPPC_PORT_DOWN, 0))
        assert keep_port_packet_ins(dp.ofproto.OFP_VERSION, down_only.raw) == (down_only.raw,
                                                                               False)
