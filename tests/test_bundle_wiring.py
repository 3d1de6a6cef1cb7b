"""Bundles through the northbound, with real sessions and no sockets: what a bundle may carry,
bundle ids on several bridges, open bundles per controller, table 0's floor at commit time."""

from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_v1_3 as o13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.bundle_relay import MAX_OPEN_BUNDLES
from ovs_sriov_proxy.openflow import actions, bundles
from ovs_sriov_proxy.openflow.framing import OFP13, hello
from ovs_sriov_proxy.sessions.keepalive import SessionTiming
from ovs_sriov_proxy.sessions.switch import SwitchSession

from .test_idspaces_wiring import seeded, two_controllers, two_controllers_on_a_13_bridge
from .test_switch_session import handshake_13
from .test_translate_wiring import DP13, WireLink, bridge_out, build, parse


def ready_links(northbound, proxy, session, links) -> None:
    seeded(northbound, proxy, session)
    for link in links:
        link.feed(hello(frozenset({OFP13})))
        link.received()


def commit_reply(commit) -> bytes:
    reply = bytearray(commit.raw)
    struct.pack_into("!H", reply, 20, o13.ONF_BCT_COMMIT_REPLY)
    return bytes(reply)


def test_a_bundle_carries_only_what_would_be_relayed_alone() -> None:
    northbound, proxy, session, links = two_controllers_on_a_13_bridge()
    ready_links(northbound, proxy, session, links)
    nx_flow_mod = struct.pack("!BBHIII", 4, 4, 16 + 32, 0, 0x2320, 13) + bytes(32)
    add = bytearray(build(p13.ONFBundleAddMsg(DP13, 7, 0, p13.OFPBarrierRequest(DP13), []),
                          xid=0x31))
    add[24:] = nx_flow_mod  # the same bundle add, carrying NXT_FLOW_MOD
    struct.pack_into("!H", add, 2, len(add))
    struct.pack_into("!I", add, 28, 0x31)  # the carried xid is the add's
    links[0].feed(bytes(add))
    assert bridge_out(session) == []
    [refusal] = [parse(m.raw) for m in links[0].received()]
    assert (refusal.xid, refusal.type, refusal.code) == (0x31, o13.OFPET_BAD_REQUEST,
                                                         o13.OFPBRC_BAD_TYPE)


def test_bundle_replies_get_the_right_bundle_id_on_each_of_two_bridges() -> None:
    proxy, northbound = two_controllers()
    sessions = []
    for dpid in (1, 2):
        session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
        proxy.handle_events(session, handshake_13(session, dpid=dpid))
        links = WireLink.instances[-2:]
        ready_links(northbound, proxy, session, links)
        sessions.append((session, links[0]))
    commits = []
    for n, (session, link) in enumerate(sessions):
        link.feed(build(p13.ONFBundleCtrlMsg(DP13, 7 + n, o13.ONF_BCT_COMMIT_REQUEST, 0, []),
                        xid=0x40 + n))
        [commit] = bridge_out(session)
        commits.append(commit)
    assert commits[0].xid == commits[1].xid  # each bridge session counts its own xids
    for (session, _), commit in zip(reversed(sessions), reversed(commits), strict=True):
        proxy.handle_events(session, session.receive_data(commit_reply(commit), 1))
    for n, (_, link) in enumerate(sessions):
        [answer] = link.received()
        assert (answer.xid, bundles.parse(answer.raw).bundle_id) == (0x40 + n, 7 + n)


def test_a_controller_cannot_open_bundles_without_end() -> None:
    northbound, proxy, session, links = two_controllers_on_a_13_bridge()
    ready_links(northbound, proxy, session, links)
    for bundle_id in range(MAX_OPEN_BUNDLES + 1):
        links[0].feed(build(p13.ONFBundleCtrlMsg(DP13, bundle_id, o13.ONF_BCT_OPEN_REQUEST, 0,
                                                 []), xid=bundle_id))
    assert len(bridge_out(session)) == MAX_OPEN_BUNDLES
    [refusal] = [parse(m.raw) for m in links[0].received()]
    assert refusal.xid == MAX_OPEN_BUNDLES
    links[1].feed(build(p13.ONFBundleCtrlMsg(DP13, 0, o13.ONF_BCT_OPEN_REQUEST, 0, [])))
    assert len(bridge_out(session)) == 1  # the other controller has its own allowance
    # An open the bridge refuses does not stay counted.
    links[1].received()
    links[1].feed(build(p13.ONFBundleCtrlMsg(DP13, 1, o13.ONF_BCT_OPEN_REQUEST, 0, []), xid=9))
    [opened] = bridge_out(session)
    error = struct.pack("!BBHIHH", 4, 1, 12, opened.xid, 1, 1)
    proxy.handle_events(session, session.receive_data(error, 1))
    assert ("b", 1) not in northbound.bundle_relay.open[session]


def test_a_catch_all_deleted_in_a_bundle_counts_when_the_bundle_commits() -> None:
    northbound, proxy, session, links = two_controllers_on_a_13_bridge()
    ready_links(northbound, proxy, session, links)
    drop_all = p13.OFPFlowMod(DP13, priority=0, match=p13.OFPMatch(), instructions=[])
    links[0].feed(build(drop_all))  # a's catch-all: a owns table 0's misses
    bridge_out(session)
    floor = northbound.floors[session]
    assert "a" in floor.owners
    delete = p13.OFPFlowMod(DP13, command=o13.OFPFC_DELETE, table_id=0, match=p13.OFPMatch(),
                            out_port=o13.OFPP_ANY, out_group=o13.OFPG_ANY)
    for verb in (o13.ONF_BCT_DISCARD_REQUEST, o13.ONF_BCT_COMMIT_REQUEST):
        links[0].feed(build(p13.ONFBundleAddMsg(DP13, 3, 0, delete, []), xid=0x50))
        assert "a" in floor.owners  # not yet
        links[0].feed(build(p13.ONFBundleCtrlMsg(DP13, 3, verb, 0, []), xid=0x51))
        _, end = bridge_out(session)
        if verb == o13.ONF_BCT_DISCARD_REQUEST:
            assert "a" in floor.owners  # discarded: nothing changed on the bridge
            continue
        proxy.handle_events(session, session.receive_data(commit_reply(end), 1))
        assert "a" not in floor.owners
        # Nobody owns the floor any more: the proxy's cover flows go (its rules answer misses
        # through its own table-miss flow again).
        [covers_off] = [parse(m.raw) for m in bridge_out(session)]
        assert covers_off.command == o13.OFPFC_DELETE and covers_off.cookie >> 48 == 0x5043


def test_deeply_nested_clones_end_the_walk_instead_of_the_session() -> None:
    nested = b""
    for _ in range(1500):
        nested = struct.pack("!HHIH6x", 0xFFFF, 16 + len(nested) if len(nested) < 0xFFF0 else 16,
                             0x2320, 42) + nested
    seen = []
    actions.walk_actions(bytearray(nested), 0, len(nested),
                         lambda buf, at, kind, length: seen.append(at))
    assert 0 < len(seen) <= actions.MAX_NESTING + 1
