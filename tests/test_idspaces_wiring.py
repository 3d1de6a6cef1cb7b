"""Group and meter ids wired into the northbound, with real sessions and no sockets: the bridge
lists its groups and meters before any controller is connected, and out-of-slice ids are
refused with the controller's error."""

from __future__ import annotations

import asyncio
import struct

from os_ken.ofproto import ofproto_v1_3 as o13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.config import ControllerConfig
from ovs_sriov_proxy.idspaces import group_slices
from ovs_sriov_proxy.northbound import Northbound
from ovs_sriov_proxy.openflow.framing import OFP13, error, hello, simple_message
from ovs_sriov_proxy.proxy import Proxy
from ovs_sriov_proxy.rules.store import RuleStore
from ovs_sriov_proxy.sessions.keepalive import SessionTiming
from ovs_sriov_proxy.sessions.switch import SwitchSession
from ovs_sriov_proxy.targets import parse_active

from .test_switch_session import handshake_13
from .test_translate_wiring import DP13, WireLink, bridge_out, build, parse


class CountingLink(WireLink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.started = 0

    def start(self) -> None:
        self.started += 1


def two_controllers() -> tuple[Proxy, Northbound]:
    """A proxy with controllers "a" and "b", whose links are CountingLinks (no sockets)."""
    WireLink.instances.clear()
    proxy = Proxy(RuleStore())
    controllers = [ControllerConfig(name, parse_active(f"tcp:127.0.0.1:{port}"))
                   for name, port in (("a", 6653), ("b", 6654))]
    return proxy, Northbound(proxy, controllers, miss_timeout=0.2, timing=SessionTiming(),
                             link_factory=CountingLink)


def two_controllers_on_a_13_bridge():
    proxy, northbound = two_controllers()
    session = SwitchSession(frozenset({OFP13}), SessionTiming(), now=0)
    proxy.handle_events(session, handshake_13(session))
    return northbound, proxy, session, WireLink.instances


def multipart_reply(xid: int, kind: int, body: bytes) -> bytes:
    return simple_message(OFP13, o13.OFPT_MULTIPART_REPLY, xid, struct.pack("!HH4x", kind, 0) + body)


def test_controllers_connect_once_the_bridge_has_listed_its_groups_and_meters() -> None:
    northbound, proxy, session, links = two_controllers_on_a_13_bridge()
    assert [link.started for link in links] == [0, 0]
    requests = {struct.unpack_from("!H", m.raw, 8)[0]: m.xid for m in bridge_out(session)
                if m.type == o13.OFPT_MULTIPART_REQUEST}
    del requests[o13.OFPMP_FLOW]  # the proxy's own reconcile dump
    assert set(requests) == {o13.OFPMP_GROUP_DESC, o13.OFPMP_METER_CONFIG,
                             o13.OFPMP_METER_FEATURES}
    b_low = group_slices(2)[1].low
    group_desc = b"".join(struct.pack("!HBxI", 8, o13.OFPGT_ALL, g) for g in (4, b_low + 4))
    answers = [
        multipart_reply(requests[o13.OFPMP_GROUP_DESC], o13.OFPMP_GROUP_DESC, group_desc),
        # a bridge that cannot list meters: an error, not a stall
        error(OFP13, requests[o13.OFPMP_METER_CONFIG], o13.OFPET_BAD_REQUEST,
              o13.OFPBRC_BAD_MULTIPART, b""),
        multipart_reply(requests[o13.OFPMP_METER_FEATURES], o13.OFPMP_METER_FEATURES,
                        struct.pack("!IIIBB2x", 100, 1, 0, 8, 0)),
    ]
    for answer in answers[:-1]:
        proxy.handle_events(session, session.receive_data(answer, 1))
        assert [link.started for link in links] == [0, 0]
    proxy.handle_events(session, session.receive_data(answers[-1], 1))
    assert [link.started for link in links] == [1, 1]
    assert northbound.ids[session].by_name["b"].meters.size == 50  # half the bridge's 100
    for link in links:
        link.feed(hello(frozenset({OFP13})))
        link.received()
    # b's delete-all reaches the group found in its slice, and only that one.
    links[1].feed(build(p13.OFPGroupMod(DP13, o13.OFPGC_DELETE, o13.OFPGT_ALL, o13.OFPG_ALL, []),
                        xid=0x21))
    [delete] = bridge_out(session)
    assert struct.unpack_from("!I", delete.raw, 12)[0] == b_low + 4


def test_an_out_of_slice_group_is_refused_with_the_controllers_xid_and_reaches_nothing() -> None:
    northbound, proxy, session, links = two_controllers_on_a_13_bridge()
    for message in bridge_out(session):  # an empty bridge, 100 meters
        if message.type == o13.OFPT_MULTIPART_REQUEST:
            kind = struct.unpack_from("!H", message.raw, 8)[0]
            if kind == o13.OFPMP_FLOW:
                continue  # the proxy's own reconcile dump
            body = struct.pack("!IIIBB2x", 100, 1, 0, 8, 0) if kind == 11 else b""
            proxy.handle_events(session, session.receive_data(
                multipart_reply(message.xid, kind, body), 1))
    links[0].feed(hello(frozenset({OFP13})))
    links[0].received()
    too_big = group_slices(2)[0].last + 1
    bucket = p13.OFPBucket(actions=[p13.OFPActionOutput(1)])
    links[0].feed(build(p13.OFPGroupMod(DP13, o13.OFPGC_ADD, o13.OFPGT_ALL, too_big, [bucket]),
                        xid=0x31))
    links[0].feed(build(p13.OFPMeterMod(DP13, o13.OFPMC_ADD, o13.OFPMF_KBPS, 51,
                                        [p13.OFPMeterBandDrop(rate=1)]), xid=0x32))
    assert bridge_out(session) == []
    errors = [parse(m.raw) for m in links[0].received()]
    assert [(e.xid, e.type, e.code) for e in errors] == [
        (0x31, o13.OFPET_GROUP_MOD_FAILED, o13.OFPGMFC_INVALID_GROUP),
        (0x32, o13.OFPET_METER_MOD_FAILED, o13.OFPMMFC_OUT_OF_METERS)]
    (bridge,) = proxy.bridges.values()
    assert bridge.counters["ids_refused:a"] == 2


def seeded(northbound, proxy, session, max_meter: int = 100) -> None:
    """Answer the bridge's listing: no groups, no meters, `max_meter` meters."""
    for message in bridge_out(session):
        if message.type == o13.OFPT_MULTIPART_REQUEST:
            kind = struct.unpack_from("!H", message.raw, 8)[0]
            if kind == o13.OFPMP_FLOW:
                continue  # the proxy's own reconcile dump
            body = struct.pack("!IIIBB2x", max_meter, 1, 0, 8, 0) if kind == 11 else b""
            proxy.handle_events(session, session.receive_data(
                multipart_reply(message.xid, kind, body), 1))


def test_a_winning_answer_that_is_refused_falls_back_and_releases_nothing_through_the_table(
        ) -> None:
    async def scenario() -> None:  # the miss timer needs a loop
        from .test_packet import packet_in_13

        northbound, proxy, session, links = two_controllers_on_a_13_bridge()
        seeded(northbound, proxy, session)
        links[0].feed(hello(frozenset({OFP13})))  # only "a" is up: it alone is asked
        links[0].received()
        frame = bytes.fromhex("00000000000b00000000000a0800") + bytes(50)
        proxy.handle_events(session, session.receive_data(packet_in_13(1, frame), 1))
        northbound.flush_links()
        [packet_in] = [m for m in links[0].received() if m.type == o13.OFPT_PACKET_IN]
        proxy_buffer = struct.unpack_from("!I", packet_in.raw, 8)[0]
        too_big = group_slices(2)[0].last + 1
        links[0].feed(build(p13.OFPFlowMod(
            DP13, buffer_id=proxy_buffer, priority=5, match=p13.OFPMatch(in_port=1),
            instructions=[p13.OFPInstructionActions(o13.OFPIT_APPLY_ACTIONS,
                                                    [p13.OFPActionGroup(too_big)])]), xid=0x41))
        to_bridge = bridge_out(session)
        assert [m.type for m in to_bridge] == []  # no flow, no release (the fallback drops it)
        [refusal] = [parse(m.raw) for m in links[0].received()]
        assert (refusal.xid, refusal.type, refusal.code) == (0x41, o13.OFPET_BAD_ACTION,
                                                             o13.OFPBAC_BAD_OUT_GROUP)
        (bridge,) = proxy.bridges.values()
        assert bridge.counters["fallback_drop"] == 1 and bridge.counters["ids_refused:a"] == 1

    asyncio.run(scenario())

def test_a_delete_all_of_many_groups_maps_only_its_last_delete() -> None:
    northbound, proxy, session, links = two_controllers_on_a_13_bridge()
    seeded(northbound, proxy, session)
    links[0].feed(hello(frozenset({OFP13})))
    bucket = p13.OFPBucket(actions=[p13.OFPActionOutput(1)])
    for group in range(1, 201):
        links[0].feed(build(p13.OFPGroupMod(DP13, o13.OFPGC_ADD, o13.OFPGT_ALL, group, [bucket])))
    bridge_out(session)
    mapped_before = len(northbound._xids[session])
    links[0].feed(build(p13.OFPGroupMod(DP13, o13.OFPGC_DELETE, o13.OFPGT_ALL, o13.OFPG_ALL, []),
                        xid=0x51))
    deletes = bridge_out(session)
    assert len(deletes) == 200
    assert len(northbound._xids[session]) == mapped_before + 1
    assert northbound._xids[session][deletes[-1].xid] == ("a", 0x51)


def test_the_listing_requests_are_those_of_each_version() -> None:
    from ovs_sriov_proxy.id_listing import listing_requests
    from ovs_sriov_proxy.openflow import codec

    for version in (0x04, 0x05, 0x06):
        kinds = {kind: struct.unpack_from("!H", codec.serialize(request, 1), 8)[0]
                 for kind, request in listing_requests(version).items()}
        assert kinds == {7: 7, 10: 10, 11: 11}


def test_bundles_of_two_controllers_get_their_own_ids_and_their_messages_are_scoped() -> None:
    from ovs_sriov_proxy.openflow import bundles

    northbound, proxy, session, links = two_controllers_on_a_13_bridge()
    seeded(northbound, proxy, session)
    for link in links:
        link.feed(hello(frozenset({OFP13})))
        link.received()
    bucket = p13.OFPBucket(actions=[p13.OFPActionOutput(1)])
    links[0].feed(build(p13.OFPGroupMod(DP13, o13.OFPGC_ADD, o13.OFPGT_ALL, 1, [bucket])))
    links[0].feed(build(p13.OFPGroupMod(DP13, o13.OFPGC_ADD, o13.OFPGT_ALL, 2, [bucket])))
    bridge_out(session)
    for n, link in enumerate(links):
        link.feed(build(p13.ONFBundleCtrlMsg(DP13, 7, o13.ONF_BCT_OPEN_REQUEST, 0, []),
                        xid=0x60 + n))
        flow = p13.OFPFlowMod(DP13, cookie=0xAB, priority=5, match=p13.OFPMatch(in_port=1),
                              instructions=[p13.OFPInstructionActions(
                                  o13.OFPIT_APPLY_ACTIONS, [p13.OFPActionOutput(2)])])
        link.feed(build(p13.ONFBundleAddMsg(DP13, 7, 0, flow, []), xid=0x70 + n))
    # a's delete-all of groups, inside its bundle: one add per group of its own
    everything = p13.OFPGroupMod(DP13, o13.OFPGC_DELETE, o13.OFPGT_ALL, o13.OFPG_ALL, [])
    links[0].feed(build(p13.ONFBundleAddMsg(DP13, 7, 0, everything, []), xid=0x80))
    sent = bridge_out(session)
    parsed = [bundles.parse(m.raw) for m in sent]
    assert all(b is not None for b in parsed)
    a_id, b_id = parsed[0].bundle_id, parsed[2].bundle_id  # the two opens
    assert a_id != b_id
    assert [b.bundle_id for b in parsed] == [a_id, a_id, b_id, b_id, a_id, a_id]
    for message, bundle in zip(sent, parsed, strict=True):
        if bundle.add:
            inner = bundle.inner(message.raw)
            assert struct.unpack_from("!I", inner, 4)[0] == message.xid  # as OVS requires
    a_flow = parse(parsed[1].inner(sent[1].raw))
    b_flow = parse(parsed[3].inner(sent[3].raw))
    assert (a_flow.cookie >> 48, b_flow.cookie >> 48) == (0x4300, 0x4301)  # tagged
    assert a_flow.priority != b_flow.priority  # each in its own band
    deleted = [struct.unpack_from("!I", parsed[i].inner(sent[i].raw), 12)[0] for i in (4, 5)]
    assert deleted == [1, 2]
    # b commits: the bridge's reply goes back to b with b's xid and b's bundle id.
    links[1].feed(build(p13.ONFBundleCtrlMsg(DP13, 7, o13.ONF_BCT_COMMIT_REQUEST, 0, []),
                        xid=0x90))
    [commit] = bridge_out(session)
    reply = bytearray(commit.raw)
    struct.pack_into("!H", reply, 20, o13.ONF_BCT_COMMIT_REPLY)
    proxy.handle_events(session, session.receive_data(bytes(reply), 2))
    [answer] = links[1].received()
    assert answer.xid == 0x90 and bundles.parse(answer.raw).bundle_id == 7
    # a goes away with its bundle still open: the proxy discards it on the bridge.
    from ovs_sriov_proxy.sessions.controller import ControllerClosed

    northbound._on_link_events(links[0], [ControllerClosed("gone")])
    [discard] = bridge_out(session)
    closed = bundles.parse(discard.raw)
    assert closed.bundle_id == a_id and closed.control_type == bundles.OFPBCT_DISCARD_REQUEST
