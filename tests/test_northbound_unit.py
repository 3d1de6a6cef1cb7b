"""Pure pieces of the northbound relay."""

from __future__ import annotations

from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.northbound import _is_table_miss_to_controller
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
