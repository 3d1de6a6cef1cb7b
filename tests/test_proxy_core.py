"""The proxy core over a real SwitchSession, with no sockets: misses in, OpenFlow bytes out."""

from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_3_parser

from ovs_sriov_proxy.openflow import flows
from ovs_sriov_proxy.openflow.framing import OFP13, OFPT_FLOW_MOD, OFPT_PACKET_OUT, Framer
from ovs_sriov_proxy.openflow.packet import packet_key
from ovs_sriov_proxy.proxy import Proxy
from ovs_sriov_proxy.rules.flowparse import parse_flow
from ovs_sriov_proxy.rules.store import PROXY_COOKIE_TAG, RuleStore
from ovs_sriov_proxy.sessions.switch import FlowRemoved, SessionTiming, SwitchSession

from .test_packet import UDP_FRAME, packet_in_13
from .test_switch_session import handshake_13

DP = ofproto_protocol.ProtocolDesc(OFP13)


def connected(rules: list[str], fallback: str = "drop") -> tuple[Proxy, SwitchSession]:
    store = RuleStore()
    store.replace_origin("config", [parse_flow(r) for r in rules])
    proxy = Proxy(store, miss_fallback=fallback)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    session.data_to_send()  # the table-miss flow and the reconcile dump request
    return proxy, session


def sent(session: SwitchSession) -> list:
    return Framer().receive_data(session.data_to_send())


def flow_mod(message) -> ofproto_v1_3_parser.OFPFlowMod:
    return ofproto_v1_3_parser.OFPFlowMod.parser(DP, OFP13, OFPT_FLOW_MOD, len(message.raw),
                                                message.xid, message.raw)


def miss(proxy: Proxy, session: SwitchSession, frame: bytes = UDP_FRAME, in_port: int = 1,
         buffer_id: int = 0xFFFFFFFF) -> list:
    events = session.receive_data(packet_in_13(in_port, frame, buffer_id=buffer_id), 1)
    proxy.handle_events(session, events)
    return sent(session)


def test_connect_installs_the_table_miss_flow_and_dumps_the_proxy_flows() -> None:
    store = RuleStore()
    proxy = Proxy(store)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    dump, table_miss = sent(session)
    assert dump.type == 18  # OFPT_MULTIPART_REQUEST
    mp_type, = struct.unpack_from("!H", dump.raw, 8)
    cookie, cookie_mask = struct.unpack_from("!QQ", dump.raw, 32)
    assert mp_type == 1 and (cookie, cookie_mask) == (0, 0)  # every flow, foreign ones too
    table_miss = flow_mod(table_miss)
    assert table_miss.priority == 0 and len(table_miss.match.fields) == 0
    assert table_miss.instructions[0].actions[0].port == ofproto_v1_3.OFPP_CONTROLLER


def test_hit_installs_the_rule_and_releases_the_packet() -> None:
    proxy, session = connected(["priority=100,in_port=1,udp,tp_dst=5060 actions=output:2"])
    out = miss(proxy, session)
    assert [m.type for m in out] == [OFPT_FLOW_MOD, OFPT_PACKET_OUT]
    mod = flow_mod(out[0])
    assert mod.priority == 100 and mod.cookie >> 48 == 0x5052
    assert dict(mod.match.items()) == {"in_port": 1, "eth_type": 0x0800, "ip_proto": 17,
                                       "udp_dst": 5060}
    assert mod.flags & ofproto_v1_3.OFPFF_SEND_FLOW_REM
    assert out[1].raw.endswith(UDP_FRAME)
    bridge = next(iter(proxy.bridges.values()))
    assert bridge.all_counters()["hits"] == 1


def test_buffered_hit_is_released_by_the_flow_mod_alone() -> None:
    proxy, session = connected(["priority=100,udp actions=output:2"])
    out = miss(proxy, session, buffer_id=42)
    assert [m.type for m in out] == [OFPT_FLOW_MOD]
    assert flow_mod(out[0]).buffer_id == 42


def test_hit_under_an_overlapping_higher_rule_installs_a_narrowed_flow() -> None:
    proxy, session = connected(["priority=10,udp actions=output:2",
                                "priority=20,udp,nw_dst=10.0.0.9 actions=output:3"])
    out = miss(proxy, session)  # UDP_FRAME goes to 10.0.0.2
    mod = flow_mod(out[0])
    assert mod.priority == 10
    # 10.0.0.2 and 10.0.0.9 first differ at bit 3: 10.0.0.0/29 excludes .9 and keeps .2.
    assert dict(mod.match.items())["ipv4_dst"] == ("10.0.0.0", "255.255.255.248")


def test_miss_without_rule_drop_sends_nothing_and_flood_floods() -> None:
    proxy, session = connected(["priority=100,in_port=9 actions=output:2"])
    assert miss(proxy, session) == []
    proxy, session = connected(["priority=100,in_port=9 actions=output:2"], fallback="flood")
    out = miss(proxy, session)
    assert [m.type for m in out] == [OFPT_PACKET_OUT]
    # actions: one OUTPUT to FLOOD (0xfffffffb) right after the fixed PACKET_OUT header.
    assert struct.unpack_from("!HHI", out[0].raw, 24)[2] == ofproto_v1_3.OFPP_FLOOD
    bridge = next(iter(proxy.bridges.values()))
    assert bridge.counters["fallback_flood"] == 1


def test_flow_removed_forgets_the_flow_and_rule_removal_deletes_by_cookie() -> None:
    proxy, session = connected(["priority=100,udp actions=output:2"])
    miss(proxy, session)
    bridge = next(iter(proxy.bridges.values()))
    (rule_id,) = bridge.installed
    rule = proxy.store.get(rule_id)
    assert bridge.installed[rule_id] == {(100, rule.match)}
    removed = ofproto_v1_3_parser.OFPFlowRemoved(
        DP, cookie=PROXY_COOKIE_TAG | rule_id, priority=100, reason=0, table_id=0,
        match=flows.encode_match(rule.match, OFP13))
    proxy.handle_events(session, [FlowRemoved(removed)])
    assert rule_id not in bridge.installed
    miss(proxy, session)
    assert bridge.installed[rule_id] == {(100, rule.match)}, "a re-installed flow is recorded again"
    change = proxy.store.replace_origin("config", [])
    proxy.apply_rule_change(change)
    (delete,) = [flow_mod(m) for m in sent(session)]
    assert delete.command == ofproto_v1_3.OFPFC_DELETE
    assert (delete.cookie, delete.cookie_mask) == (PROXY_COOKIE_TAG | rule_id, 2**64 - 1)
    assert miss(proxy, session) == []  # the rule is gone: fallback drop


def test_new_higher_rule_deletes_flows_it_would_be_shadowed_by() -> None:
    proxy, session = connected(["priority=10,udp actions=output:2"])
    miss(proxy, session)
    change = proxy.store.replace_origin("config", [
        parse_flow("priority=10,udp actions=output:2"),
        parse_flow("priority=50,udp,tp_dst=5060 actions=output:3"),
    ])
    assert len(change.added) == 1 and not change.removed
    proxy.apply_rule_change(change)
    (delete,) = [flow_mod(m) for m in sent(session)]
    assert delete.command == ofproto_v1_3.OFPFC_DELETE_STRICT and delete.priority == 10
    out = miss(proxy, session)
    assert [a.port for a in flow_mod(out[0]).instructions[0].actions] == [3]


def test_packet_key_of_the_test_frame_is_what_the_rules_expect() -> None:
    # Guards the fixtures above: UDP_FRAME is UDP to port 5060 at 10.0.0.2.
    rule = parse_flow("udp,nw_dst=10.0.0.2,tp_dst=5060 actions=drop")
    assert rule.match.matches(packet_key(1, UDP_FRAME))


def test_a_newer_session_of_the_same_datapath_closes_the_older_one() -> None:
    proxy, old = connected(["priority=10,udp actions=output:2"])
    new = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(new, handshake_13(new))  # same datapath id as `old`
    assert old.close_reason is not None and "replaced" in old.close_reason
    assert old.on_packet_in is None and list(proxy.bridges) == [new]


def test_reloaded_fallback_takes_effect() -> None:
    proxy, session = connected(["priority=100,in_port=9 actions=output:2"])
    assert miss(proxy, session) == []
    proxy.miss_fallback = "flood"
    (out,) = miss(proxy, session)
    assert out.type == OFPT_PACKET_OUT
    assert struct.unpack_from("!HHI", out.raw, 24)[2] == ofproto_v1_3.OFPP_FLOOD


def test_narrowed_flows_get_an_idle_timeout_of_their_own() -> None:
    from ovs_sriov_proxy.proxy import NARROWED_IDLE_TIMEOUT

    proxy, session = connected(["priority=10,udp actions=output:2",
                                "priority=20,udp,nw_dst=10.0.0.9 actions=output:3"])
    mod = flow_mod(miss(proxy, session)[0])
    assert mod.idle_timeout == NARROWED_IDLE_TIMEOUT and mod.hard_timeout == 0


def test_strict_deletes_are_scoped_to_the_rules_cookie() -> None:
    proxy, session = connected(["priority=10,udp actions=output:2"])
    miss(proxy, session)
    (rule_id,) = next(iter(proxy.bridges.values())).installed
    change = proxy.store.replace_origin("config", [
        parse_flow("priority=10,udp actions=output:2"),
        parse_flow("priority=50,udp,tp_dst=5060 actions=output:3"),
    ])
    proxy.apply_rule_change(change)
    (delete,) = [flow_mod(m) for m in sent(session)]
    assert delete.command == ofproto_v1_3.OFPFC_DELETE_STRICT
    assert (delete.cookie, delete.cookie_mask) == (PROXY_COOKIE_TAG | rule_id, 2**64 - 1)


def connect_10(store: RuleStore) -> tuple[Proxy, SwitchSession]:
    """A proxy over `store` whose OF1.0 bridge has just connected (nothing read of its output)."""
    from ovs_sriov_proxy.openflow.framing import OFP10, OFPT_HELLO, simple_message

    proxy = Proxy(store)
    session = SwitchSession(frozenset({OFP10}), SessionTiming(), now=0)
    session.data_to_send()
    session.receive_data(simple_message(OFP10, OFPT_HELLO, 1), 0)
    features_xid = sent(session)[0].xid
    body = struct.pack("!QIB3xII", 7, 256, 1, 0, 0)
    proxy.handle_events(session, session.receive_data(simple_message(OFP10, 6, features_xid, body), 0))
    return proxy, session


def connected_10(rules: list[str]) -> tuple[Proxy, SwitchSession, int]:
    """A proxy with an OF1.0 bridge; returns the xid of the proxy's stale-flow dump request."""
    store = RuleStore()
    store.replace_origin("config", [parse_flow(r) for r in rules])
    proxy, session = connect_10(store)
    (dump,) = sent(session)
    assert dump.type == 16  # OFPT_STATS_REQUEST (flows)
    return proxy, session, dump.xid


def test_of10_stale_dump_deletes_only_tagged_flows() -> None:
    from os_ken.ofproto import ofproto_v1_0
    from os_ken.ofproto import ofproto_v1_0_parser as p10

    from ovs_sriov_proxy.openflow.framing import OFP10

    proxy, session, xid = connected_10([])
    dp = ofproto_protocol.ProtocolDesc(OFP10)
    match = p10.OFPMatch(wildcards=ofproto_v1_0.OFPFW_ALL & ~ofproto_v1_0.OFPFW_IN_PORT, in_port=2)

    def stat(cookie: int) -> bytes:
        return struct.pack("!HBx40sIIHHHxxxxxxQQQ", 88, 0, match_bytes, 0, 0, 7, 0, 0, cookie, 0, 0)

    buf = bytearray()
    match.serialize(buf, 0)
    match_bytes = bytes(buf)
    body = struct.pack("!HH", 1, 0) + stat(PROXY_COOKIE_TAG | 99) + stat(0x1234)
    reply = struct.pack("!BBHI", OFP10, 17, 8 + len(body), xid) + body
    proxy.handle_events(session, session.receive_data(reply, 1))
    (delete,) = sent(session)
    mod = p10.OFPFlowMod.parser(dp, OFP10, OFPT_FLOW_MOD, len(delete.raw), delete.xid, delete.raw)
    assert mod.command == ofproto_v1_0.OFPFC_DELETE_STRICT and mod.priority == 7
    assert mod.match.in_port == 2


def test_of10_stale_dump_answered_with_another_stats_type_closes_the_session() -> None:
    from ovs_sriov_proxy.openflow.framing import OFP10

    proxy, session, xid = connected_10([])
    body = struct.pack("!HH", 0, 0) + b"\0" * 1056  # OFPST_DESC
    proxy.handle_events(session, session.receive_data(
        struct.pack("!BBHI", OFP10, 17, 8 + len(body), xid) + body, 1))
    assert session.close_reason is not None and "flow dump" in session.close_reason
    assert proxy.bridges == {}


def flow_stats_reply_13(xid: int, stats: list[tuple[int, int, str, list]], more: bool = False) -> bytes:
    """An OF1.3 flow-stats multipart reply (os-ken cannot encode switch->controller messages):
    each stat is (cookie, priority, match as ovs-ofctl text, os-ken actions)."""
    parser = ofproto_v1_3_parser
    body = b""
    for cookie, priority, match_text, actions in stats:
        match = flows.encode_match(parse_flow(f"{match_text} actions=drop").match, OFP13)
        match_buf = bytearray()
        match.serialize(match_buf, 0)
        instructions = bytearray()
        if actions:
            parser.OFPInstructionActions(ofproto_v1_3.OFPIT_APPLY_ACTIONS, actions).serialize(
                instructions, 0)
        length = 48 + len(match_buf) + len(instructions)
        body += struct.pack("!HBxIIHHHH4xQQQ", length, 0, 0, 0, priority, 0, 0, 0, cookie, 0, 0)
        body += bytes(match_buf) + bytes(instructions)
    payload = struct.pack("!HH4x", 1, 1 if more else 0) + body
    return struct.pack("!BBHI", OFP13, 19, 8 + len(payload), xid) + payload


def test_reconcile_keeps_agreeing_flows_deletes_the_rest_and_reinstalls_learned_rules() -> None:
    store = RuleStore()
    store.replace_origin("config", [parse_flow("priority=10,in_port=1,udp actions=output:2")])
    learned = store.add(parse_flow("priority=20,in_port=3 actions=output:4", origin="ctl-a"),
                        expires_at=None)
    proxy = Proxy(store)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    dump, _ = sent(session)
    out2 = ofproto_v1_3_parser.OFPActionOutput(2)
    out9 = ofproto_v1_3_parser.OFPActionOutput(9)
    reply = flow_stats_reply_13(dump.xid, [
        (PROXY_COOKIE_TAG | 1, 10, "in_port=1,udp", [out2]),            # agrees: kept
        (PROXY_COOKIE_TAG | 1, 10, "in_port=1,udp,tp_dst=53", [out2]),  # narrowed: kept
        (PROXY_COOKIE_TAG | 1, 10, "in_port=1,udp,tp_dst=80", [out9]),  # other actions
        (PROXY_COOKIE_TAG | 1, 11, "in_port=1,udp", [out2]),            # other priority
        (PROXY_COOKIE_TAG | 1, 10, "udp", [out2]),                      # wider than the rule
        (PROXY_COOKIE_TAG | 77, 10, "in_port=1,udp", [out2]),           # no such rule
    ])
    proxy.handle_events(session, session.receive_data(reply, 1))
    mods = [flow_mod(m) for m in sent(session)]
    deletes = [m for m in mods if m.command == ofproto_v1_3.OFPFC_DELETE_STRICT]
    adds = [m for m in mods if m.command == ofproto_v1_3.OFPFC_ADD]
    assert sorted((m.cookie & 0xFF, m.priority, dict(m.match.items()).get("udp_dst", 0))
                  for m in deletes) == [(1, 10, 0), (1, 10, 80), (1, 11, 0), (77, 10, 0)]
    assert [(m.cookie, m.priority, dict(m.match.items())) for m in adds] == [
        (PROXY_COOKIE_TAG | learned, 20, {"in_port": 3})]
    bridge = next(iter(proxy.bridges.values()))
    assert bridge.all_counters()["flows_kept"] == 2
    assert len(bridge.installed[1]) == 2 and learned in bridge.installed


def test_reinstalled_learned_flows_carry_the_rest_of_their_hard_timeout() -> None:
    from ovs_sriov_proxy.rules import clock

    store = RuleStore()
    rule = parse_flow("priority=20,hard_timeout=100,in_port=3 actions=output:4", origin="ctl-a")
    store.add(rule, now=clock.now() - 60, expires_at=clock.now() + 40)
    proxy = Proxy(store)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    dump, _ = sent(session)
    proxy.handle_events(session, session.receive_data(flow_stats_reply_13(dump.xid, []), 1))
    (add,) = [flow_mod(m) for m in sent(session)]
    assert 38 <= add.hard_timeout <= 41


def learned_store() -> tuple[RuleStore, int]:
    store = RuleStore()
    return store, store.add(parse_flow("priority=20,in_port=3 actions=output:4", origin="ctl-a"))


def test_a_learned_rule_standing_as_its_controllers_flow_is_not_overwritten() -> None:
    store, learned = learned_store()
    proxy = Proxy(store)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    dump, _ = sent(session)
    out4 = ofproto_v1_3_parser.OFPActionOutput(4)
    first = flow_stats_reply_13(dump.xid, [(0x4300 << 48 | 9, 20, "in_port=3", [out4])], more=True)
    proxy.handle_events(session, session.receive_data(first, 1))
    assert sent(session) == []  # nothing before the last part
    proxy.handle_events(session, session.receive_data(flow_stats_reply_13(dump.xid, []), 1))
    assert sent(session) == []  # the controller's flow (cookie 0x4300...) stays as it is


def test_a_refused_dump_falls_back_to_deleting_by_cookie_and_reinstalling() -> None:
    from ovs_sriov_proxy.openflow.framing import error

    store, learned = learned_store()
    proxy = Proxy(store)
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    dump, _ = sent(session)
    proxy.handle_events(session, session.receive_data(error(OFP13, dump.xid, 1, 2, dump.raw), 1))
    delete, add = (flow_mod(m) for m in sent(session))
    assert delete.command == ofproto_v1_3.OFPFC_DELETE
    assert (delete.cookie, delete.cookie_mask) == (PROXY_COOKIE_TAG, 0xFFFF << 48)
    assert add.command == ofproto_v1_3.OFPFC_ADD and add.cookie == PROXY_COOKIE_TAG | learned
