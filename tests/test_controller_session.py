"""The proxy playing the switch towards one controller, driven with os-ken-built controller messages."""

from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as of10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as of13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.openflow.framing import OFP10, OFP13, OFPT_HELLO, Framer, hello, simple_message
from ovs_sriov_proxy.openflow.switch_side import PortDesc
from ovs_sriov_proxy.sessions.controller import (
    OFPCR_ROLE_MASTER,
    OFPCR_ROLE_SLAVE,
    ControllerClosed,
    ControllerReady,
    ControllerSession,
    DatapathView,
    Relay,
)
from ovs_sriov_proxy.sessions.switch import SessionTiming

DP13 = ofproto_protocol.ProtocolDesc(OFP13)
DP10 = ofproto_protocol.ProtocolDesc(OFP10)
VIEW = DatapathView(0xAB, 254, 0, 0, (PortDesc(1, "vf0-rep", "02:00:00:00:00:01"),))
FRAME = bytes(range(200))


def wire(msg, xid: int = 7) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def replies(session: ControllerSession) -> list:
    return Framer().receive_data(session.data_to_send())


def ready(version: int = OFP13) -> ControllerSession:
    session = ControllerSession("c1", frozenset({OFP10, OFP13}), VIEW, SessionTiming(), now=0)
    assert replies(session)[0].type == OFPT_HELLO
    events = session.receive_data(hello(frozenset({version})), 0)
    assert events == [ControllerReady(version)]
    return session


def test_features_and_config_are_answered_from_the_view_and_the_controllers_own_settings() -> None:
    session = ready()
    session.receive_data(wire(p13.OFPFeaturesRequest(DP13), 3), 1)
    (features,) = replies(session)
    parsed = p13.OFPSwitchFeatures.parser(DP13, OFP13, 6, len(features.raw), 3, features.raw)
    assert (parsed.datapath_id, parsed.n_tables, features.xid) == (0xAB, 254, 3)
    assert session.receive_data(wire(p13.OFPSetConfig(DP13, 0, 512)), 1) == []
    session.receive_data(wire(p13.OFPGetConfigRequest(DP13), 4), 1)
    (config,) = replies(session)
    assert struct.unpack_from("!HH", config.raw, 8) == (0, 512)


def test_set_async_silences_only_this_controller() -> None:
    faucet_like = ready()
    other = ready()
    # Faucet turns table-miss packet-ins off (only ACTION ones wanted).
    faucet_like.receive_data(wire(p13.OFPSetAsync(DP13, [1 << of13.OFPR_ACTION, 0], [7, 7], [15, 0])), 1)
    assert faucet_like.data_to_send() == b""  # answered nothing, forwarded nothing
    assert not faucet_like.send_packet_in(buffer_id=1, total_len=200, in_port=1, reason=0, data=FRAME)
    assert faucet_like.send_packet_in(buffer_id=1, total_len=200, in_port=1, reason=1, data=FRAME)
    assert other.send_packet_in(buffer_id=1, total_len=200, in_port=1, reason=0, data=FRAME)
    (packet_in,) = replies(other)
    parsed = p13.OFPPacketIn.parser(DP13, OFP13, 10, len(packet_in.raw), 0, packet_in.raw)
    assert parsed.match["in_port"] == 1 and parsed.data == FRAME[:128]  # default miss_send_len


def test_slave_role_hears_no_packet_ins_and_stale_generations_are_refused() -> None:
    session = ready()
    session.receive_data(wire(p13.OFPRoleRequest(DP13, OFPCR_ROLE_SLAVE, 10), 5), 1)
    (reply,) = replies(session)
    parsed = p13.OFPRoleReply.parser(DP13, OFP13, 25, len(reply.raw), 5, reply.raw)
    assert (parsed.role, parsed.generation_id) == (OFPCR_ROLE_SLAVE, 10)
    assert not session.send_packet_in(buffer_id=1, total_len=200, in_port=1, reason=0, data=FRAME)
    session.receive_data(wire(p13.OFPRoleRequest(DP13, OFPCR_ROLE_MASTER, 9), 6), 1)
    (refusal,) = replies(session)
    assert refusal.type == 1 and struct.unpack_from("!HH", refusal.raw, 8) == (11, 0)
    assert session.settings.role == OFPCR_ROLE_SLAVE
    # A slave may read, but not send packets or change the switch: refused as a switch would.
    flow = wire(p13.OFPFlowMod(DP13, priority=1, match=p13.OFPMatch(), instructions=[]), 7)
    packet_out = wire(p13.OFPPacketOut(DP13, 0xFFFFFFFF, 1, [p13.OFPActionOutput(2)], FRAME), 8)
    bundle = wire(p13.ONFBundleCtrlMsg(DP13, 1, of13.ONF_BCT_OPEN_REQUEST, 0, []), 9)
    for raw in (flow, packet_out, bundle):
        assert session.receive_data(raw, 1) == []
    assert [(r.xid, struct.unpack_from("!HH", r.raw, 8)) for r in replies(session)] == [
        (7, (1, 10)), (8, (1, 10)), (9, (1, 10))]  # BAD_REQUEST/IS_SLAVE
    (relay,) = session.receive_data(wire(p13.OFPFlowStatsRequest(DP13), 10), 1)
    assert isinstance(relay, Relay)  # reading is allowed
    session.receive_data(wire(p13.OFPRoleRequest(DP13, OFPCR_ROLE_MASTER, 11), 11), 1)
    replies(session)
    (relay,) = session.receive_data(flow, 1)  # a master again: its flows go through
    assert isinstance(relay, Relay)


def test_bridge_messages_are_relayed_and_packet_outs_decoded() -> None:
    session = ready()
    flow_mod = wire(p13.OFPFlowMod(DP13, priority=5, match=p13.OFPMatch(in_port=1), instructions=[]))
    (relay,) = session.receive_data(flow_mod, 1)
    assert isinstance(relay, Relay) and relay.message.raw == flow_mod and relay.packet_out is None
    packet_out = wire(p13.OFPPacketOut(DP13, 42, 3, [p13.OFPActionOutput(2)], None))
    (relay,) = session.receive_data(packet_out, 1)
    assert relay.packet_out is not None
    assert (relay.packet_out.buffer_id, relay.packet_out.in_port) == (42, 3)
    (barrier,) = session.receive_data(wire(p13.OFPBarrierRequest(DP13)), 1)
    assert isinstance(barrier, Relay) and barrier.message.type == 20
    assert session.data_to_send() == b""


def test_of10_controller_gets_ports_in_the_features_reply() -> None:
    session = ready(OFP10)
    session.receive_data(wire(p10.OFPFeaturesRequest(DP10), 3), 1)
    (features,) = replies(session)
    parsed = p10.OFPSwitchFeatures.parser(DP10, OFP10, 6, len(features.raw), 3, features.raw)
    assert list(parsed.ports) == [1]
    (relay,) = session.receive_data(wire(p10.OFPPacketOut(DP10, of10.OFP_NO_BUFFER, 1,
                                                          [p10.OFPActionOutput(2)], FRAME)), 1)
    assert relay.packet_out is not None and relay.packet_out.data == FRAME


def test_hostile_controller_loses_its_session_only() -> None:
    session = ready()
    events = session.receive_data(struct.pack("!BBHI", OFP13, 14, 9000, 1) + b"\0" * 20, 1)
    assert events == []  # a length that announces more than is there: wait for the rest
    events = ready().receive_data(b"\x04\x0e\x00\x04\x00\x00\x00\x00", 1)
    assert isinstance(events[0], ControllerClosed)
    unknown = ready()
    assert unknown.receive_data(simple_message(OFP13, 99, 8), 1) == []
    (refusal,) = replies(unknown)
    assert refusal.type == 1 and refusal.xid == 8  # BAD_REQUEST/BAD_TYPE, session kept
    truncated_set_config = simple_message(OFP13, 9, 3, b"\0")
    events = ready().receive_data(truncated_set_config, 1)
    assert isinstance(events[0], ControllerClosed)


def test_echo_keepalive_and_dead_controller() -> None:
    session = ready()
    assert session.handle_timer(5) == []
    assert replies(session)[0].type == 2  # ECHO_REQUEST
    events = session.handle_timer(15)
    assert isinstance(events[0], ControllerClosed) and "dead peer" in events[0].reason


def test_experimenter_messages_that_would_act_on_the_proxys_own_connection_are_refused() -> None:
    def nicira(version: int, xid: int, subtype: int, body: bytes) -> bytes:
        return struct.pack("!BBHIII", version, 4, 16 + len(body), xid, 0x2320, subtype) + body

    for version in (OFP13, OFP10):
        session = ready(version)
        refused = [
            nicira(version, 0x21, 16, struct.pack("!I", 1)),  # SET_PACKET_IN_FORMAT nxt_packet_in
            nicira(version, 0x22, 13, bytes(32)),  # FLOW_MOD
            nicira(version, 0x23, 15, struct.pack("!B7x", 1)),  # FLOW_MOD_TABLE_ID
            nicira(version, 0x24, 27, bytes(8)),  # SET_ASYNC_CONFIG2
        ]
        for raw in refused:
            assert session.receive_data(raw, 1) == []
        errors = replies(session)
        assert [(e.xid, struct.unpack_from("!HH", e.raw, 8)) for e in errors] == [
            (xid, (1, 4)) for xid in (0x21, 0x22, 0x23, 0x24)]  # BAD_REQUEST/BAD_EXP_TYPE
        # Relayed: a switch-wide one that acts on no connection (flush a conntrack zone), and
        # ONF's bundles for 1.3 (the northbound maps their ids and what they carry).
        flush = nicira(version, 0x25, 29, struct.pack("!6xH", 5))
        bundle_open = struct.pack("!BBHIIIIHH", version, 4, 24, 0x26, 0x4F4E4600, 2300, 1, 0, 0)
        for raw in (flush, bundle_open):
            (relay,) = session.receive_data(raw, 1)
            assert isinstance(relay, Relay) and relay.message.raw == raw



def test_nicira_role_and_async_config_are_this_controllers_own() -> None:
    """A 1.0 controller's only way to roles and async masks: answered by the proxy for it
    alone, never relayed (they would act on the proxy's own connection to the bridge)."""
    def nicira(version: int, xid: int, subtype: int, body: bytes) -> bytes:
        return struct.pack("!BBHIII", version, 4, 16 + len(body), xid, 0x2320, subtype) + body

    for version in (OFP10, OFP13):
        session = ready(version)
        assert session.receive_data(nicira(version, 0x31, 10, struct.pack("!I", 2)), 1) == []
        (reply,) = replies(session)
        assert struct.unpack("!BBHIIII", reply.raw) == (version, 4, 20, 0x31, 0x2320, 11, 2)
        assert session.settings.role == OFPCR_ROLE_SLAVE and not session.may_answer()
        packet_out = (wire(p10.OFPPacketOut(DP10, 0xFFFFFFFF, 1, [p10.OFPActionOutput(2)],
                                            FRAME), 0x32) if version == OFP10 else
                      wire(p13.OFPPacketOut(DP13, 0xFFFFFFFF, 1, [p13.OFPActionOutput(2)],
                                            FRAME), 0x32))
        assert session.receive_data(packet_out, 1) == []
        (refusal,) = replies(session)
        code = 5 if version == OFP10 else 10  # 1.0's EPERM, 1.3's IS_SLAVE
        assert struct.unpack_from("!HH", refusal.raw, 8) == (1, code)
        stats = (wire(p10.OFPFlowStatsRequest(DP10, 0, p10.OFPMatch(), 0xFF, 0xFFFF), 0x36)
                 if version == OFP10 else wire(p13.OFPFlowStatsRequest(DP13), 0x36))
        (relay,) = session.receive_data(stats, 1)  # a slave still reads
        assert isinstance(relay, Relay)
        session.receive_data(nicira(version, 0x33, 10, struct.pack("!I", 0)), 1)  # OTHER
        replies(session)
        assert session.may_answer()
        # async config: no packet-ins at all for this controller, as a master
        session.receive_data(nicira(version, 0x34, 19, struct.pack("!6I", 0, 0, 7, 7, 15, 0)), 1)
        assert replies(session) == []
        assert not session.send_packet_in(buffer_id=1, total_len=200, in_port=1, reason=0,
                                          data=FRAME)
        assert session.receive_data(nicira(version, 0x35, 20, struct.pack("!6xH", 9)), 1) == []
        assert replies(session) == []  # the controller id: accepted, nothing to say
