"""Translation wired into the northbound: an OpenFlow 1.3 controller on an OpenFlow 1.0 bridge,
with real sessions on both sides and no sockets (a link that hands bytes in and out)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import pytest
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as o10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as o13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.config import PROTOCOLS, ConfigError, ControllerConfig, parse_config
from ovs_sriov_proxy.northbound import Northbound, offered_versions
from ovs_sriov_proxy.openflow import switch_side
from ovs_sriov_proxy.openflow.framing import (
    OFP10,
    OFP13,
    OFPT_HELLO,
    Framer,
    Message,
    hello,
    simple_message,
)
from ovs_sriov_proxy.proxy import Proxy
from ovs_sriov_proxy.rules.store import RuleStore
from ovs_sriov_proxy.sessions.controller import ControllerSession, DatapathView
from ovs_sriov_proxy.sessions.keepalive import SessionTiming
from ovs_sriov_proxy.sessions.switch import SwitchSession
from ovs_sriov_proxy.targets import parse_active

DP10 = ofproto_protocol.ProtocolDesc(OFP10)
DP13 = ofproto_protocol.ProtocolDesc(OFP13)
FRAME = bytes.fromhex("00000000000b00000000000a0800450000200001000040117ae00a0000010a000002"
                      "03e807d0000c0000") + b"ab"


class WireLink:
    """A ControllerLink with a real ControllerSession and no socket: bytes in by `feed`."""

    instances: list[WireLink] = []

    def __init__(self, name: str, target: object, versions: frozenset[int], view: DatapathView,
                 timing: SessionTiming, on_events: Callable[..., None],
                 prefer: int | None = None, **_: object) -> None:
        self.name = name
        self.versions = versions
        self.prefer = prefer
        self.on_events = on_events
        self.session: ControllerSession | None = ControllerSession(name, versions, view, timing, 0,
                                                                   prefer=prefer)
        self.connects = 1
        WireLink.instances.append(self)

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def feed(self, raw: bytes) -> None:
        assert self.session is not None
        events = self.session.receive_data(raw, 0)
        if events:
            self.on_events(self, events)

    def received(self) -> list[Message]:
        assert self.session is not None
        return Framer().receive_data(self.session.data_to_send())


def build(msg: Any, xid: int = 0x77) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def parse(raw: bytes) -> Any:
    version, msg_type, length, xid = struct.unpack_from("!BBHI", raw)
    dp = DP10 if version == OFP10 else DP13
    return dp.ofproto_parser._MSG_PARSERS[msg_type](dp, version, msg_type, length, xid, raw)


def bridge_out(session: SwitchSession) -> list[Message]:
    return Framer().receive_data(session.data_to_send())


def of13_controller_on_of10_bridge(protocols: tuple[str, ...] | None = None,
                                   controller_versions: frozenset[int] = frozenset({OFP13})):
    """(northbound, the 1.0 bridge's session, the controller's link, its answer so far)."""
    WireLink.instances.clear()
    proxy = Proxy(RuleStore())
    extra = {} if protocols is None else {"protocols": protocols}
    controller = ControllerConfig("c", parse_active("tcp:127.0.0.1:6653"), **extra)
    northbound = Northbound(proxy, [controller], miss_timeout=0.2, timing=SessionTiming(),
                            link_factory=WireLink)
    session = SwitchSession(frozenset({OFP10}), SessionTiming(), now=0)
    session.data_to_send()
    session.receive_data(simple_message(OFP10, OFPT_HELLO, 1), 0)
    features_xid = bridge_out(session)[0].xid
    body = struct.pack("!QIB3xII", 7, 256, 1, 0, 0) + b"".join(
        struct.pack("!H6s16sIIIIII", no, b"\x02\0\0\0\0" + bytes([no & 0xFF]), name, 0, 0, 0, 0,
                    0, 0) for no, name in ((1, b"p1"), (2, b"p2"), (o10.OFPP_LOCAL, b"br0")))
    events = session.receive_data(simple_message(OFP10, 6, features_xid, body), 0)
    proxy.handle_events(session, events)
    session.data_to_send()  # the reconcile dump
    links = WireLink.instances
    if links:
        links[0].feed(hello(controller_versions))
    return northbound, session, links


def test_a_controller_is_offered_what_translates_to_the_bridges_version() -> None:
    default = ControllerConfig("c", parse_active("tcp:127.0.0.1:6653"))
    assert offered_versions(default, OFP10) == offered_versions(default, OFP13) == {OFP10, OFP13}
    assert offered_versions(default, 0x05) == {0x05}
    only13 = ControllerConfig("c", parse_active("tcp:127.0.0.1:6653"), protocols=("OpenFlow13",))
    assert offered_versions(only13, OFP10) == {OFP13}
    _, _, links = of13_controller_on_of10_bridge()
    assert links[0].versions == {OFP10, OFP13}
    assert links[0].session is not None and links[0].session.version == OFP13
    assert links[0].prefer == OFP10
    _, _, links = of13_controller_on_of10_bridge(("OpenFlow14",))
    assert links == []  # nothing to offer: no link at all


def test_a_controller_that_also_speaks_the_bridges_version_gets_it_untranslated() -> None:
    _, _, (link,) = of13_controller_on_of10_bridge(controller_versions=frozenset({OFP10, OFP13}))
    assert link.session is not None and link.session.version == OFP10
    (our_hello,) = link.received()
    assert (our_hello.type, our_hello.version, our_hello.raw[8:]) == (OFPT_HELLO, OFP10, b"")


def test_the_preferred_version_waits_for_the_controllers_hello() -> None:
    view = DatapathView(1, 1, 0, 0)
    session = ControllerSession("c", frozenset({OFP10, OFP13}), view, SessionTiming(), 0,
                                prefer=OFP10)
    assert session.data_to_send() == b""  # no HELLO before the controller's
    session.receive_data(simple_message(OFP13, OFPT_HELLO, 1), 0)  # no bitmap: standard rules
    assert session.version == OFP13
    assert Framer().receive_data(session.data_to_send())[0].version == OFP13
    plain = ControllerSession("c", frozenset({OFP10, OFP13}), view, SessionTiming(), 0)
    assert Framer().receive_data(plain.data_to_send())[0].type == OFPT_HELLO  # at once


def test_a_controller_that_waits_for_the_switch_hello_gets_one_after_the_grace() -> None:
    from ovs_sriov_proxy.sessions.controller import HELLO_GRACE

    view = DatapathView(1, 1, 0, 0)
    session = ControllerSession("c", frozenset({OFP10, OFP13}), view, SessionTiming(), 0,
                                prefer=OFP10)
    assert session.next_deadline() == HELLO_GRACE
    session.handle_timer(HELLO_GRACE / 2)
    assert session.data_to_send() == b""
    session.handle_timer(HELLO_GRACE)
    (ours,) = Framer().receive_data(session.data_to_send())
    assert ours.type == OFPT_HELLO and ours.version == OFP13  # every version, as usual
    session.receive_data(hello(frozenset({OFP10, OFP13})), HELLO_GRACE + 0.1)
    assert session.version == OFP13  # the highest common: both sides must agree on it
    assert [m.type for m in Framer().receive_data(session.data_to_send())] == []  # no 2nd HELLO


def test_an_untranslatable_flow_mod_is_answered_with_an_error_and_never_reaches_the_bridge() -> None:
    northbound, session, (link,) = of13_controller_on_of10_bridge()
    link.received()
    goto = build(p13.OFPFlowMod(DP13, match=p13.OFPMatch(),
                                instructions=[p13.OFPInstructionGotoTable(1)]), xid=0x99)
    link.feed(goto)
    assert bridge_out(session) == []
    (err,) = link.received()
    err = parse(err.raw)
    assert (err.version, err.xid, err.type, err.code) == (OFP13, 0x99, o13.OFPET_BAD_INSTRUCTION,
                                                          o13.OFPBIC_UNSUP_INST)
    (bridge,) = northbound.proxy.bridges.values()
    assert bridge.counters["untranslatable:c"] == 1


def test_proactive_flow_mods_barriers_and_errors_cross_versions_with_xids_mapped() -> None:
    northbound, session, (link,) = of13_controller_on_of10_bridge()
    link.received()
    link.feed(build(p13.OFPFlowMod(DP13, priority=7, cookie=3, match=p13.OFPMatch(in_port=1),
                                   instructions=[p13.OFPInstructionActions(
                                       o13.OFPIT_APPLY_ACTIONS, [p13.OFPActionOutput(2)])]),
                    xid=0x10))
    link.feed(build(p13.OFPBarrierRequest(DP13), xid=0x11))
    mod, barrier = bridge_out(session)
    got = parse(mod.raw)
    assert (got.version, got.priority, got.match.in_port, got.actions[0].port) == (OFP10, 7, 1, 2)
    assert got.cookie == 0x4300 << 48 | 3  # the controller's tag, as on any bridge
    assert barrier.type == o10.OFPT_BARRIER_REQUEST and barrier.xid not in (0x10, 0x11)
    proxy = northbound.proxy
    # The bridge refuses the flow (1.0 numbering), then answers the barrier.
    errors = session.receive_data(build(p10.OFPErrorMsg(DP10, o10.OFPET_FLOW_MOD_FAILED,
                                                        o10.OFPFMFC_ALL_TABLES_FULL, b""),
                                        xid=mod.xid), 0)
    proxy.handle_events(session, errors)
    replies = session.receive_data(build(p10.OFPBarrierReply(DP10), xid=barrier.xid), 0)
    proxy.handle_events(session, replies)
    err, reply = link.received()
    err = parse(err.raw)
    assert (err.version, err.xid, err.type, err.code) == (OFP13, 0x10, o13.OFPET_FLOW_MOD_FAILED,
                                                          o13.OFPFMFC_TABLE_FULL)
    assert (reply.version, reply.type, reply.xid) == (OFP13, o13.OFPT_BARRIER_REPLY, 0x11)


def test_a_port_desc_request_is_answered_from_the_1_0_bridges_features() -> None:
    northbound, session, (link,) = of13_controller_on_of10_bridge()
    link.received()
    link.feed(build(p13.OFPPortDescStatsRequest(DP13, 0), xid=0x20))
    (features,) = bridge_out(session)
    assert features.type == o10.OFPT_FEATURES_REQUEST
    body = struct.pack("!QIB3xII", 7, 256, 1, 0, 0) + struct.pack(
        "!H6s16sIIIIII", 5, b"\x02\0\0\0\0\x05", b"p5", 0, 0, 0, 0, 0, 0)
    events = session.receive_data(simple_message(OFP10, 6, features.xid, body), 0)
    northbound.proxy.handle_events(session, events)
    (reply,) = link.received()
    got = parse(reply.raw)
    assert (got.xid, got.type, [p.port_no for p in got.body]) == (0x20, o13.OFPMP_PORT_DESC, [5])


def test_a_translated_flow_mod_answering_a_miss_is_applied_and_learned() -> None:
    async def scenario() -> None:
        northbound, session, (link,) = of13_controller_on_of10_bridge()
        link.received()
        session.on_packet_in(switch_side.packet_in(OFP10, buffer_id=0xFFFFFFFF,  # type: ignore[misc]
                                                   total_len=len(FRAME), in_port=1, reason=0,
                                                   data=FRAME))
        northbound.flush_links()
        (packet_in,) = link.received()
        got = parse(packet_in.raw)
        assert got.version == OFP13 and got.match["in_port"] == 1 and bytes(got.data) == FRAME
        link.feed(build(p13.OFPFlowMod(
            DP13, priority=100, idle_timeout=30, buffer_id=got.buffer_id,
            match=p13.OFPMatch(in_port=1, eth_dst="00:00:00:00:00:0b"),
            instructions=[p13.OFPInstructionActions(o13.OFPIT_APPLY_ACTIONS,
                                                    [p13.OFPActionOutput(2)])]), xid=0x30))
        mod, release = bridge_out(session)[:2]
        installed = parse(mod.raw)
        assert installed.version == OFP10 and installed.buffer_id == 0xFFFFFFFF
        assert installed.match.dl_dst == b"\0\0\0\0\0\x0b" and installed.idle_timeout == 30
        assert release.type == o10.OFPT_PACKET_OUT and release.raw.endswith(FRAME)
        (bridge,) = northbound.proxy.bridges.values()
        assert bridge.counters["won_by:c"] == 1 and bridge.counters["learned"] == 1
        learned = [rule for _, rule in bridge.classifier.rules() if rule.origin == "c"]
        assert len(learned) == 1 and learned[0].priority == 100

    asyncio.run(scenario())


CONTROLLER = '[[controllers]]\nname = "c"\ntarget = "tcp:127.0.0.1:6653"\n'


def test_a_controllers_protocols_are_read_and_checked() -> None:
    (default,) = parse_config(CONTROLLER).controllers
    assert default.protocols == PROTOCOLS
    (only10,) = parse_config(CONTROLLER + 'protocols = ["OpenFlow10"]\n').controllers
    assert only10.protocols == ("OpenFlow10",)
    with pytest.raises(ConfigError) as info:
        parse_config(CONTROLLER + 'protocols = ["OpenFlow12", "OpenFlow10", "OpenFlow10"]\n')
    assert str(info.value).splitlines() == [
        "<string>:4: controllers[0].protocols[0]: unknown protocol 'OpenFlow12' (allowed: "
        "OpenFlow10, OpenFlow13, OpenFlow14, OpenFlow15)",
        "<string>:4: controllers[0].protocols[2]: duplicate protocol 'OpenFlow10'"]
