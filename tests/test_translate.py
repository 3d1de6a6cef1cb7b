"""OpenFlow 1.0 <-> 1.3 translation (openflow/translate.py, translate_stats.py).

os-ken is the oracle: messages are built with its encoders where it has them, and every
translation is parsed back with its parsers. Where os-ken cannot encode (PACKET_IN,
FLOW_REMOVED, PORT_STATUS, statistics replies: the switch's direction) the inputs come from
switch_side.py, whose encoders tests/test_switch_side.py checks against os-ken's parsers.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as o10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as o13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.openflow import flows, switch_side
from ovs_sriov_proxy.openflow.framing import OFP10, OFP13, RemoteProtocolError
from ovs_sriov_proxy.openflow.translate import (
    TRANSLATED,
    Untranslatable,
    _enqueue_ready,
    match_bytes,
    translatable_versions,
    translate,
)
from ovs_sriov_proxy.openflow.translate_errors import map_error
from ovs_sriov_proxy.rules.fields import FIELDS
from ovs_sriov_proxy.rules.model import Match, Output, SetField
from tests.test_flows import TCP_FLOW, matches, of10_actions, oxm_actions

DP10 = ofproto_protocol.ProtocolDesc(OFP10)
DP13 = ofproto_protocol.ProtocolDesc(OFP13)
SLOW = settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])
FRAME = bytes.fromhex("00000000000b00000000000a0800450000200001000040117ae00a0000010a000002"
                      "03e807d0000c0000") + b"ab"


def build(msg: Any, xid: int = 0x1234) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def parse(raw: bytes) -> Any:
    version, msg_type, length, xid = struct.unpack_from("!BBHI", raw)
    assert length == len(raw)
    dp = DP10 if version == OFP10 else DP13
    return dp.ofproto_parser._MSG_PARSERS[msg_type](dp, version, msg_type, length, xid, raw)


def one(raw: bytes, to_version: int) -> bytes:
    out = translate(raw, to_version)
    assert len(out) == 1
    assert out[0][0] == to_version and out[0][4:8] == raw[4:8]  # version set, xid kept
    return out[0]


def refused(raw: bytes, to_version: int) -> Untranslatable:
    with pytest.raises(Untranslatable) as info:
        translate(raw, to_version)
    return info.value


def apply(actions: list[Any]) -> list[Any]:
    return [p13.OFPInstructionActions(o13.OFPIT_APPLY_ACTIONS, actions)]


# ---------------------------------------------------------------------------------------------
# The table


def test_the_translated_types_are_exactly_these() -> None:
    assert sorted(TRANSLATED[OFP10]) == [1, 2, 3, 6, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    assert sorted(TRANSLATED[OFP13]) == [1, 2, 3, 10, 11, 12, 13, 14, 16, 18, 19, 20, 21]


def test_versions_pair_up_only_between_1_0_and_1_3() -> None:
    assert translatable_versions(OFP10) == translatable_versions(OFP13) == {OFP10, OFP13}
    assert translatable_versions(0x05) == {0x05}


@pytest.mark.parametrize("raw", [
    build(p13.OFPGroupMod(DP13, o13.OFPGC_ADD, o13.OFPGT_ALL, 1, [])),
    build(p13.OFPMeterMod(DP13, o13.OFPMC_ADD, o13.OFPMF_KBPS, 1, [])),
    build(p13.OFPTableMod(DP13, 0, 0)),
    build(p13.OFPExperimenter(DP13, 0x2320, 1, b"")),
])
def test_messages_without_an_equivalent_are_refused_with_bad_type(raw: bytes) -> None:
    exc = refused(raw, OFP10)
    assert (exc.err_type, exc.code) == (1, 1)
    err = parse(exc.error_message(OFP13, 0x1234, raw))
    assert (err.type, err.code, err.xid, bytes(err.data)) == (1, 1, 0x1234, raw[:64])


def test_the_same_version_is_passed_through_and_others_are_refused() -> None:
    raw = build(p13.OFPBarrierRequest(DP13))
    assert translate(raw, OFP13) == [raw]
    assert refused(raw, 0x05).err_type == 1


def test_a_truncated_message_is_the_senders_fault() -> None:
    raw = build(p13.OFPPortStatsRequest(DP13, 0, 1))
    with pytest.raises(RemoteProtocolError):
        translate(raw[:20], OFP10)


# ---------------------------------------------------------------------------------------------
# ECHO, BARRIER, ERROR


@pytest.mark.parametrize("cls", ["OFPEchoRequest", "OFPEchoReply"])
def test_echo_both_ways(cls: str) -> None:
    raw10 = build(getattr(p10, cls)(DP10, data=b"ping"))
    raw13 = build(getattr(p13, cls)(DP13, data=b"ping"))
    assert one(raw10, OFP13) == raw13 and one(raw13, OFP10) == raw10


@pytest.mark.parametrize("cls", ["OFPBarrierRequest", "OFPBarrierReply"])
def test_barrier_type_numbers_move(cls: str) -> None:
    raw10, raw13 = build(getattr(p10, cls)(DP10)), build(getattr(p13, cls)(DP13))
    assert raw10[1] != raw13[1]
    assert one(raw10, OFP13) == raw13 and one(raw13, OFP10) == raw10


@pytest.mark.parametrize("err10, err13", [
    ((o10.OFPET_FLOW_MOD_FAILED, o10.OFPFMFC_OVERLAP), (o13.OFPET_FLOW_MOD_FAILED, o13.OFPFMFC_OVERLAP)),
    ((o10.OFPET_FLOW_MOD_FAILED, o10.OFPFMFC_ALL_TABLES_FULL),
     (o13.OFPET_FLOW_MOD_FAILED, o13.OFPFMFC_TABLE_FULL)),
    ((o10.OFPET_BAD_REQUEST, o10.OFPBRC_BUFFER_UNKNOWN), (o13.OFPET_BAD_REQUEST, o13.OFPBRC_BUFFER_UNKNOWN)),
    ((o10.OFPET_BAD_ACTION, o10.OFPBAC_BAD_OUT_PORT), (o13.OFPET_BAD_ACTION, o13.OFPBAC_BAD_OUT_PORT)),
    ((o10.OFPET_PORT_MOD_FAILED, o10.OFPPMFC_BAD_HW_ADDR),
     (o13.OFPET_PORT_MOD_FAILED, o13.OFPPMFC_BAD_HW_ADDR)),
    ((o10.OFPET_QUEUE_OP_FAILED, o10.OFPQOFC_BAD_QUEUE), (o13.OFPET_QUEUE_OP_FAILED, o13.OFPQOFC_BAD_QUEUE)),
])
def test_errors_keep_their_meaning_both_ways(err10: tuple[int, int], err13: tuple[int, int]) -> None:
    raw10 = build(p10.OFPErrorMsg(DP10, *err10, data=b"offending"))
    raw13 = build(p13.OFPErrorMsg(DP13, *err13, data=b"offending"))
    assert one(raw10, OFP13) == raw13 and one(raw13, OFP10) == raw10


def test_errors_1_0_cannot_name_get_the_nearest_code() -> None:
    assert map_error(OFP13, OFP10, o13.OFPET_BAD_MATCH, o13.OFPBMC_BAD_FIELD) == \
        (o10.OFPET_FLOW_MOD_FAILED, o10.OFPFMFC_UNSUPPORTED)
    assert map_error(OFP13, OFP10, o13.OFPET_BAD_INSTRUCTION, 1) == \
        (o10.OFPET_FLOW_MOD_FAILED, o10.OFPFMFC_UNSUPPORTED)
    assert map_error(OFP10, OFP13, 0xB0C2, 1) == (o13.OFPET_BAD_REQUEST, o13.OFPBRC_EPERM)


# ---------------------------------------------------------------------------------------------
# FLOW_MOD


def flow_mod10(**kw: Any) -> bytes:
    fields = dict(match=p10.OFPMatch(), cookie=0, command=o10.OFPFC_ADD, idle_timeout=0,
                  hard_timeout=0, priority=0x8000, buffer_id=0xFFFFFFFF, out_port=o10.OFPP_NONE,
                  flags=0, actions=[])
    fields.update(kw)
    return build(p10.OFPFlowMod(DP10, **fields))


def flow_mod13(**kw: Any) -> bytes:
    return build(p13.OFPFlowMod(DP13, **kw))


def test_flow_mod_1_0_to_1_3_with_wildcards_masks_reserved_ports_and_flags() -> None:
    wildcards = o10.OFPFW_ALL & ~(o10.OFPFW_IN_PORT | o10.OFPFW_DL_TYPE | o10.OFPFW_NW_PROTO
                                  | o10.OFPFW_TP_DST | o10.OFPFW_NW_SRC_MASK) \
        | (8 << o10.OFPFW_NW_SRC_SHIFT)
    match = p10.OFPMatch(wildcards=wildcards, in_port=0xFFFE, dl_type=0x0800, nw_proto=17,
                         nw_src=0x0A000000, tp_dst=53)
    raw = flow_mod10(match=match, cookie=0xABC, command=o10.OFPFC_MODIFY_STRICT, idle_timeout=10,
                     hard_timeout=20, priority=300, buffer_id=77, flags=o10.OFPFF_SEND_FLOW_REM,
                     actions=[p10.OFPActionSetTpDst(5353), p10.OFPActionOutput(o10.OFPP_FLOOD),
                              p10.OFPActionOutput(o10.OFPP_CONTROLLER, 128)])
    got = parse(one(raw, OFP13))
    assert (got.cookie, got.cookie_mask, got.table_id, got.command, got.idle_timeout,
            got.hard_timeout, got.priority, got.buffer_id, got.out_port, got.out_group,
            got.flags) == (0xABC, 0, 0, o13.OFPFC_MODIFY_STRICT, 10, 20, 300, 77, o13.OFPP_ANY,
                           o13.OFPG_ANY, o13.OFPFF_SEND_FLOW_REM)
    assert dict(got.match.items()) == {"in_port": o13.OFPP_LOCAL, "eth_type": 0x0800,
                                       "ip_proto": 17, "ipv4_src": ("10.0.0.0", "255.255.255.0"),
                                       "udp_dst": 53}
    [inst] = got.instructions
    assert inst.type == o13.OFPIT_APPLY_ACTIONS
    assert [(type(a).__name__, getattr(a, "port", None)) for a in inst.actions] == [
        ("OFPActionSetField", None), ("OFPActionOutput", o13.OFPP_FLOOD),
        ("OFPActionOutput", o13.OFPP_CONTROLLER)]
    assert inst.actions[0].key == "udp_dst" and inst.actions[0].value == 5353
    assert inst.actions[2].max_len == 128
    assert one(one(raw, OFP13), OFP10) == raw


def test_flow_mod_1_3_to_1_0_set_field_forms_and_out_port() -> None:
    raw = flow_mod13(cookie=5, command=o13.OFPFC_DELETE_STRICT, priority=9, out_port=3,
                     out_group=o13.OFPG_ANY,
                     match=p13.OFPMatch(eth_dst="00:00:00:00:00:0b", vlan_vid=0x1000 | 7),
                     instructions=[])
    got = parse(one(raw, OFP10))
    assert (got.command, got.priority, got.out_port, got.cookie) == (o10.OFPFC_DELETE_STRICT, 9, 3, 5)
    assert got.match.dl_vlan == 7 and got.match.dl_dst == b"\x00\x00\x00\x00\x00\x0b"
    sets = flow_mod13(match=p13.OFPMatch(), instructions=apply([
        p13.OFPActionSetField(eth_src="00:00:00:00:00:01"), p13.OFPActionSetField(ipv4_dst="1.2.3.4"),
        p13.OFPActionSetField(vlan_vid=0x1000 | 5), p13.OFPActionPopVlan(),
        p13.OFPActionSetQueue(3), p13.OFPActionOutput(2)]))
    got = parse(one(sets, OFP10))
    assert [type(a).__name__ for a in got.actions] == [
        "OFPActionSetDlSrc", "OFPActionSetNwDst", "OFPActionVlanVid", "OFPActionStripVlan",
        "OFPActionEnqueue"]
    assert got.actions[4].queue_id == 3 and got.actions[4].port == 2


@pytest.mark.parametrize("raw, err", [
    (flow_mod13(match=p13.OFPMatch(), instructions=[p13.OFPInstructionGotoTable(1)]),
     (o13.OFPET_BAD_INSTRUCTION, o13.OFPBIC_UNSUP_INST)),
    (flow_mod13(match=p13.OFPMatch(), instructions=apply([p13.OFPActionGroup(1)])),
     (o13.OFPET_BAD_ACTION, o13.OFPBAC_BAD_OUT_GROUP)),
    (flow_mod13(table_id=3, match=p13.OFPMatch(), instructions=[]),
     (o13.OFPET_FLOW_MOD_FAILED, o13.OFPFMFC_BAD_TABLE_ID)),
    (flow_mod13(match=p13.OFPMatch(eth_type=0x86DD, ipv6_src="::1"), instructions=[]),
     (o13.OFPET_BAD_MATCH, o13.OFPBMC_BAD_FIELD)),
    (flow_mod13(match=p13.OFPMatch(eth_dst=("00:00:00:00:00:00", "01:00:00:00:00:00")),
                instructions=[]), (o13.OFPET_BAD_MATCH, o13.OFPBMC_BAD_MASK)),
    (flow_mod13(match=p13.OFPMatch(metadata=1), instructions=[]),
     (o13.OFPET_BAD_MATCH, o13.OFPBMC_BAD_FIELD)),
    (flow_mod13(match=p13.OFPMatch(), instructions=apply([p13.OFPActionPushVlan(0x8100)])),
     (o13.OFPET_BAD_ACTION, o13.OFPBAC_BAD_ARGUMENT)),
    (flow_mod13(match=p13.OFPMatch(), instructions=apply([p13.OFPActionSetField(ipv6_dst="::1")])),
     (o13.OFPET_BAD_ACTION, o13.OFPBAC_BAD_SET_TYPE)),
    (flow_mod13(match=p13.OFPMatch(eth_type=0x800, ip_proto=6),
                instructions=apply([p13.OFPActionSetField(udp_dst=1)])),
     (o13.OFPET_BAD_ACTION, o13.OFPBAC_MATCH_INCONSISTENT)),
    (flow_mod13(match=p13.OFPMatch(), instructions=apply([p13.OFPActionOutput(0x10000)])),
     (o13.OFPET_BAD_ACTION, o13.OFPBAC_BAD_OUT_PORT)),
    (flow_mod13(command=o13.OFPFC_DELETE, cookie_mask=0xFF, match=p13.OFPMatch(), instructions=[]),
     (o13.OFPET_FLOW_MOD_FAILED, o13.OFPFMFC_UNKNOWN)),
    (flow_mod13(flags=o13.OFPFF_RESET_COUNTS, match=p13.OFPMatch(), instructions=[]),
     (o13.OFPET_FLOW_MOD_FAILED, o13.OFPFMFC_BAD_FLAGS)),
])
def test_flow_mods_1_0_cannot_express_are_refused_with_the_right_error(
        raw: bytes, err: tuple[int, int]) -> None:
    exc = refused(raw, OFP10)
    assert (exc.err_type, exc.code) == err
    parsed = parse(exc.error_message(OFP13, 0x1234, raw))
    assert (parsed.type, parsed.code) == err


def test_emergency_flows_of_1_0_are_refused_in_1_0_terms() -> None:
    raw = flow_mod10(flags=o10.OFPFF_EMERG)
    exc = refused(raw, OFP13)
    parsed = parse(exc.error_message(OFP10, 7, raw))
    assert (parsed.type, parsed.code) == (o10.OFPET_FLOW_MOD_FAILED, o10.OFPFMFC_UNSUPPORTED)


def test_a_1_3_delete_in_every_table_reaches_1_0() -> None:
    raw = flow_mod13(command=o13.OFPFC_DELETE, table_id=o13.OFPTT_ALL, out_port=o13.OFPP_ANY,
                     out_group=o13.OFPG_ANY, match=p13.OFPMatch(), instructions=[])
    assert parse(one(raw, OFP10)).out_port == o10.OFPP_NONE
    # A delete filtered by a group matches no flow OF1.0 can have: refused, not widened.
    assert refused(flow_mod13(command=o13.OFPFC_DELETE, out_group=3, match=p13.OFPMatch(),
                              instructions=[]), OFP10).err_type == o13.OFPET_FLOW_MOD_FAILED
    got = parse(one(raw, OFP10))
    assert got.command == o10.OFPFC_DELETE and got.match.wildcards == o10.OFPFW_ALL


@SLOW
@given(data=st.data())
def test_any_1_0_flow_mod_survives_1_3_and_back_byte_for_byte(data: st.DataObject) -> None:
    match = data.draw(matches(OFP10))
    actions = data.draw(of10_actions())
    if any(isinstance(a, SetField) and a.field.startswith("tcp") for a in actions):
        match = Match(match.value | TCP_FLOW.value, match.mask | TCP_FLOW.mask) \
            if all(n not in match.fields() for n in ("ip_proto", "eth_type")) else match
    try:
        raw = flows.flow_add(OFP10, match, actions, priority=data.draw(st.integers(0, 0xFFFF)),
                             cookie=data.draw(st.integers(0, 2**64 - 1)),
                             idle_timeout=data.draw(st.integers(0, 0xFFFF)), xid=9)
    except flows.Unrepresentable:
        return
    try:
        up = one(raw, OFP13)
    except Untranslatable as exc:
        # Only OF1.0's set_tp_* in a flow that pins no TCP/UDP protocol has no OXM spelling.
        assert "set_tp_port" in exc.reason
        return
    assert one(up, OFP10) == raw


def of10_can_say(match: Match, actions: tuple) -> bool:
    """The reference for what OF1.0 expresses: the model's own encoders, plus OF1.0's
    set_tp_* needing the flow to pin the protocol."""
    try:
        flows.encode_match(match, OFP10)
        flows.encode_actions(_enqueue_ready(actions), OFP10)
    except flows.Unrepresentable:
        return False
    proto = match.fields().get("ip_proto", (None, 0))[0]
    return all(not (isinstance(a, SetField) and a.field[:3] in ("tcp", "udp"))
               or proto == (6 if a.field.startswith("tcp") else 17) for a in actions)


@SLOW
@given(match=matches(OFP13), actions=oxm_actions())
def test_1_3_flow_mods_reach_1_0_with_the_same_meaning_or_are_refused(match: Match,
                                                                        actions: tuple) -> None:
    raw = flows.flow_add(OFP13, match, actions, priority=10, cookie=1, xid=3)
    try:
        down = one(raw, OFP10)
    except Untranslatable as exc:
        assert exc.err_type in (o13.OFPET_BAD_MATCH, o13.OFPET_BAD_ACTION)
        assert not of10_can_say(match, actions)
        return
    assert of10_can_say(match, actions)
    got = parse(down)
    assert flows.decode_match(got.match, OFP10) == match
    again = parse(one(down, OFP13))
    assert flows.decode_match(again.match, OFP13) == match
    assert flows.decode_actions(again.instructions, OFP13) == \
        flows.decode_actions(got.actions, OFP10, match)


# ---------------------------------------------------------------------------------------------
# PACKET_OUT and PACKET_IN


def test_packet_out_1_3_to_1_0_matches_os_kens_own_encoding() -> None:
    raw = build(p13.OFPPacketOut(DP13, 0xFFFFFFFF, o13.OFPP_CONTROLLER,
                                 [p13.OFPActionSetField(udp_src=7), p13.OFPActionOutput(3)], FRAME))
    expected = build(p10.OFPPacketOut(DP10, 0xFFFFFFFF, o10.OFPP_CONTROLLER,
                                      [p10.OFPActionSetTpSrc(7), p10.OFPActionOutput(3)], FRAME))
    assert one(raw, OFP10) == expected
    # ... and back: the frame says set_tp_src rewrites a UDP port.
    assert one(expected, OFP13) == raw


def test_packet_out_with_a_buffer_and_a_port_number_both_ways() -> None:
    raw10 = build(p10.OFPPacketOut(DP10, 42, 2, [p10.OFPActionOutput(o10.OFPP_IN_PORT)], None))
    raw13 = build(p13.OFPPacketOut(DP13, 42, 2, [p13.OFPActionOutput(o13.OFPP_IN_PORT)], None))
    assert one(raw10, OFP13) == raw13 and one(raw13, OFP10) == raw10


def test_packet_out_1_0_without_in_port_comes_from_the_controller_in_1_3() -> None:
    raw10 = build(p10.OFPPacketOut(DP10, 0xFFFFFFFF, o10.OFPP_NONE,
                                   [p10.OFPActionOutput(1)], FRAME))
    got = switch_side.decode_packet_out(OFP13, one(raw10, OFP13))
    assert got.in_port == o13.OFPP_CONTROLLER and got.data == FRAME


def test_packet_out_to_a_group_is_refused() -> None:
    raw = build(p13.OFPPacketOut(DP13, 0xFFFFFFFF, 1, [p13.OFPActionGroup(4)], FRAME))
    assert refused(raw, OFP10).err_type == o13.OFPET_BAD_ACTION


@pytest.mark.parametrize("from_version, to_version", [(OFP10, OFP13), (OFP13, OFP10)])
def test_packet_in_in_port_moves_between_the_header_and_the_match(from_version: int,
                                                                 to_version: int) -> None:
    raw = switch_side.packet_in(from_version, buffer_id=5, total_len=len(FRAME),
                                in_port=0xFFFFFFFE, reason=1, data=FRAME, xid=3)
    got = parse(one(raw, to_version))
    in_port = got.in_port if to_version == OFP10 else got.match["in_port"]
    assert in_port == (0xFFFE if to_version == OFP10 else 0xFFFFFFFE)
    assert (got.buffer_id, got.total_len, got.reason, bytes(got.data)) == (5, len(FRAME), 1, FRAME)


def test_packet_in_from_a_port_1_0_cannot_number_is_refused() -> None:
    raw = switch_side.packet_in(OFP13, buffer_id=5, total_len=2, in_port=0x10000, reason=0,
                                data=b"ab")
    assert refused(raw, OFP10).code == 11  # BAD_PORT


# ---------------------------------------------------------------------------------------------
# FLOW_REMOVED, PORT_STATUS, PORT_MOD


@pytest.mark.parametrize("from_version", [OFP10, OFP13])
def test_flow_removed_both_ways(from_version: int) -> None:
    match = Match.from_fields({"in_port": (1, 0xFFFFFFFF), "eth_type": (0x800, 0xFFFF),
                               "ipv4_dst": (0x0A000000, 0xFF000000)})
    raw = switch_side.flow_removed(from_version, cookie=0x4300000000000007, priority=100,
                                   reason=0, table_id=0, duration_sec=3, duration_nsec=4,
                                   idle_timeout=10, hard_timeout=0, packet_count=5,
                                   byte_count=600, match=match_bytes(match, from_version), xid=0)
    to_version = OFP13 if from_version == OFP10 else OFP10
    got = parse(one(raw, to_version))
    assert (got.cookie, got.priority, got.reason, got.duration_sec, got.duration_nsec,
            got.idle_timeout, got.packet_count, got.byte_count) == (
        0x4300000000000007, 100, 0, 3, 4, 10, 5, 600)
    assert flows.decode_match(got.match, to_version) == match
    assert one(one(raw, to_version), from_version) == raw


def test_flow_removed_by_a_group_delete_is_a_delete_in_1_0() -> None:
    raw = switch_side.flow_removed(OFP13, cookie=1, priority=1, reason=3)
    assert parse(one(raw, OFP10)).reason == o10.OFPRR_DELETE


def test_port_status_maps_numbers_bits_and_speeds() -> None:
    port = switch_side.PortDesc(0xFFFFFFFE, "br0", "aa:bb:cc:dd:ee:ff", config=0x1 | 0x40,
                                state=1, curr=0x20 | 0x800 | 0x2000, supported=0x40 | 0x1000)
    raw13 = switch_side.port_status(OFP13, reason=2, port=port, xid=0)
    got = parse(one(raw13, OFP10))
    desc = got.desc
    assert (got.reason, desc.port_no, desc.name.rstrip(b"\0"), desc.config, desc.state) == (
        2, 0xFFFE, b"br0", 0x41, 1)
    assert desc.curr == 0x20 | o10.OFPPF_COPPER | o10.OFPPF_AUTONEG
    assert desc.supported == 0x40 | o10.OFPPF_FIBER
    back = parse(one(one(raw13, OFP10), OFP13)).desc
    assert (back.port_no, back.curr, back.supported) == (0xFFFFFFFE, port.curr, port.supported)


def test_port_mod_both_ways_and_stp_bits_refused() -> None:
    raw10 = build(p10.OFPPortMod(DP10, 3, "aa:bb:cc:dd:ee:ff", 1, 1, 0x20))
    raw13 = build(p13.OFPPortMod(DP13, 3, "aa:bb:cc:dd:ee:ff", 1, 1, 0x20))
    assert one(raw10, OFP13) == raw13 and one(raw13, OFP10) == raw10
    stp = build(p10.OFPPortMod(DP10, 3, "aa:bb:cc:dd:ee:ff", o10.OFPPC_NO_STP,
                               o10.OFPPC_NO_STP, 0))
    exc = refused(stp, OFP13)
    assert parse(exc.error_message(OFP10, 1, stp)).type == o10.OFPET_PORT_MOD_FAILED


# ---------------------------------------------------------------------------------------------
# Statistics


def test_flow_stats_request_both_ways_matches_os_ken() -> None:
    raw10 = build(p10.OFPFlowStatsRequest(
        DP10, 0, p10.OFPMatch(wildcards=o10.OFPFW_ALL & ~o10.OFPFW_IN_PORT, in_port=2), 0xFF,
        o10.OFPP_NONE))
    raw13 = build(p13.OFPFlowStatsRequest(DP13, 0, 0xFF, o13.OFPP_ANY, o13.OFPG_ANY, 0, 0,
                                          p13.OFPMatch(in_port=2)))
    assert one(raw10, OFP13) == raw13 and one(raw13, OFP10) == raw10


def test_aggregate_port_table_and_desc_requests_both_ways() -> None:
    pairs = [
        (p10.OFPAggregateStatsRequest(DP10, 0, p10.OFPMatch(), 0xFF, 4),
         p13.OFPAggregateStatsRequest(DP13, 0, 0xFF, 4, o13.OFPG_ANY, 0, 0, p13.OFPMatch())),
        (p10.OFPPortStatsRequest(DP10, 0, o10.OFPP_NONE), p13.OFPPortStatsRequest(DP13, 0, o13.OFPP_ANY)),
        (p10.OFPPortStatsRequest(DP10, 0, 7), p13.OFPPortStatsRequest(DP13, 0, 7)),
        (p10.OFPTableStatsRequest(DP10, 0), p13.OFPTableStatsRequest(DP13, 0)),
        (p10.OFPQueueStatsRequest(DP10, 0, o10.OFPP_ALL, o10.OFPQ_ALL),
         p13.OFPQueueStatsRequest(DP13, 0, o13.OFPP_ANY, o13.OFPQ_ALL)),
        (p10.OFPQueueStatsRequest(DP10, 0, 3, 1), p13.OFPQueueStatsRequest(DP13, 0, 3, 1)),
        (p10.OFPDescStatsRequest(DP10, 0), p13.OFPDescStatsRequest(DP13, 0)),
    ]
    for msg10, msg13 in pairs:
        raw10, raw13 = build(msg10), build(msg13)
        assert one(raw10, OFP13) == raw13 and one(raw13, OFP10) == raw10


def test_a_port_desc_request_becomes_features_and_its_reply_port_desc() -> None:
    request = build(p13.OFPPortDescStatsRequest(DP13, 0))
    features = one(request, OFP10)
    assert features == build(p10.OFPFeaturesRequest(DP10))
    ports = [switch_side.PortDesc(1, "p1", "00:00:00:00:00:01", curr=o10.OFPPF_COPPER),
             switch_side.PortDesc(0xFFFFFFFE, "br0", "00:00:00:00:00:02")]
    reply10 = switch_side.features_reply(OFP10, datapath_id=1, n_buffers=0, n_tables=1,
                                         capabilities=0, ports=ports, xid=0x1234)
    [reply13] = translate(reply10, OFP13)
    got = parse(reply13)
    assert got.type == o13.OFPMP_PORT_DESC and got.xid == 0x1234
    assert sorted((p.port_no, p.name.rstrip(b"\0"), p.curr) for p in got.body) == [
        (1, b"p1", o13.OFPPF_COPPER), (0xFFFFFFFE, b"br0", 0)]


def test_statistics_without_a_counterpart_are_refused() -> None:
    for raw in (build(p13.OFPGroupStatsRequest(DP13, 0)), build(p13.OFPMeterStatsRequest(DP13, 0))):
        exc = refused(raw, OFP10)
        assert (exc.err_type, exc.code) == (o13.OFPET_BAD_REQUEST, o13.OFPBRC_BAD_MULTIPART)
    exc = refused(build(p13.OFPFlowStatsRequest(DP13, 0, 0xFF, o13.OFPP_ANY, o13.OFPG_ANY, 1, 1,
                                                p13.OFPMatch())), OFP10)
    assert exc.code == o13.OFPBRC_BAD_MULTIPART


def test_queue_stats_replies_both_ways() -> None:
    entries10 = [struct.pack("!H2xIQQQ", 3, 1, 1000, 10, 1), struct.pack("!H2xIQQQ", 4, 0, 5, 1, 0)]
    reply10 = struct.pack("!BBHIHH", OFP10, o10.OFPT_STATS_REPLY, 12 + 64, 0x1234,
                          o10.OFPST_QUEUE, 0) + b"".join(entries10)
    [reply13] = translate(reply10, OFP13)
    got = parse(reply13)
    assert got.type == o13.OFPMP_QUEUE and got.xid == 0x1234
    assert [(q.port_no, q.queue_id, q.tx_bytes, q.tx_packets, q.tx_errors, q.duration_sec)
            for q in got.body] == [(3, 1, 1000, 10, 1, 0), (4, 0, 5, 1, 0, 0)]
    # And back: a port OF1.0 cannot name (above 0xff00) is left out.
    unnamed = struct.pack("!IIQQQII", 0x10000, 2, 7, 7, 7, 9, 9)
    reply13_more = (struct.pack("!BBHIHH4x", OFP13, o13.OFPT_MULTIPART_REPLY,
                                16 + len(got.body) * 40 + 40, 0x1234, o13.OFPMP_QUEUE, 0)
                    + reply13[16:] + unnamed)
    [back] = translate(reply13_more, OFP10)
    assert back == reply10


def flow_entry13(match: Any, actions: list[Any], table_id: int = 0, **kw: Any) -> bytes:
    buf = bytearray()
    match.serialize(buf, 0)
    inst = bytearray()
    for i in (apply(actions) if actions else []):
        i.serialize(inst, len(inst))
    fields = dict(duration_sec=1, duration_nsec=2, priority=100, idle=0, hard=0, flags=0,
                  cookie=9, packets=3, bytes_=300)
    fields.update(kw)
    head = struct.pack("!HBxIIHHHH4xQQQ", 48 + len(buf) + len(inst), table_id,
                       fields["duration_sec"], fields["duration_nsec"], fields["priority"],
                       fields["idle"], fields["hard"], fields["flags"], fields["cookie"],
                       fields["packets"], fields["bytes_"])
    return head + bytes(buf) + bytes(inst)


def test_flow_stats_reply_1_3_to_1_0_and_back() -> None:
    entries = [
        flow_entry13(p13.OFPMatch(in_port=1, eth_type=0x800, ipv4_src="10.0.0.1"),
                     [p13.OFPActionOutput(2)]),
        flow_entry13(p13.OFPMatch(), []),  # a drop
        flow_entry13(p13.OFPMatch(metadata=5), [p13.OFPActionOutput(2)], table_id=1),  # not 1.0
    ]
    raw13 = switch_side.multipart_reply(OFP13, 1, b"".join(entries), 0x55)
    [raw10] = translate(raw13, OFP10)
    got = parse(raw10)
    assert got.type == o10.OFPST_FLOW and len(got.body) == 2
    first = got.body[0]
    assert (first.priority, first.cookie, first.packet_count, first.byte_count) == (100, 9, 3, 300)
    assert first.match.in_port == 1 and first.match.nw_src == 0x0A000001
    assert [a.port for a in first.actions] == [2] and got.body[1].actions == []
    [back] = translate(raw10, OFP13)
    assert back == switch_side.multipart_reply(OFP13, 1, b"".join(entries[:2]), 0x55)


def test_a_big_flow_stats_reply_is_split_with_the_more_flag() -> None:
    entry = flow_entry13(p13.OFPMatch(in_port=1), [p13.OFPActionOutput(2)])
    count = (0xFFFF - 16) // len(entry)  # fills one 1.3 message; 1.0 entries are bigger
    raw13 = switch_side.multipart_reply(OFP13, 1, entry * count, 1)
    replies = translate(raw13, OFP10)
    assert len(replies) == 2
    parsed = [parse(r) for r in replies]
    assert [p.flags for p in parsed] == [o10.OFPSF_REPLY_MORE, 0]
    assert sum(len(p.body) for p in parsed) == count


def test_table_port_desc_and_aggregate_replies_both_ways() -> None:
    table10 = switch_side.multipart_reply(OFP10, 3, struct.pack("!B3x32sIIIQQ", 0, b"classifier",
                                                                0x3FFFFF, 1000, 4, 50, 40), 1)
    got = parse(one(table10, OFP13))
    assert [(t.table_id, t.active_count, t.lookup_count, t.matched_count) for t in got.body] == [
        (0, 4, 50, 40)]
    assert parse(one(one(table10, OFP13), OFP10)).body[0].active_count == 4
    counters = list(range(1, 13))
    port13 = switch_side.multipart_reply(OFP13, 4, struct.pack("!I4x12QII", 0xFFFFFFFE, *counters,
                                                               5, 6), 2)
    got = parse(one(port13, OFP10))
    assert got.body[0].port_no == 0xFFFE and got.body[0].rx_packets == 1 and \
        got.body[0].collisions == 12
    desc = struct.pack("!256s256s256s32s256s", b"mfr", b"hw", b"sw", b"sn", b"dp")
    desc10 = switch_side.multipart_reply(OFP10, 0, desc, 3)
    assert parse(one(desc10, OFP13)).body.mfr_desc.rstrip(b"\0") == b"mfr"
    aggregate13 = switch_side.multipart_reply(OFP13, 2, struct.pack("!QQI4x", 7, 700, 2), 4)
    [got] = parse(one(aggregate13, OFP10)).body
    assert (got.packet_count, got.byte_count, got.flow_count) == (7, 700, 2)


def test_the_output_model_is_what_flows_uses() -> None:
    """Guards the assumption the translators rest on: OF1.3's OFPCML_NO_BUFFER is OF1.0's
    full-packet max_len, so an output to CONTROLLER keeps its meaning."""
    assert Output(o13.OFPP_CONTROLLER).max_len == o13.OFPCML_NO_BUFFER == 0xFFFF
    assert FIELDS["in_port"].bits == 32


@SLOW
@given(match=matches(OFP10), actions=of10_actions())
def test_1_3_flow_mods_1_0_can_express_go_there_and_back_unchanged(match: Match,
                                                                     actions: tuple) -> None:
    raw = flows.flow_add(OFP13, match, actions, priority=10, cookie=1, xid=3)
    if not of10_can_say(match, actions):
        assert refused(raw, OFP10).err_type == o13.OFPET_BAD_ACTION  # set_tp without a protocol
        return
    down = one(raw, OFP10)
    assert flows.decode_match(parse(down).match, OFP10) == match
    again = parse(one(down, OFP13))
    assert flows.decode_match(again.match, OFP13) == match
    assert flows.decode_actions(again.instructions, OFP13) == actions


def test_1_0_fields_without_their_prerequisites_are_dropped_as_ovs_does() -> None:
    """ovs-testcontroller's exact matches: every field exact, whatever the packet."""
    arp = p10.OFPMatch(wildcards=0, in_port=1, dl_src=b"\x00" * 5 + b"\x0a",
                       dl_dst=b"\xff" * 6, dl_vlan=o10.OFP_VLAN_NONE, dl_vlan_pcp=0,
                       dl_type=0x0806, nw_tos=0, nw_proto=1, nw_src=0x0A000001,
                       nw_dst=0x0A000002, tp_src=0, tp_dst=0)
    got = parse(one(flow_mod10(match=arp, actions=[p10.OFPActionOutput(2)]), OFP13))
    assert dict(got.match.items()) == {
        "in_port": 1, "eth_src": "00:00:00:00:00:0a", "eth_dst": "ff:ff:ff:ff:ff:ff",
        "vlan_vid": 0, "eth_type": 0x0806, "arp_op": 1, "arp_spa": "10.0.0.1",
        "arp_tpa": "10.0.0.2"}
    gre = p10.OFPMatch(wildcards=o10.OFPFW_ALL & ~(o10.OFPFW_DL_TYPE | o10.OFPFW_NW_PROTO
                                                   | o10.OFPFW_TP_SRC),
                       dl_type=0x0800, nw_proto=47, tp_src=0)
    got = parse(one(flow_mod10(match=gre), OFP13))
    assert dict(got.match.items()) == {"eth_type": 0x0800, "ip_proto": 47}


SAMPLES = [
    flow_mod10(match=p10.OFPMatch(wildcards=o10.OFPFW_ALL & ~o10.OFPFW_IN_PORT, in_port=1),
               actions=[p10.OFPActionOutput(2)]),
    flow_mod13(match=p13.OFPMatch(in_port=1), instructions=apply([p13.OFPActionOutput(2)])),
    build(p13.OFPPacketOut(DP13, 0xFFFFFFFF, 1, [p13.OFPActionOutput(2)], FRAME)),
    build(p10.OFPPacketOut(DP10, 0xFFFFFFFF, 1, [p10.OFPActionOutput(2)], FRAME)),
    build(p13.OFPFlowStatsRequest(DP13, 0, 0xFF, o13.OFPP_ANY, o13.OFPG_ANY, 0, 0,
                                  p13.OFPMatch(in_port=2))),
    build(p10.OFPPortMod(DP10, 3, "aa:bb:cc:dd:ee:ff", 1, 1, 0x20)),
    switch_side.port_status(OFP13, reason=0, port=switch_side.PortDesc(1, "p", "00:00:00:00:00:01")),
    switch_side.flow_removed(OFP10, cookie=1, priority=1, reason=0),
    switch_side.multipart_reply(OFP13, 1, flow_entry13(p13.OFPMatch(in_port=1),
                                                       [p13.OFPActionOutput(2)]), 1),
]


@SLOW
@given(sample=st.sampled_from(SAMPLES), data=st.data())
def test_corrupted_messages_raise_only_the_two_documented_errors(sample: bytes,
                                                                 data: st.DataObject) -> None:
    """Whatever a peer sends, translate() blames it (RemoteProtocolError) or refuses it
    (Untranslatable); nothing else escapes to the northbound."""
    raw = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, len(raw) - 1))  # the header stays: framing checked it
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(raw)))
    raw = raw[:cut]
    struct.pack_into("!H", raw, 2, len(raw))
    to_version = OFP13 if raw[0] == OFP10 else OFP10
    try:
        out = translate(bytes(raw), to_version)
    except (Untranslatable, RemoteProtocolError):
        return
    assert all(m[0] == to_version for m in out)
