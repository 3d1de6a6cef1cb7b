"""openflow/flows.py: rules to OpenFlow messages and back, checked against os-ken's own parsers."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as ofp10
from os_ken.ofproto import ofproto_v1_0_parser as ofp10p

from ovs_sriov_proxy.openflow import flows
from ovs_sriov_proxy.openflow.flows import (
    NO_BUFFER,
    OF10,
    OF13,
    OF14,
    OF15,
    FlowAddTemplate,
    PacketOutTemplate,
    Unrepresentable,
    decode_actions,
    decode_match,
    encode_actions,
    encode_match,
    flow_add,
    flow_delete,
    packet_out,
    table_miss_flow,
)
from ovs_sriov_proxy.rules.fields import FIELDS, KEY_BITS, pack
from ovs_sriov_proxy.rules.model import (
    OFPP_CONTROLLER,
    OFPP_LOCAL,
    Action,
    Match,
    Output,
    PopVlan,
    PushVlan,
    SetField,
    SetQueue,
)

OXM_VERSIONS = (OF13, OF14, OF15)
ALL_VERSIONS = (OF10, *OXM_VERSIONS)
FULL = {name: f.full_mask for name, f in FIELDS.items()}

# What the tests expect each version to express (stated here, not read from the module).
OF10_FIELDS = frozenset(
    {
        "in_port", "eth_dst", "eth_src", "eth_type", "vlan_vid", "vlan_pcp", "ip_dscp",
        "ip_proto", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst",
        "icmpv4_type", "icmpv4_code", "arp_op", "arp_spa", "arp_tpa",
    }
)  # fmt: skip
OF10_PREFIX = frozenset({"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"})
OXM_MASKABLE = frozenset(
    {
        "eth_dst", "eth_src", "vlan_vid", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst",
        "udp_src", "udp_dst", "sctp_src", "sctp_dst", "arp_spa", "arp_tpa", "arp_sha",
        "arp_tha", "ipv6_src", "ipv6_dst", "ipv6_flabel",
    }
)  # fmt: skip

SLOW = settings(
    deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)


def exact(**values: int) -> Match:
    return Match.from_fields({name: (v, FULL[name]) for name, v in values.items()})


def parse_flow_mod(version: int, data: bytes) -> Any:
    dp = ofproto_protocol.ProtocolDesc(version)
    got_version, msg_type, length, xid = struct.unpack_from("!BBHI", data)
    assert (got_version, msg_type, length) == (
        version,
        dp.ofproto.OFPT_FLOW_MOD,
        len(data),
    )
    return dp.ofproto_parser.OFPFlowMod.parser(dp, version, msg_type, length, xid, data)


def flow_mod_actions(version: int, msg: Any) -> list[Any]:
    return msg.actions if version == OF10 else msg.instructions


# ---------------------------------------------------------------------------------------------
# Strategies


def ports(version: int) -> st.SearchStrategy[int]:
    if version == OF10:
        return st.one_of(st.integers(0, 0xFEFF), st.integers(0xFFFFFF00, 0xFFFFFFFF))
    return st.integers(0, 0xFFFFFFFF)


@st.composite
def matches(draw: Any, version: int, any_mask: bool = False) -> Match:
    """Matches that respect fields.FIELDS prerequisites.

    By default each field gets the masks `version` can express; with any_mask, the fields the
    version has get arbitrary masks (to exercise narrowing).
    """
    of10 = version == OF10
    out: dict[str, tuple[int, int]] = {}

    def style(name: str) -> str:
        if any_mask and name != "in_port":
            return "any"
        if of10:
            return "prefix" if name in OF10_PREFIX else "exact"
        return "any" if name in OXM_MASKABLE else "exact"

    def add(name: str, values: st.SearchStrategy[int] | None = None) -> None:
        if of10 and name not in OF10_FIELDS:
            return
        if not draw(st.booleans()):
            return
        bits = FIELDS[name].bits
        value = draw(values if values is not None else st.integers(0, FULL[name]))
        kind = style(name)
        if kind == "exact":
            mask = FULL[name]
        elif kind == "prefix":
            plen = draw(st.integers(1, bits))
            mask = FULL[name] ^ ((1 << (bits - plen)) - 1)
        else:
            mask = draw(st.integers(1, FULL[name]))
        out[name] = (value & mask, mask)

    def pin(name: str, value: int) -> None:
        out[name] = (value, FULL[name])

    add("in_port", ports(version))
    add("eth_src")
    add("eth_dst")
    vlan = draw(st.sampled_from(["none", "untagged", "tagged", "masked"]))
    if vlan == "untagged":
        pin("vlan_vid", 0)
    elif vlan == "tagged":
        pin("vlan_vid", 0x1000 | draw(st.integers(0, 0xFFF)))
        add("vlan_pcp")
    elif vlan == "masked" and (any_mask or not of10):
        mask = 0x1000 | draw(st.integers(0, 0xFFF))  # keeps "tagged" in every narrowing
        out["vlan_vid"] = ((0x1000 | draw(st.integers(0, 0xFFF))) & mask, mask)
    eth_type = draw(st.sampled_from([None, 0x0800, 0x86DD, 0x0806, 0x88CC]))
    if eth_type is None:
        return Match.from_fields(out)
    pin("eth_type", eth_type)
    if eth_type in (0x0800, 0x86DD):
        add("ip_dscp")
        add("ip_ecn")
        if eth_type == 0x0800:
            add("ipv4_src")
            add("ipv4_dst")
            protos = [None, 6, 17, 132, 1, 47]
        else:
            add("ipv6_src")
            add("ipv6_dst")
            add("ipv6_flabel")
            protos = [None, 6, 17, 132, 58, 47]
        proto = draw(st.sampled_from(protos))
        if proto is None:
            return Match.from_fields(out)
        pin("ip_proto", proto)
        layer = {6: "tcp", 17: "udp", 132: "sctp"}.get(proto)
        if layer:
            add(f"{layer}_src")
            add(f"{layer}_dst")
        elif proto == 1:
            add("icmpv4_type")
            add("icmpv4_code")
        elif proto == 58:
            add("icmpv6_type")
            add("icmpv6_code")
    elif eth_type == 0x0806:
        add("arp_op", st.integers(0, 0xFF) if of10 or any_mask else None)
        for name in ("arp_spa", "arp_tpa", "arp_sha", "arp_tha"):
            add(name)
    return Match.from_fields(out)


def outputs(version: int) -> st.SearchStrategy[Output]:
    return st.builds(Output, ports(version), st.integers(0, 0xFFFF))


def set_fields_oxm() -> st.SearchStrategy[SetField]:
    return st.sampled_from(sorted(FIELDS)).flatmap(
        lambda name: st.builds(SetField, st.just(name), st.integers(0, FULL[name]))
    )


def oxm_actions() -> st.SearchStrategy[tuple[Action, ...]]:
    action = st.one_of(
        outputs(OF13),
        set_fields_oxm(),
        st.builds(PushVlan, st.sampled_from([0x8100, 0x88A8])),
        st.just(PopVlan()),
        st.builds(SetQueue, st.integers(0, 0xFFFFFFFF)),
    )
    return st.lists(action, max_size=8).map(tuple)


OF10_SET_FIELDS = ("vlan_pcp", "eth_src", "eth_dst", "ipv4_src", "ipv4_dst", "ip_dscp",
                   "tcp_src", "tcp_dst")  # fmt: skip


@st.composite
def of10_actions(draw: Any) -> tuple[Action, ...]:
    """Action lists OF1.0 expresses one way only (set_tp_* decoded as TCP: see TCP_FLOW)."""
    out: list[Action] = []
    queue: int | None = None
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["output", "queue", "vlan", "set", "strip"]))
        if kind == "output":
            out.append(
                draw(outputs(OF10)) if queue is None else Output(draw(ports(OF10)))
            )
        elif kind == "queue":
            new = draw(st.integers(0, 0xFFFFFFFF))
            if new == queue:  # a repeated set_queue has no OF1.0 spelling of its own
                new ^= 1
            queue = new
            out += [SetQueue(new), Output(draw(ports(OF10)))]
        elif kind == "vlan":
            out.append(SetField("vlan_vid", 0x1000 | draw(st.integers(0, 0xFFF))))
        elif kind == "set":
            name = draw(st.sampled_from(OF10_SET_FIELDS))
            out.append(SetField(name, draw(st.integers(0, FULL[name]))))
        else:
            out.append(PopVlan())
    return tuple(out)


def actions_for(version: int) -> st.SearchStrategy[tuple[Action, ...]]:
    return of10_actions() if version == OF10 else oxm_actions()


TCP_FLOW = exact(eth_type=0x0800, ip_proto=6)


# ---------------------------------------------------------------------------------------------
# Round trips through os-ken's parsers


@pytest.mark.parametrize("version", ALL_VERSIONS)
@SLOW
@given(data=st.data())
def test_flow_add_round_trips_through_osken(version: int, data: st.DataObject) -> None:
    match = data.draw(matches(version))
    actions = data.draw(actions_for(version))
    priority = data.draw(st.integers(0, 0xFFFF))
    cookie = data.draw(st.integers(0, 2**64 - 1))
    idle, hard = data.draw(st.integers(0, 0xFFFF)), data.draw(st.integers(0, 0xFFFF))
    notify = data.draw(st.booleans())
    xid = data.draw(st.integers(0, 0xFFFFFFFF))
    wire = flow_add(
        version, match, actions, priority=priority, cookie=cookie, idle_timeout=idle,
        hard_timeout=hard, send_flow_removed=notify, xid=xid,
    )  # fmt: skip
    msg = parse_flow_mod(version, wire)
    ofp = msg.datapath.ofproto
    assert msg.xid == xid
    assert decode_match(msg.match, version) == match
    context = TCP_FLOW if version == OF10 else None
    assert decode_actions(flow_mod_actions(version, msg), version, context) == actions
    assert (msg.command, msg.priority, msg.cookie) == (ofp.OFPFC_ADD, priority, cookie)
    assert (msg.idle_timeout, msg.hard_timeout, msg.buffer_id) == (
        idle,
        hard,
        NO_BUFFER,
    )
    assert msg.flags == (ofp.OFPFF_SEND_FLOW_REM if notify else 0)
    if version != OF10:
        assert msg.table_id == 0
        assert all(i.type == ofp.OFPIT_APPLY_ACTIONS for i in msg.instructions)


@pytest.mark.parametrize("version", ALL_VERSIONS)
@SLOW
@given(data=st.data())
def test_narrowing_with_key_matches_a_subset_containing_the_packet(
    version: int, data: st.DataObject
) -> None:
    match = data.draw(matches(version, any_mask=True))
    noise = data.draw(st.integers(0, 2**KEY_BITS - 1))
    noise &= ~pack({"arp_op": 0xFF00})  # real ARP opcodes fit OF1.0's 8-bit nw_proto
    key = match.value | (noise & ~match.mask)
    narrowed_wire = flow_add(version, match, (), priority=1, cookie=0, key=key)
    narrowed = decode_match(parse_flow_mod(version, narrowed_wire).match, version)
    assert match.covers(narrowed)
    assert narrowed.matches(key)
    # Only fields the version could not express were touched.
    for name, (value, mask) in match.fields().items():
        if version != OF10 and name in OXM_MASKABLE:
            assert narrowed.fields()[name] == (value, mask)
    if narrowed != match:
        with pytest.raises(Unrepresentable):
            encode_match(match, version)


def test_narrowing_prefers_the_widest_prefix_on_of10() -> None:
    match = Match.from_fields(
        {"eth_type": (0x0800, 0xFFFF), "ipv4_src": (0x0A000000, 0xFF00FF00)}
    )
    key = pack({"eth_type": 0x0800, "ipv4_src": 0x0A630064})
    ofmatch = encode_match(match, OF10, key=key)
    assert ofmatch["nw_src_mask"] == 24
    assert decode_match(ofmatch, OF10).fields()["ipv4_src"] == (0x0A630000, 0xFFFFFF00)


def test_narrowing_rejects_a_key_outside_the_match() -> None:
    match = Match.from_fields({"eth_dst": (0x010000000000, 0x010000000000)})
    with pytest.raises(ValueError, match="key does not match"):
        encode_match(match, OF10, key=pack({"eth_dst": 0x020000000000}))


def test_narrowing_non_maskable_oxm_field() -> None:
    match = Match.from_fields({"eth_type": (0x0800, 0xFFFF), "ip_dscp": (0x20, 0x30)})
    with pytest.raises(Unrepresentable):
        encode_match(match, OF13)
    key = pack({"eth_type": 0x0800, "ip_dscp": 0x2B})
    assert dict(encode_match(match, OF13, key=key).items()) == {
        "eth_type": 0x0800,
        "ip_dscp": 0x2B,
    }


# ---------------------------------------------------------------------------------------------
# OpenFlow 1.0 mapping details


def test_of10_field_mapping() -> None:
    m = encode_match(
        exact(in_port=OFPP_LOCAL, vlan_vid=0, eth_type=0x0800, ip_dscp=0x2E, ip_proto=1,
              icmpv4_type=8, icmpv4_code=3),
        OF10,
    )  # fmt: skip
    assert m.in_port == 0xFFFE
    assert m.dl_vlan == ofp10.OFP_VLAN_NONE
    assert m.nw_tos == 0x2E << 2
    assert (m.nw_proto, m.tp_src, m.tp_dst) == (1, 8, 3)
    wildcarded = m.wildcards
    for flag in (
        ofp10.OFPFW_IN_PORT,
        ofp10.OFPFW_DL_VLAN,
        ofp10.OFPFW_NW_TOS,
        ofp10.OFPFW_TP_SRC,
    ):
        assert not wildcarded & flag
    assert wildcarded & ofp10.OFPFW_DL_SRC and wildcarded & ofp10.OFPFW_DL_VLAN_PCP

    tagged = encode_match(exact(vlan_vid=0x1000 | 42, vlan_pcp=5), OF10)
    assert (tagged.dl_vlan, tagged.dl_vlan_pcp) == (42, 5)

    arp = encode_match(
        Match.from_fields(
            {"eth_type": (0x0806, 0xFFFF), "arp_op": (2, 0xFFFF), "arp_spa": (0x0A000000, 0xFF000000),
             "arp_tpa": (0x0A000001, 0xFFFFFFFF)}
        ),
        OF10,
    )  # fmt: skip
    assert (arp.nw_proto, arp.nw_src, arp.nw_dst) == (2, 0x0A000000, 0x0A000001)
    assert (arp["nw_src_mask"], arp["nw_dst_mask"]) == (8, 32)

    udp = encode_match(
        exact(eth_type=0x0800, ip_proto=17, udp_src=53, udp_dst=5353), OF10
    )
    assert (udp.tp_src, udp.tp_dst) == (53, 5353)
    assert decode_match(udp, OF10) == exact(
        eth_type=0x0800, ip_proto=17, udp_src=53, udp_dst=5353
    )


def test_of10_actions_mapping() -> None:
    actions = encode_actions(
        (SetField("vlan_vid", 0x1000 | 7), SetField("ip_dscp", 10), SetQueue(4),
         Output(3), Output(OFPP_CONTROLLER), PopVlan()),
        OF10,
    )  # fmt: skip
    kinds = [type(a) for a in actions]
    assert kinds == [
        ofp10p.OFPActionVlanVid, ofp10p.OFPActionSetNwTos, ofp10p.OFPActionEnqueue,
        ofp10p.OFPActionEnqueue, ofp10p.OFPActionStripVlan,
    ]  # fmt: skip
    assert actions[0].vlan_vid == 7
    assert actions[1].tos == 40
    assert (actions[2].port, actions[2].queue_id) == (3, 4)
    assert actions[3].port == 0xFFFD
    out = encode_actions((Output(OFPP_CONTROLLER, 128),), OF10)[0]
    assert (out.port, out.max_len) == (0xFFFD, 128)


def test_of10_set_tp_port_needs_the_flows_protocol() -> None:
    (set_src,) = encode_actions((SetField("udp_src", 99),), OF10)
    assert isinstance(set_src, ofp10p.OFPActionSetTpSrc)
    udp_flow = exact(eth_type=0x0800, ip_proto=17)
    assert decode_actions([set_src], OF10, udp_flow) == (SetField("udp_src", 99),)
    assert decode_actions([set_src], OF10, TCP_FLOW) == (SetField("tcp_src", 99),)
    with pytest.raises(Unrepresentable):
        decode_actions([set_src], OF10)


@pytest.mark.parametrize(
    "match",
    [
        exact(eth_type=0x86DD, ipv6_src=1),
        exact(eth_type=0x0800, ip_ecn=1),
        exact(eth_type=0x0806, arp_sha=1),
        exact(eth_type=0x0800, ip_proto=132, sctp_src=1),
        exact(eth_type=0x86DD, ip_proto=58, icmpv6_type=1),
        exact(eth_type=0x0806, arp_op=0x100),
        exact(in_port=0xFFFF0000),
        # No ip_proto: OF1.0's tp_src would match UDP ports as well.
        exact(eth_type=0x0800, tcp_src=80),
        Match.from_fields({"eth_dst": (0x010000000000, 0x010000000000)}),
        Match.from_fields(
            {"eth_type": (0x0800, 0xFFFF), "ipv4_src": (0x0A000001, 0xFF0000FF)}
        ),
        Match.from_fields({"vlan_vid": (0x1000, 0x1000)}),
    ],
)
def test_of10_unrepresentable_matches(match: Match) -> None:
    with pytest.raises(Unrepresentable):
        encode_match(match, OF10)


def test_of10_missing_fields_are_unrepresentable_even_with_a_key() -> None:
    match = exact(eth_type=0x86DD, ipv6_dst=5)
    with pytest.raises(Unrepresentable):
        encode_match(match, OF10, key=match.value)


@pytest.mark.parametrize(
    "actions",
    [
        (PushVlan(),),
        (SetField("ipv6_src", 1),),
        (SetField("arp_op", 1),),
        (SetField("vlan_vid", 5),),  # no VLAN-present bit
        (SetQueue(1),),
        (SetQueue(1), PopVlan()),
        (SetQueue(1), SetQueue(2), Output(1)),
        (SetQueue(1), Output(OFPP_CONTROLLER, 128)),
        (Output(0xFFFF0000),),
    ],
)
def test_of10_unrepresentable_actions(actions: tuple[Action, ...]) -> None:
    with pytest.raises(Unrepresentable):
        encode_actions(actions, OF10)


def test_of10_decode_rejects_tp_port_of_an_unknown_protocol() -> None:
    ofmatch = ofp10p.OFPMatch(dl_type=0x0800, nw_proto=132, tp_src=1)
    with pytest.raises(Unrepresentable):
        decode_match(ofmatch, OF10)


def test_of10_decode_rejects_plain_output_after_enqueue() -> None:
    with pytest.raises(Unrepresentable):
        decode_actions([ofp10p.OFPActionEnqueue(1, 2), ofp10p.OFPActionOutput(3)], OF10)


# ---------------------------------------------------------------------------------------------
# OXM versions


@pytest.mark.parametrize("version", OXM_VERSIONS)
def test_oxm_decode_rejects_what_the_proxy_does_not_model(version: int) -> None:
    dp = ofproto_protocol.ProtocolDesc(version)
    ofp, parser = dp.ofproto, dp.ofproto_parser
    with pytest.raises(Unrepresentable):
        decode_match(parser.OFPMatch(metadata=5), version)
    with pytest.raises(Unrepresentable):
        decode_actions([parser.OFPInstructionGotoTable(1)], version)
    with pytest.raises(Unrepresentable):
        decode_actions(
            [parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [])], version
        )
    with pytest.raises(Unrepresentable):
        decode_actions([parser.OFPActionGroup(1)], version)
    apply = parser.OFPInstructionActions(
        ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionPopVlan()]
    )
    assert decode_actions([apply], version) == (PopVlan(),)


@pytest.mark.parametrize("version", OXM_VERSIONS)
def test_oxm_full_masks_are_sent_unmasked(version: int) -> None:
    ofmatch = encode_match(exact(vlan_vid=0x1000 | 3, eth_dst=0x0A0B0C0D0E0F), version)
    assert dict(ofmatch.items()) == {"vlan_vid": 0x1003, "eth_dst": "0a:0b:0c:0d:0e:0f"}


# ---------------------------------------------------------------------------------------------
# Delete, table miss


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("strict", [False, True])
def test_flow_delete(version: int, strict: bool) -> None:
    match = exact(in_port=2, eth_type=0x0800)
    msg = parse_flow_mod(
        version,
        flow_delete(version, match=match, strict=strict, priority=7, cookie=9, xid=3),
    )
    ofp = msg.datapath.ofproto
    assert msg.command == (ofp.OFPFC_DELETE_STRICT if strict else ofp.OFPFC_DELETE)
    assert decode_match(msg.match, version) == match
    assert (msg.priority, msg.cookie, msg.xid) == (7, 9, 3)
    if version == OF10:
        assert msg.out_port == ofp.OFPP_NONE
    else:
        assert (msg.table_id, msg.out_port, msg.out_group) == (
            ofp.OFPTT_ALL,
            ofp.OFPP_ANY,
            ofp.OFPG_ANY,
        )
        assert msg.instructions == []


@pytest.mark.parametrize("version", OXM_VERSIONS)
def test_flow_delete_by_cookie(version: int) -> None:
    msg = parse_flow_mod(
        version, flow_delete(version, cookie=0xAB00, cookie_mask=0xFF00)
    )
    assert (msg.cookie, msg.cookie_mask) == (0xAB00, 0xFF00)
    assert decode_match(msg.match, version) == Match()


def test_flow_delete_by_cookie_is_unrepresentable_on_of10() -> None:
    with pytest.raises(Unrepresentable):
        flow_delete(OF10, cookie=1, cookie_mask=0xFFFF)


@pytest.mark.parametrize("version", OXM_VERSIONS)
def test_table_miss_flow(version: int) -> None:
    msg = parse_flow_mod(version, table_miss_flow(version, xid=11))
    ofp = msg.datapath.ofproto
    assert (msg.priority, msg.table_id, msg.command, msg.xid) == (
        0,
        0,
        ofp.OFPFC_ADD,
        11,
    )
    assert decode_match(msg.match, version) == Match()
    assert decode_actions(msg.instructions, version) == (
        Output(OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER),
    )


def test_table_miss_flow_is_empty_on_of10() -> None:
    assert table_miss_flow(OF10) == b""


# ---------------------------------------------------------------------------------------------
# PACKET_OUT (os-ken decodes no PACKET_OUT of any version: read the fixed part by hand)


def test_packet_out_of10_layout() -> None:
    wire = packet_out(
        OF10, in_port=OFPP_LOCAL, actions=(Output(1),), data=b"frame", xid=5
    )
    version, msg_type, length, xid, buffer_id, in_port, actions_len = (
        struct.unpack_from("!BBHIIHH", wire)
    )
    assert (version, msg_type, length, xid) == (
        OF10,
        ofp10.OFPT_PACKET_OUT,
        len(wire),
        5,
    )
    assert (buffer_id, in_port, actions_len) == (NO_BUFFER, 0xFFFE, 8)
    action = ofp10p.OFPAction.parser(wire, 16)
    assert decode_actions([action], OF10) == (Output(1),)
    assert wire[16 + actions_len :] == b"frame"


@pytest.mark.parametrize("version", (OF13, OF14))
def test_packet_out_of13_layout(version: int) -> None:
    wire = packet_out(
        version, in_port=OFPP_CONTROLLER, actions=(Output(2),), data=b"x", xid=6
    )
    _, msg_type, length, xid, buffer_id, in_port, actions_len = struct.unpack_from(
        "!BBHIIIH6x", wire
    )
    assert (msg_type, length, xid, buffer_id) == (13, len(wire), 6, NO_BUFFER)
    assert (in_port, actions_len, wire[-1:]) == (OFPP_CONTROLLER, 16, b"x")


def test_packet_out_of15_puts_in_port_in_a_match() -> None:
    parser = ofproto_protocol.ProtocolDesc(OF15).ofproto_parser
    wire = packet_out(OF15, in_port=7, actions=(Output(2),), buffer_id=42)
    match = parser.OFPMatch.parser(wire, 16)
    assert dict(match.items()) == {"in_port": 7}
    assert struct.unpack_from("!I", wire, 8) == (42,)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_packet_out_refuses_both_buffer_and_data(version: int) -> None:
    with pytest.raises(ValueError):
        packet_out(version, in_port=1, actions=(), data=b"x", buffer_id=3)
    with pytest.raises(ValueError):
        PacketOutTemplate((), version).render(1, 1, buffer_id=3, data=b"x")


# ---------------------------------------------------------------------------------------------
# Templates: byte for byte what os-ken serializes


@pytest.mark.parametrize("version", ALL_VERSIONS)
@SLOW
@given(data=st.data())
def test_packet_out_template_equals_osken(version: int, data: st.DataObject) -> None:
    actions = data.draw(actions_for(version))
    template = PacketOutTemplate(actions, version)
    for _ in range(3):
        xid = data.draw(st.integers(0, 0xFFFFFFFF))
        in_port = data.draw(ports(version))
        if data.draw(st.booleans()):
            buffer_id, frame = NO_BUFFER, data.draw(st.binary(max_size=1600))
        else:
            buffer_id, frame = data.draw(st.integers(0, NO_BUFFER - 1)), b""
        expected = packet_out(
            version,
            in_port=in_port,
            actions=actions,
            data=frame,
            buffer_id=buffer_id,
            xid=xid,
        )
        assert template.render(xid, in_port, buffer_id, frame) == expected


@pytest.mark.parametrize("version", ALL_VERSIONS)
@SLOW
@given(data=st.data())
def test_flow_add_template_equals_osken(version: int, data: st.DataObject) -> None:
    match = data.draw(matches(version))
    actions = data.draw(actions_for(version))
    fixed: dict[str, Any] = {
        "priority": data.draw(st.integers(0, 0xFFFF)),
        "cookie": data.draw(st.integers(0, 2**64 - 1)),
        "idle_timeout": data.draw(st.integers(0, 0xFFFF)),
        "hard_timeout": data.draw(st.integers(0, 0xFFFF)),
        "send_flow_removed": data.draw(st.booleans()),
    }
    template = FlowAddTemplate(version, match, actions, **fixed)
    for _ in range(3):
        xid = data.draw(st.integers(0, 0xFFFFFFFF))
        buffer_id = data.draw(st.sampled_from([NO_BUFFER, 0, 0x12345678]))
        expected = flow_add(
            version, match, actions, **fixed, buffer_id=buffer_id, xid=xid
        )
        assert template.render(xid, buffer_id) == expected
        assert (
            parse_flow_mod(version, template.render(xid, buffer_id)).buffer_id
            == buffer_id
        )


def test_flow_add_template_narrows_like_flow_add() -> None:
    match = Match.from_fields({"eth_dst": (0x010000000000, 0x010000000000)})
    key = pack({"eth_dst": 0x0B0000000001})
    template = FlowAddTemplate(OF10, match, (Output(1),), priority=5, cookie=1, key=key)
    assert template.render(9) == flow_add(
        OF10, match, (Output(1),), priority=5, cookie=1, key=key, xid=9
    )


def test_unsupported_version() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        encode_match(Match(), 0x02)
    assert flows.SUPPORTED_VERSIONS == {OF10, OF13, OF14, OF15}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_packet_out_without_actions_keeps_the_data(version: int) -> None:
    # os-ken 4.2.2 alone packs the fixed fields over the data when there are no actions.
    frame = bytes(range(40))
    wire = packet_out(version, in_port=3, actions=(), data=frame, xid=2)
    assert struct.unpack_from("!H", wire, 2) == (len(wire),)
    assert wire.endswith(frame)
    assert len(wire) == len(PacketOutTemplate((), version).render(2, 3)) + len(frame)
    assert PacketOutTemplate((), version).render(2, 3, data=frame) == wire
