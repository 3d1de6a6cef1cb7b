"""Group and meter ids split between controllers (ovs_sriov_proxy/idspaces.py)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.idspaces import (
    OFPG_MAX,
    BridgeIds,
    IdRefused,
    group_slices,
    meter_slices,
)

DP = ofproto_protocol.ProtocolDesc(0x04)
MAX_METER = 1000
A, B = "alpha", "beta"


def raw(msg) -> bytes:
    msg.serialize()
    return bytes(msg.buf)


def u32(data: bytes, at: int) -> int:
    return int(struct.unpack_from("!I", data, at)[0])


def two() -> BridgeIds:
    return BridgeIds([A, B], MAX_METER)


def group_add(group_id: int, watch_group: int = of13.OFPG_ANY, chained: int | None = None) -> bytes:
    actions = [p13.OFPActionOutput(1)] if chained is None else [p13.OFPActionGroup(chained)]
    bucket = p13.OFPBucket(watch_port=of13.OFPP_ANY, watch_group=watch_group, actions=actions)
    return raw(p13.OFPGroupMod(DP, of13.OFPGC_ADD, of13.OFPGT_FF, group_id, [bucket]))


def group_delete(group_id: int) -> bytes:
    return raw(p13.OFPGroupMod(DP, of13.OFPGC_DELETE, of13.OFPGT_ALL, group_id, []))


def meter_mod(command: int, meter_id: int) -> bytes:
    bands = [p13.OFPMeterBandDrop(rate=100, burst_size=10)] if command != of13.OFPMC_DELETE else []
    return raw(p13.OFPMeterMod(DP, command, of13.OFPMF_KBPS, meter_id, bands))


def flow_mod(group_id: int, meter_id: int, command: int = of13.OFPFC_ADD,
             out_group: int = of13.OFPG_ANY) -> bytes:
    return raw(p13.OFPFlowMod(DP, command=command, priority=5, out_group=out_group,
                              match=p13.OFPMatch(in_port=1, eth_type=0x800),
                              instructions=[p13.OFPInstructionMeter(meter_id),
                                            p13.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS, [
                                                p13.OFPActionGroup(group_id)])]))


def parse_flow_mod(data: bytes):
    return p13.OFPFlowMod.parser(DP, 4, of13.OFPT_FLOW_MOD, len(data), 0, data)


def multipart_reply(kind: int, body: bytes, more: bool = False) -> bytes:
    return struct.pack("!BBHIHH4x", 4, of13.OFPT_MULTIPART_REPLY, 16 + len(body), 7, kind,
                       int(more)) + body


def parse_reply(data: bytes):
    return p13.OFPMultipartReply.parser(DP, 4, of13.OFPT_MULTIPART_REPLY, len(data), 7, data)


# ---- slices ----


def test_group_slices_split_the_whole_range_without_overlap() -> None:
    for count in (2, 3, 7, 254):
        slices = group_slices(count)
        bridge_ranges = [(s.to_bridge(s.first), s.to_bridge(s.last)) for s in slices]
        assert bridge_ranges[0][0] == 0
        for (_, high), (low, _) in zip(bridge_ranges, bridge_ranges[1:], strict=False):
            assert low == high + 1
        assert bridge_ranges[-1][1] <= OFPG_MAX


def test_meter_slices_follow_the_bridges_limit() -> None:
    slices = meter_slices(3, 1000)
    assert [(s.to_bridge(1), s.to_bridge(333)) for s in slices] == [(1, 333), (334, 666),
                                                                    (667, 999)]
    assert slices[0].to_bridge(334) is None and slices[0].to_bridge(0) is None
    assert meter_slices(2, 0)[1].to_bridge(1) is None  # a bridge without meters: none fit


@given(st.integers(2, 40), st.data())
def test_every_controller_id_maps_to_one_bridge_id_and_back(count: int, data) -> None:
    slices = group_slices(count)
    k = data.draw(st.integers(0, count - 1))
    ident = data.draw(st.integers(0, slices[k].last))
    bridge = slices[k].to_bridge(ident)
    assert bridge is not None and bridge <= OFPG_MAX
    assert [s.from_bridge(bridge) for s in slices] == [ident if i == k else None
                                                        for i in range(count)]


# ---- controller -> bridge ----


def test_one_controller_is_not_remapped() -> None:
    ids = BridgeIds([A], MAX_METER)
    message = group_add(5)
    assert ids.down(A, message) == [message]
    reply = multipart_reply(of13.OFPMP_GROUP_DESC, b"")
    assert ids.up(A, reply) == reply


def test_two_controllers_using_the_same_group_get_different_bridge_groups() -> None:
    ids = two()
    [to_bridge_a] = ids.down(A, group_add(1))
    [to_bridge_b] = ids.down(B, group_add(1))
    assert u32(to_bridge_a, 12) == 1
    assert u32(to_bridge_b, 12) == group_slices(2)[1].low + 1
    assert to_bridge_a[16:] == group_add(1)[16:]  # buckets untouched when nothing refers to groups


def test_bucket_watch_groups_and_chained_groups_are_mapped() -> None:
    ids = two()
    low = group_slices(2)[1].low
    [message] = ids.down(B, group_add(3, watch_group=4, chained=5))
    assert u32(message, 12) == low + 3
    assert u32(message, 16 + 8) == low + 4  # the bucket's watch_group
    assert u32(message, 16 + 16 + 4) == low + 5  # its group action


def test_a_delete_all_removes_only_the_controllers_own_groups() -> None:
    ids = two()
    for group in (1, 2, 3):
        ids.down(A, group_add(group))
    ids.down(B, group_add(1))
    ids.down(A, group_delete(2))
    deletes = ids.down(A, group_delete(of13.OFPG_ALL))
    assert [u32(d, 12) for d in deletes] == [1, 3]
    assert all(len(d) == 16 and d[8:10] == b"\x00\x02" for d in deletes)
    assert ids.down(A, group_delete(of13.OFPG_ALL)) == []  # nothing left of its own
    b_low = group_slices(2)[1].low
    assert [u32(d, 12) for d in ids.down(B, group_delete(of13.OFPG_ALL))] == [b_low + 1]


def test_groups_found_on_the_bridge_belong_to_the_slice_they_are_in() -> None:
    ids = two()
    b_low = group_slices(2)[1].low
    ids.seed(groups=[7, b_low + 7], meters=[3, 503])
    assert [u32(d, 12) for d in ids.down(A, group_delete(of13.OFPG_ALL))] == [7]
    assert [u32(d, 12) for d in ids.down(B, group_delete(of13.OFPG_ALL))] == [b_low + 7]
    assert [u32(d, 12) for d in ids.down(B, meter_mod(of13.OFPMC_DELETE, of13.OFPM_ALL))] == [503]


def test_meters_are_mapped_into_the_controllers_share_of_the_bridges_limit() -> None:
    ids = two()
    [message] = ids.down(B, meter_mod(of13.OFPMC_ADD, 1))
    assert u32(message, 12) == 501
    with pytest.raises(IdRefused) as refused:
        ids.down(B, meter_mod(of13.OFPMC_ADD, 501))  # beyond its 500
    assert (refused.value.err_type, refused.value.code) == (of13.OFPET_METER_MOD_FAILED,
                                                            of13.OFPMMFC_OUT_OF_METERS)
    with pytest.raises(IdRefused):
        ids.down(A, meter_mod(of13.OFPMC_ADD, 0))
    # A flow using the reserved controller meter (shared by all) is passed as it is.
    [message] = ids.down(A, flow_mod(group_id=1, meter_id=of13.OFPM_CONTROLLER))
    assert parse_flow_mod(message).instructions[0].meter_id == of13.OFPM_CONTROLLER


def test_a_flow_mods_group_actions_and_meter_are_mapped() -> None:
    ids = two()
    [message] = ids.down(B, flow_mod(group_id=2, meter_id=3))
    parsed = parse_flow_mod(message)
    meter, apply = parsed.instructions
    assert meter.meter_id == 503
    assert apply.actions[0].group_id == group_slices(2)[1].low + 2
    assert parsed.match["eth_type"] == 0x800  # the rest as it was
    assert len(message) == len(flow_mod(2, 3))


def test_a_delete_filtered_by_out_group_is_mapped_and_an_add_ignores_it() -> None:
    ids = two()
    low = group_slices(2)[1].low
    [delete] = ids.down(B, flow_mod(1, 1, command=of13.OFPFC_DELETE, out_group=9))
    assert parse_flow_mod(delete).out_group == low + 9
    [add] = ids.down(B, flow_mod(1, 1, out_group=0xFFFFFF7F))  # junk an ADD does not read
    assert parse_flow_mod(add).out_group == 0xFFFFFF7F


def test_an_out_of_slice_group_in_a_flow_is_a_bad_out_group() -> None:
    ids = BridgeIds([A, B, "gamma"], MAX_METER)
    with pytest.raises(IdRefused) as refused:
        ids.down(A, flow_mod(group_id=group_slices(3)[0].last + 1, meter_id=1))
    assert (refused.value.err_type, refused.value.code) == (of13.OFPET_BAD_ACTION,
                                                            of13.OFPBAC_BAD_OUT_GROUP)
    with pytest.raises(IdRefused) as refused:
        ids.down(A, group_add(group_slices(3)[0].last + 1))
    assert refused.value.code == of13.OFPGMFC_INVALID_GROUP


def test_a_packet_outs_group_action_is_mapped() -> None:
    ids = two()
    message = raw(p13.OFPPacketOut(DP, of13.OFP_NO_BUFFER, 1, [p13.OFPActionGroup(4)], b"x" * 60))
    [mapped] = ids.down(B, message)
    assert u32(mapped, 24 + 4) == group_slices(2)[1].low + 4
    assert mapped[-60:] == b"x" * 60
    # The same actions in a PACKET_OUT that answers a miss (built by the proxy).
    assert ids.map_actions(B, 4, message[24:32]) == mapped[24:32]


def test_stats_requests_for_one_group_or_meter_are_mapped() -> None:
    ids = two()
    [group_stats] = ids.down(B, raw(p13.OFPGroupStatsRequest(DP, 0, 6)))
    assert u32(group_stats, 16) == group_slices(2)[1].low + 6
    [meter_config] = ids.down(B, raw(p13.OFPMeterConfigStatsRequest(DP, 0, 2)))
    assert u32(meter_config, 16) == 502
    everything = raw(p13.OFPMeterStatsRequest(DP, 0, of13.OFPM_ALL))
    assert ids.down(B, everything) == [everything]


def test_a_short_group_mod_is_refused_not_crashed_on() -> None:
    with pytest.raises(IdRefused):
        two().down(A, struct.pack("!BBHI", 4, of13.OFPT_GROUP_MOD, 8, 1))


# ---- bridge -> controller ----


def group_desc_entry(group_id: int, watch_group: int, chained: int) -> bytes:
    action = struct.pack("!HHI", of13.OFPAT_GROUP, 8, chained)
    bucket = struct.pack("!HHII4x", 16 + len(action), 0, of13.OFPP_ANY, watch_group) + action
    return struct.pack("!HBxI", 8 + len(bucket), of13.OFPGT_FF, group_id) + bucket


def test_group_descriptions_show_a_controller_only_its_groups_in_its_ids() -> None:
    ids = two()
    low = group_slices(2)[1].low
    body = group_desc_entry(1, of13.OFPG_ANY, 2) + group_desc_entry(low + 1, low + 2, low + 3)
    for controller, expected in ((A, (1, of13.OFPG_ANY, 2)), (B, (1, 2, 3))):
        reply = parse_reply(ids.up(controller, multipart_reply(of13.OFPMP_GROUP_DESC, body)))
        [desc] = reply.body
        bucket = desc.buckets[0]
        assert (desc.group_id, bucket.watch_group, bucket.actions[0].group_id) == expected


def test_group_and_meter_stats_are_filtered_and_unmapped() -> None:
    ids = two()
    low = group_slices(2)[1].low

    def group_stats(group_id: int) -> bytes:
        return struct.pack("!H2xII4xQQII", 40, group_id, 1, 2, 3, 4, 5)

    reply = parse_reply(ids.up(B, multipart_reply(of13.OFPMP_GROUP,
                                                  group_stats(3) + group_stats(low + 3))))
    assert [s.group_id for s in reply.body] == [3]

    def meter_stats(meter_id: int) -> bytes:
        return struct.pack("!IH6xIQQII", meter_id, 40, 0, 1, 2, 3, 4)

    reply = parse_reply(ids.up(A, multipart_reply(of13.OFPMP_METER,
                                                  meter_stats(5) + meter_stats(505))))
    assert [s.meter_id for s in reply.body] == [5]

    def meter_config(meter_id: int) -> bytes:
        band = struct.pack("!HHII4x", of13.OFPMBT_DROP, 16, 100, 10)
        return struct.pack("!HHI", 8 + len(band), of13.OFPMF_KBPS, meter_id) + band

    reply = parse_reply(ids.up(B, multipart_reply(of13.OFPMP_METER_CONFIG,
                                                  meter_config(5) + meter_config(505))))
    assert [s.meter_id for s in reply.body] == [5]


def test_meter_features_tell_a_controller_its_share() -> None:
    body = struct.pack("!IIIBB2x", MAX_METER, 1, 0, 8, 0)
    reply = parse_reply(two().up(A, multipart_reply(of13.OFPMP_METER_FEATURES, body)))
    assert reply.body[0].max_meter == MAX_METER // 2


def test_flow_stats_show_a_controllers_groups_and_meters_in_its_ids() -> None:
    ids = two()
    [bridge_flow] = ids.down(B, flow_mod(group_id=2, meter_id=3))
    parsed = parse_flow_mod(bridge_flow)
    match = bridge_flow[48:48 + (parsed.match.length + 7) // 8 * 8]
    instructions = bridge_flow[48 + len(match):]
    entry = struct.pack("!HBxIIHHHH4xQQQ", 48 + len(match) + len(instructions), 0, 1, 0, 5, 0, 0,
                        0, 0, 0, 0) + match + instructions
    reply = parse_reply(ids.up(B, multipart_reply(of13.OFPMP_FLOW, entry)))
    meter, apply = reply.body[0].instructions
    assert (meter.meter_id, apply.actions[0].group_id) == (3, 2)
    other = parse_reply(ids.up(A, multipart_reply(of13.OFPMP_FLOW, entry)))
    meter, apply = other.body[0].instructions
    assert meter.meter_id == 503  # another controller's ids are shown as the bridge has them


def test_a_malformed_reply_from_the_bridge_loses_only_the_malformed_tail() -> None:
    ids = two()
    good = struct.pack("!H2xII4xQQII", 40, 3, 1, 2, 3, 4, 5)
    bad = struct.pack("!H2xI", 400, 4)  # claims more than there is
    reply = parse_reply(ids.up(A, multipart_reply(of13.OFPMP_GROUP, good + bad)))
    assert [s.group_id for s in reply.body] == [3]


def test_the_constants_are_openflows() -> None:
    from ovs_sriov_proxy import idspaces

    for name in ("OFPG_MAX", "OFPG_ALL", "OFPG_ANY", "OFPM_MAX", "OFPM_ALL", "OFPAT_GROUP",
                 "OFPIT_METER", "OFPGC_DELETE",
                 "OFPMC_DELETE", "OFPMP_GROUP_DESC", "OFPMP_METER_CONFIG", "OFPMP_METER_FEATURES",
                 "OFPET_GROUP_MOD_FAILED", "OFPGMFC_INVALID_GROUP", "OFPET_METER_MOD_FAILED",
                 "OFPMMFC_INVALID_METER", "OFPMMFC_OUT_OF_METERS", "OFPET_BAD_ACTION",
                 "OFPBAC_BAD_OUT_GROUP", "OFPBRC_BAD_LEN", "OFPFC_DELETE_STRICT"):
        assert getattr(idspaces, name) == getattr(of13, name), name


def test_on_15_the_meter_action_group_mods_and_group_descriptions_are_mapped() -> None:
    from os_ken.ofproto import ofproto_v1_5 as of15
    from os_ken.ofproto import ofproto_v1_5_parser as p15

    dp15 = ofproto_protocol.ProtocolDesc(0x06)
    ids = two()
    low = group_slices(2)[1].low
    meter_action = struct.pack("!HHI", 29, 8, 2)  # OFPAT_METER, new in 1.5
    assert u32(ids.map_actions(B, 6, meter_action), 4) == 502
    assert ids.map_actions(B, 4, meter_action) == meter_action  # no such action before 1.5
    bucket = p15.OFPBucket(bucket_id=1, actions=[p15.OFPActionGroup(5), p15.OFPActionOutput(1)],
                           properties=[p15.OFPGroupBucketPropWatch(
                               type_=of15.OFPGBPT_WATCH_GROUP, watch=7)])
    add = raw(p15.OFPGroupMod(dp15, command=of15.OFPGC_ADD, type_=of15.OFPGT_FF, group_id=3,
                              buckets=[bucket]))
    [mapped] = ids.down(B, add)  # (os-ken cannot decode a 1.5 GROUP_MOD: the bytes are read)
    assert u32(mapped, 12) == low + 3
    assert u32(mapped, 24 + 8 + 4) == low + 5  # the bucket's group action
    assert u32(mapped, len(mapped) - 4) == low + 7  # its watch_group property
    assert len(mapped) == len(add)
    delete_all = raw(p15.OFPGroupMod(dp15, command=of15.OFPGC_DELETE, group_id=of15.OFPG_ALL))
    [delete] = ids.down(B, delete_all)
    assert (len(delete), u32(delete, 12), struct.unpack_from("!H", delete, 2)[0]) == (
        24, low + 3, 24)
    # a 1.5 group description (length, type, pad, group_id, bucket_array_len, pad6, buckets)
    buckets = mapped[24:]
    entry = struct.pack("!HBxIH6x", 16 + len(buckets), of15.OFPGT_FF, low + 3,
                        len(buckets)) + buckets
    reply = struct.pack("!BBHIHH4x", 6, 19, 16 + len(entry), 7, of15.OFPMP_GROUP_DESC, 0) + entry
    shown = ids.up(B, reply)
    assert u32(shown, 16 + 4) == 3
    assert u32(shown, 32 + 8 + 4) == 5 and u32(shown, len(shown) - 4) == 7


@given(st.sampled_from([13, 14, 15, 18, 19, 29]), st.integers(0, 11), st.binary(max_size=120))
def test_corrupted_messages_are_refused_or_mapped_never_crash(msg_type: int, kind: int,
                                                              body: bytes) -> None:
    ids = two()
    ids.seed(groups=[1, group_slices(2)[1].low + 1], meters=[1, 501])
    message = struct.pack("!BBHIHH", 4, msg_type, 12 + len(body), 1, kind, 0) + body
    try:
        out = ids.down(A, message)
    except IdRefused:
        pass
    else:
        assert all(len(m) >= 8 for m in out)
    reply = ids.up(B, message)
    assert struct.unpack_from("!H", reply, 2)[0] == len(reply)


def test_a_group_inside_a_nicira_clone_action_is_mapped() -> None:
    ids = two()
    group = struct.pack("!HHI", of13.OFPAT_GROUP, 8, 5)
    clone = struct.pack("!HHIH6x", 0xFFFF, 16 + len(group), 0x2320, 42) + group
    mapped = ids.map_actions(B, 4, clone)
    assert u32(mapped, 16 + 4) == group_slices(2)[1].low + 5


def test_add_or_modify_makes_a_group_owned_and_a_refused_add_does_not() -> None:
    ids = two()
    add_or_mod = bytearray(group_add(6))
    struct.pack_into("!H", add_or_mod, 8, 0x8000)  # OVS's OFPGC_ADD_OR_MOD
    ids.down(A, bytes(add_or_mod))
    [refused_add] = ids.down(A, group_add(7))
    ids.add_failed(A, refused_add[:64], of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_BAD_TYPE)
    [existing] = ids.down(A, group_add(6))
    ids.add_failed(A, existing[:64], of13.OFPET_GROUP_MOD_FAILED, of13.OFPGMFC_GROUP_EXISTS)
    [meter] = ids.down(A, meter_mod(of13.OFPMC_ADD, 2))
    ids.add_failed(A, meter, of13.OFPET_METER_MOD_FAILED, of13.OFPMMFC_BAD_RATE)
    assert [u32(d, 12) for d in ids.down(A, group_delete(of13.OFPG_ALL))] == [6]
    assert ids.down(A, meter_mod(of13.OFPMC_DELETE, of13.OFPM_ALL)) == []


def test_reserved_meters_cannot_be_changed_by_one_of_several_controllers() -> None:
    with pytest.raises(IdRefused) as refused:
        two().down(A, meter_mod(of13.OFPMC_MODIFY, of13.OFPM_CONTROLLER))
    assert refused.value.code == of13.OFPMMFC_INVALID_METER


def test_an_unknown_meter_in_a_flow_is_what_a_bridge_says_and_an_alien_out_group_matches_none(
        ) -> None:
    ids = two()
    with pytest.raises(IdRefused) as refused:
        ids.down(A, flow_mod(group_id=1, meter_id=MAX_METER))
    assert (refused.value.err_type, refused.value.code) == (of13.OFPET_METER_MOD_FAILED,
                                                            of13.OFPMMFC_UNKNOWN_METER)
    [delete] = ids.down(A, flow_mod(1, 1, command=of13.OFPFC_DELETE,
                                    out_group=group_slices(2)[1].low))
    assert parse_flow_mod(delete).out_group == OFPG_MAX  # in nobody's slice: matches nothing
    [stats] = ids.down(A, raw(p13.OFPFlowStatsRequest(DP, out_group=group_slices(2)[1].low)))
    assert u32(stats, 24) == OFPG_MAX


def test_15_flow_descriptions_show_a_controller_its_own_group_ids() -> None:
    ids = two()
    low = group_slices(2)[1].low
    match = struct.pack("!HHIIxxxx", 1, 12, 0x80000004, 1)  # in_port=1, padded to 16
    stats = struct.pack("!HH", 0, 4) + bytes(4)  # ofp_stats with no fields, padded to 8
    instructions = struct.pack("!HH4x", of13.OFPIT_APPLY_ACTIONS, 16) + struct.pack(
        "!HHI", of13.OFPAT_GROUP, 8, low + 3)
    fixed = struct.pack("!H2xBxHHHHHQ", 24 + len(match) + len(stats) + len(instructions), 0, 5,
                        0, 0, 0, 0, 0)
    reply = struct.pack("!BBHIHH4x", 6, of13.OFPT_MULTIPART_REPLY, 16 + len(fixed) + len(match)
                        + len(stats) + len(instructions), 7, 1, 0) + fixed + match + stats \
        + instructions
    unmapped = ids.up(B, reply)
    assert u32(unmapped, len(unmapped) - 4) == 3
