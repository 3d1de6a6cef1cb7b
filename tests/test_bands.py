"""Priority bands and table 0's floor (bands.py), and the relay applying them (northbound.py)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.bands import (
    MAX_PRIORITY,
    TOP_CONTROLLER_PRIORITY,
    WHOLE_RANGE,
    Band,
    TableFloor,
    assign_bands,
    remap_flow_mod,
    unmap_flow_removed,
    view_flow_mod,
)
from ovs_sriov_proxy.config import ConfigError, ControllerConfig, parse_config
from ovs_sriov_proxy.northbound import Northbound, untag_flow_stats
from ovs_sriov_proxy.openflow import flows
from ovs_sriov_proxy.openflow.framing import OFP13, OFPT_FLOW_MOD, Framer, Message
from ovs_sriov_proxy.proxy import COVER_TAG, Bridge, Proxy
from ovs_sriov_proxy.rules.flowparse import parse_flow
from ovs_sriov_proxy.rules.store import PROXY_COOKIE_TAG, RuleStore
from ovs_sriov_proxy.sandbox import udp_frame
from ovs_sriov_proxy.sessions.switch import FlowRemoved, SessionTiming, SwitchSession
from ovs_sriov_proxy.targets import parse_active

from .test_metrics import FakeLink
from .test_packet import packet_in_13
from .test_switch_session import handshake_13

DP13 = ofproto_protocol.ProtocolDesc(0x04)
DP10 = ofproto_protocol.ProtocolDesc(0x01)


def message(msg) -> Message:
    msg.serialize()
    return Framer().receive_data(bytes(msg.buf))[0]


def add13(priority: int, *, table_id: int = 0, match=None, command: int = of13.OFPFC_ADD,
          out_port: int = of13.OFPP_ANY) -> Message:
    actions = [p13.OFPActionOutput(2)]
    return message(p13.OFPFlowMod(DP13, priority=priority, table_id=table_id, command=command,
                                  out_port=out_port, out_group=of13.OFPG_ANY,
                                  match=match if match is not None else p13.OFPMatch(),
                                  instructions=[p13.OFPInstructionActions(
                                      of13.OFPIT_APPLY_ACTIONS, actions)]))


def decoded13(raw: bytes):
    return p13.OFPFlowMod.parser(DP13, 4, OFPT_FLOW_MOD, len(raw), 0, raw)


# ---- bands ----


def test_one_controller_owns_the_whole_range_and_nothing_is_remapped() -> None:
    assert assign_bands(["faucet"]) == {"faucet": WHOLE_RANGE}
    raw = add13(4096).raw
    assert remap_flow_mod(OFP13, raw, WHOLE_RANGE) == (raw, False)


def test_priority_65535_is_kept_for_the_policies_even_for_a_controller_alone() -> None:
    for band in (*assign_bands(["faucet"]).values(), *assign_bands(["a", "b"], "off").values(),
                 assign_bands(["a", "b"])["a"]):
        raw, clamped = remap_flow_mod(OFP13, add13(MAX_PRIORITY).raw, band)
        assert clamped and decoded13(raw).priority <= TOP_CONTROLLER_PRIORITY == 65534


def test_bands_are_stacked_by_primacy_and_cover_the_range() -> None:
    bands = assign_bands(["best", "middle", "last"])
    assert bands["last"] == Band(0, 21844)
    assert bands["middle"] == Band(21845, 43689)
    assert bands["best"] == Band(43690, 65534)  # the top band takes the remainder, less 65535
    assert assign_bands(["a", "b"]) == {"a": Band(32768, 65534), "b": Band(0, 32767)}
    assert assign_bands(["a", "b"], "off") == {"a": WHOLE_RANGE, "b": WHOLE_RANGE}
    with pytest.raises(ValueError):
        assign_bands(["a"], "sometimes")


@given(st.lists(st.integers(0, MAX_PRIORITY), min_size=2, max_size=2))
def test_every_flow_of_a_higher_band_ranks_above_every_flow_of_a_lower_one(ps) -> None:
    bands = assign_bands(["high", "low"])
    high, _ = bands["high"].to_bridge(ps[0])
    low, _ = bands["low"].to_bridge(ps[1])
    assert high > low


@given(st.integers(0, MAX_PRIORITY), st.integers(0, MAX_PRIORITY))
def test_a_controllers_own_order_is_kept_and_shown_back_where_it_fits(a, b) -> None:
    band = Band(32768, MAX_PRIORITY)
    (ma, clamped_a), (mb, _) = band.to_bridge(a), band.to_bridge(b)
    assert (a < b) <= (ma <= mb)  # never inverted; ties only where clamped
    assert band.low <= ma <= band.high
    if not clamped_a:
        assert band.from_bridge(ma) == a


def test_priorities_beyond_the_band_are_clamped_and_counted() -> None:
    band = Band(0, 32767)
    assert band.to_bridge(32767) == (32767, False)
    assert band.to_bridge(0x8000) == (32767, True)  # ovs-testcontroller's default priority
    raw, clamped = remap_flow_mod(OFP13, add13(0x8000).raw, band)
    assert clamped and decoded13(raw).priority == 32767


def test_flow_mods_are_moved_into_the_band_on_10_and_13() -> None:
    band = Band(32768, MAX_PRIORITY)
    raw, clamped = remap_flow_mod(OFP13, add13(100, match=p13.OFPMatch(in_port=1)).raw, band)
    parsed = decoded13(raw)
    assert not clamped and parsed.priority == 32868 and parsed.match["in_port"] == 1
    mod10 = message(p10.OFPFlowMod(DP10, match=p10.OFPMatch(in_port=1), cookie=7,
                                   command=of10.OFPFC_ADD, priority=100,
                                   actions=[p10.OFPActionOutput(2)]))
    raw10, _ = remap_flow_mod(0x01, mod10.raw, band)
    parsed10 = p10.OFPFlowMod.parser(DP10, 1, OFPT_FLOW_MOD, len(raw10), 0, raw10)
    assert parsed10.priority == 32868 and parsed10.cookie == 7 and parsed10.match["in_port"] == 1


def flow_removed13(cookie: int, priority: int) -> bytes:
    match = struct.pack("!HH4x", 1, 4)
    body = struct.pack("!QHBBIIHHQQ", cookie, priority, 0, 0, 1, 0, 0, 0, 0, 0) + match
    return struct.pack("!BBHI", 4, 11, 8 + len(body), 0) + body


def test_flow_removed_and_flow_stats_show_the_controller_its_own_priorities() -> None:
    band = Band(32768, MAX_PRIORITY)
    raw = unmap_flow_removed(OFP13, flow_removed13(0xABC, 32868), band)
    parsed = p13.OFPFlowRemoved.parser(DP13, 4, 11, len(raw), 0, raw)
    assert parsed.priority == 100 and parsed.cookie == 0xABC
    tag = 0x4301
    empty_match = struct.pack("!HH4x", 1, 4)

    def entry(cookie: int, priority: int) -> bytes:  # ofp_flow_stats (1.3), no instructions
        return struct.pack("!HBxIIHHHH4xQQQ", 48 + len(empty_match), 0, 1, 0, priority, 0, 0,
                           0, cookie, 0, 0) + empty_match

    body = entry(tag << 48 | 5, 32868) + entry(0x4300 << 48 | 6, 200)
    reply = Framer().receive_data(struct.pack("!BBHIHH4x", 4, 19, 16 + len(body), 9, 1, 0)
                                  + body)[0]
    out = untag_flow_stats(reply, tag, band)
    stats = p13.OFPMultipartReply.parser(DP13, 4, 19, len(out), 9, out).body
    assert [(s.cookie, s.priority) for s in stats] == [(5, 100), (0x4300 << 48 | 6, 200)]


# ---- table 0's floor ----


def test_a_catch_all_is_an_add_of_an_empty_match_at_the_bottom_of_the_band() -> None:
    assert view_flow_mod(OFP13, add13(0).raw).adds_catch_all(0)
    assert not view_flow_mod(OFP13, add13(0, table_id=1).raw).adds_catch_all(0)
    assert not view_flow_mod(OFP13, add13(0, match=p13.OFPMatch(in_port=1)).raw).adds_catch_all(0)
    assert view_flow_mod(OFP13, add13(32768).raw).adds_catch_all(32768)
    delete_all = view_flow_mod(OFP13, add13(0, table_id=of13.OFPTT_ALL,
                                            command=of13.OFPFC_DELETE).raw)
    assert delete_all.removes_catch_all(0)
    filtered = view_flow_mod(OFP13, add13(0, table_id=of13.OFPTT_ALL,
                                          command=of13.OFPFC_DELETE, out_port=3).raw)
    assert not filtered.removes_catch_all(0)  # may leave the catch-all: do not assume it gone
    assert not view_flow_mod(OFP13, add13(0, match=p13.OFPMatch(in_port=1),
                                          command=of13.OFPFC_DELETE).raw).removes_catch_all(0)


def test_the_proxy_table_miss_comes_back_only_when_the_catch_all_that_replaced_it_goes() -> None:
    floor = TableFloor()
    low, high = Band(0, 32767), Band(32768, MAX_PRIORITY)
    delete_all = view_flow_mod(OFP13, add13(0, table_id=of13.OFPTT_ALL,
                                            command=of13.OFPFC_DELETE).raw)
    assert not floor.relayed("low", delete_all, low)  # it owned nothing yet
    assert not floor.relayed("high", view_flow_mod(OFP13, add13(32768).raw), high)
    assert floor.owned and floor.proxy_table_miss_present()  # 32768 sits above the proxy's 0
    assert not floor.relayed("low", view_flow_mod(OFP13, add13(0).raw), low)
    assert not floor.proxy_table_miss_present()  # same match, same priority: replaced
    assert not floor.relayed("high", delete_all, high)  # the proxy's is still gone
    assert floor.relayed("low", delete_all, low)
    assert not floor.owned


# ---- the relay ----


def relay_setup(names: list[str], priorities: list[int], mode: str = "auto",
                rules: tuple[str, ...] = ()) -> tuple[Northbound, Bridge, SwitchSession]:
    store = RuleStore()
    store.replace_origin("config", [parse_flow(r) for r in rules])
    proxy = Proxy(store)
    controllers = [ControllerConfig(n, parse_active(f"tcp:127.0.0.1:{6653 + i}"), priority=p)
                   for i, (n, p) in enumerate(zip(names, priorities, strict=True))]
    northbound = Northbound(proxy, controllers, miss_timeout=0.2, timing=SessionTiming(),
                            link_factory=FakeLink, priority_bands=mode)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    session.data_to_send()
    (bridge,) = proxy.bridges.values()
    return northbound, bridge, session


def sent_mods(session: SwitchSession) -> list:
    return [decoded13(m.raw) for m in Framer().receive_data(session.data_to_send())]


def test_overlapping_proactive_flows_of_two_controllers_rank_by_primacy() -> None:
    # "low" is listed first but "high" has the higher priority: high's band is on top.
    northbound, bridge, session = relay_setup(["low", "high"], [10, 50])
    northbound._relay_to_bridge(bridge, "low", add13(40000, match=p13.OFPMatch(in_port=1)))
    northbound._relay_to_bridge(bridge, "high", add13(100, match=p13.OFPMatch(in_port=1)))
    low, high = sent_mods(session)
    assert high.priority > low.priority
    assert (low.priority, high.priority) == (32767, 32868)
    assert low.cookie >> 48 == 0x4300 and high.cookie >> 48 == 0x4301
    assert bridge.counters["priority_clamped:low"] == 1


def test_bands_off_leaves_priorities_as_the_controllers_sent_them() -> None:
    northbound, bridge, session = relay_setup(["low", "high"], [10, 50], "off")
    northbound._relay_to_bridge(bridge, "low", add13(40000))
    assert [m.priority for m in sent_mods(session)] == [40000]


def test_a_controller_deleting_its_catch_all_brings_the_proxy_table_miss_back() -> None:
    northbound, bridge, session = relay_setup(["faucet"], [0])
    northbound._relay_to_bridge(bridge, "faucet", add13(0))  # a catch-all that is not to CONTROLLER
    assert northbound.floors[bridge.session].owners == {"faucet": 0}
    session.data_to_send()
    northbound._relay_to_bridge(bridge, "faucet",
                                add13(0, table_id=of13.OFPTT_ALL, command=of13.OFPFC_DELETE))
    _covers_gone, delete, table_miss = sent_mods(session)
    assert delete.command == of13.OFPFC_DELETE and delete.cookie_mask >> 48 == 0xFFFF
    assert table_miss.priority == 0 and table_miss.cookie == 0
    assert table_miss.instructions[0].actions[0].port == of13.OFPP_CONTROLLER
    assert bridge.counters["table_miss_reinstalled"] == 1


# ---- covers: the proxy's rules while a controller owns table 0 ----

DNS = udp_frame("00:00:00:00:00:0a", "00:00:00:00:00:0b", "10.0.0.1", "10.0.0.2", 1000, 53, b"q")


def cover_packet_in(cookie: int, frame: bytes = DNS) -> bytes:
    raw = bytearray(packet_in_13(1, frame, reason=1))  # OFPR_ACTION, as a cover's output sends
    struct.pack_into("!Q", raw, 16, cookie)
    return bytes(raw)


def test_while_a_controller_owns_table_0_the_proxys_rules_are_covered_and_answered() -> None:
    northbound, bridge, session = relay_setup(
        ["faucet"], [0], rules=("priority=5000,udp,tp_dst=53 actions=output:3",))
    proxy = northbound.proxy
    ((rule_id, rule),) = bridge.classifier.rules()
    northbound._relay_to_bridge(bridge, "faucet", add13(0))  # Faucet's catch-all in table 0
    stale, cover, catch_all = sent_mods(session)
    assert stale.command == of13.OFPFC_DELETE and stale.cookie == COVER_TAG  # earlier covers
    assert cover.cookie == COVER_TAG | rule_id
    assert cover.priority == 5000 and cover.match["udp_dst"] == 53
    assert cover.instructions[0].actions[0].port == of13.OFPP_CONTROLLER
    assert not cover.flags & of13.OFPFF_SEND_FLOW_REM
    assert catch_all.cookie >> 48 == 0x4300 and catch_all.priority == 0
    assert bridge.covered

    # A packet the cover sends up is answered from the rule: its flow takes the cover's place.
    proxy.handle_events(session, session.receive_data(cover_packet_in(cover.cookie), 1))
    flow, packet_out = Framer().receive_data(session.data_to_send())
    installed = decoded13(flow.raw)
    assert (installed.cookie, installed.priority) == (PROXY_COOKIE_TAG | rule_id, 5000)
    assert packet_out.type == 13
    # When the rule's flow expires, the cover comes back.
    removed = p13.OFPFlowRemoved(DP13, cookie=installed.cookie, priority=5000, reason=0,
                                 table_id=0, match=flows.encode_match(rule.match, OFP13))
    proxy.handle_events(session, [FlowRemoved(removed)])
    (again,) = sent_mods(session)
    assert again.cookie == cover.cookie and again.priority == 5000

    # A packet-in of a controller's own flow is not the proxy's to answer.
    proxy.handle_events(session, session.receive_data(cover_packet_in(0x4300 << 48 | 1), 1))
    assert session.data_to_send() == b""

    # The controller deletes everything of its own: the covers go, the table-miss comes back.
    northbound._relay_to_bridge(bridge, "faucet",
                                add13(0, table_id=of13.OFPTT_ALL, command=of13.OFPFC_DELETE))
    covers_gone, delete_all, table_miss = sent_mods(session)
    assert covers_gone.command == of13.OFPFC_DELETE
    assert (covers_gone.cookie, covers_gone.cookie_mask) == (COVER_TAG, 0xFFFF << 48)
    assert delete_all.cookie_mask >> 48 == 0xFFFF and table_miss.priority == 0
    assert not bridge.covered


def test_rules_added_or_removed_while_covered_get_or_lose_their_cover() -> None:
    northbound, bridge, session = relay_setup(["faucet"], [0])
    northbound._relay_to_bridge(bridge, "faucet", add13(0))
    session.data_to_send()
    proxy = northbound.proxy
    change = proxy.store.replace_origin("config", [parse_flow("priority=7,udp actions=output:2")])
    proxy.apply_rule_change(change)
    ((rule_id, _),) = change.added
    (cover,) = sent_mods(session)
    assert cover.cookie == COVER_TAG | rule_id and cover.priority == 7
    proxy.apply_rule_change(proxy.store.replace_origin("config", []))
    deletes = sent_mods(session)
    assert COVER_TAG | rule_id in [d.cookie for d in deletes]


# ---- configuration ----


def test_priority_bands_is_a_proxy_key_auto_by_default() -> None:
    assert parse_config("[proxy]\n").proxy.priority_bands == "auto"
    assert parse_config('[proxy]\npriority_bands = "off"\n').proxy.priority_bands == "off"
    with pytest.raises(ConfigError) as caught:
        parse_config('[proxy]\npriority_bands = "sometimes"\n', "proxy.toml")
    assert str(caught.value) == ("proxy.toml:2: proxy.priority_bands: must be one of auto, off, "
                                 "got 'sometimes'")


def learn_action(parser, priority: int = 7, cookie: int = 0xAB):
    specs = [parser.NXFlowSpecMatch(src=("in_port", 0), dst=("in_port", 0), n_bits=16)
             ] if parser is p13 else []  # (os-ken's 1.0 parser names no fields for specs)
    return parser.NXActionLearn(table_id=1, specs=specs, idle_timeout=0, hard_timeout=300,
                                priority=priority, cookie=cookie, flags=0, fin_idle_timeout=0,
                                fin_hard_timeout=0)


def test_flows_a_learn_action_installs_get_the_controllers_tag_and_band() -> None:
    from ovs_sriov_proxy.bands import scope_learns

    tag, mask, band = 0x4301 << 48, 0xFFFF << 48, Band(32768, 65535)
    dp13 = ofproto_protocol.ProtocolDesc(0x04)
    flow = p13.OFPFlowMod(dp13, priority=5, match=p13.OFPMatch(in_port=1), instructions=[
        p13.OFPInstructionActions(of13.OFPIT_APPLY_ACTIONS,
                                  [p13.OFPActionOutput(2), learn_action(p13)])])
    flow.serialize()
    scoped = scope_learns(bytes(flow.buf), tag, mask, band)
    parsed = p13.OFPFlowMod.parser(dp13, 4, 14, len(scoped), 0, scoped)
    learn = parsed.instructions[0].actions[1]
    assert (learn.cookie, learn.priority, learn.hard_timeout) == (tag | 0xAB, 32768 + 7, 300)
    assert parsed.priority == 5  # the FLOW_MOD's own priority is remap_flow_mod's business

    dp10 = ofproto_protocol.ProtocolDesc(0x01)
    flow10 = p10.OFPFlowMod(dp10, match=p10.OFPMatch(in_port=1), cookie=0, command=0,
                            priority=5, actions=[learn_action(p10, cookie=tag | 0xCD)])
    flow10.serialize()
    scoped10 = scope_learns(bytes(flow10.buf), 0x4300 << 48, mask, WHOLE_RANGE)
    learn10 = p10.OFPFlowMod.parser(dp10, 1, 14, len(scoped10), 0, scoped10).actions[0]
    assert (learn10.cookie, learn10.priority) == (0x4300 << 48 | 0xCD, 7)  # its own tag wins

    # A bare action list (a PACKET_OUT answering a miss) and a message without Nicira actions.
    raw = bytes(flow.buf)
    bare = raw[raw.index(b"\x00\x00\x23\x20") - 4:]  # the learn action alone, the last one
    assert struct.unpack_from("!HH", bare) == (0xFFFF, len(bare))
    assert struct.unpack_from("!Q", scope_learns(bare, tag, mask, band, actions_only=True),
                              16)[0] == tag | 0xAB
    plain = message(p13.OFPFlowMod(dp13, priority=5, match=p13.OFPMatch(in_port=1),
                                   instructions=[])).raw
    assert scope_learns(plain, tag, mask, band) is plain
