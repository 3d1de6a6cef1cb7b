"""The bridge-side session driven with bytes and a hand-advanced clock (no sockets)."""

from __future__ import annotations

import struct

from os_ken.ofproto import ofproto_v1_0, ofproto_v1_3

from ovs_sriov_proxy.openflow.framing import (
    OFP10,
    OFP13,
    OFPT13_MULTIPART_REQUEST,
    OFPT_ECHO_REPLY,
    OFPT_ECHO_REQUEST,
    OFPT_ERROR,
    OFPT_FEATURES_REQUEST,
    OFPT_FLOW_MOD,
    OFPT_HELLO,
    OFPT_SET_CONFIG,
    Framer,
    hello,
    simple_message,
)
from ovs_sriov_proxy.openflow.packet import PacketIn
from ovs_sriov_proxy.sessions.switch import (
    Closed,
    SessionTiming,
    State,
    SwitchReady,
    SwitchSession,
)

from .test_packet import UDP_FRAME, packet_in_10, packet_in_13

BOTH = frozenset({OFP10, OFP13})
TIMING = SessionTiming(hello_timeout=5, echo_interval=5, dead_interval=15)


def sent(session: SwitchSession) -> list:
    framer = Framer()
    return framer.receive_data(session.data_to_send())


def port_13(port_no: int, name: str) -> bytes:
    return struct.pack("!I4x6s2x16sIIIIIIII", port_no, b"\x02" * 6, name.encode(), 0, 0, 0, 0, 0, 0, 0, 0)


def features_reply_13(xid: int, dpid: int) -> bytes:
    body = struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0, 0)
    return simple_message(OFP13, 6, xid, body)


def port_desc_reply_13(xid: int, ports: list[bytes], more: bool = False) -> bytes:
    body = struct.pack("!HH4x", 13, 1 if more else 0) + b"".join(ports)
    return simple_message(OFP13, 19, xid, body)


def handshake_13(session: SwitchSession, dpid: int = 0xAB, now: float = 0.0) -> list:
    out = sent(session)
    assert out[0].type == OFPT_HELLO
    session.receive_data(hello(frozenset({OFP13})), now)
    requests = sent(session)
    types = [m.type for m in requests]
    assert types == [OFPT_FEATURES_REQUEST, OFPT_SET_CONFIG, OFPT13_MULTIPART_REQUEST]
    features_xid, ports_xid = requests[0].xid, requests[2].xid
    events = session.receive_data(features_reply_13(features_xid, dpid), now)
    assert events == []
    events += session.receive_data(port_desc_reply_13(ports_xid, [port_13(1, "p1")], more=True), now)
    assert events == []
    events += session.receive_data(
        port_desc_reply_13(ports_xid, [port_13(ofproto_v1_3.OFPP_LOCAL, "br-int")]), now)
    return events


def test_handshake_13_reports_datapath_ports_and_bridge_name() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    events = handshake_13(session)
    assert len(events) == 1 and isinstance(events[0], SwitchReady)
    ready = events[0]
    assert (ready.datapath_id, ready.version, ready.bridge_name) == (0xAB, OFP13, "br-int")
    assert set(ready.ports) == {1, ofproto_v1_3.OFPP_LOCAL}
    assert session.state is State.READY


def test_handshake_10_takes_ports_from_features_reply() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    sent(session)
    session.receive_data(simple_message(OFP10, OFPT_HELLO, 1), 0)
    requests = sent(session)
    assert [m.type for m in requests] == [OFPT_FEATURES_REQUEST, OFPT_SET_CONFIG]
    body = struct.pack("!QIB3xII", 7, 256, 1, 0, 0) + struct.pack(
        "!H6s16sIIIIII", ofproto_v1_0.OFPP_LOCAL, b"\x02\0\0\0\0\x01", b"br0", 0, 0, 0, 0, 0, 0)
    events = session.receive_data(simple_message(OFP10, 6, requests[0].xid, body), 0)
    assert isinstance(events[0], SwitchReady)
    assert events[0].bridge_name == "br0" and 0xFFFFFFFE in events[0].ports


def test_packet_in_before_ready_is_held_then_delivered_in_order() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    sent(session)
    session.receive_data(hello(frozenset({OFP13})), 0)
    requests = sent(session)
    assert session.receive_data(packet_in_13(1, UDP_FRAME), 0) == []
    session.receive_data(features_reply_13(requests[0].xid, 1), 0)
    events = session.receive_data(port_desc_reply_13(requests[2].xid, []), 0)
    assert isinstance(events[0], SwitchReady) and isinstance(events[1], PacketIn)


def test_echo_both_ways_and_dead_peer() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    handshake_13(session)
    session.receive_data(simple_message(OFP13, OFPT_ECHO_REQUEST, 55, b"ping"), 1)
    reply = sent(session)
    assert [(m.type, m.xid, m.body) for m in reply] == [(OFPT_ECHO_REPLY, 55, b"ping")]
    assert session.next_deadline() == 1 + 5
    assert session.handle_timer(6) == []
    assert [m.type for m in sent(session)] == [OFPT_ECHO_REQUEST]
    assert session.handle_timer(10) == []  # probe outstanding, not yet dead
    events = session.handle_timer(16)
    assert isinstance(events[0], Closed) and "dead peer" in events[0].reason


def test_an_answered_probe_keeps_the_session() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    handshake_13(session)
    session.handle_timer(5)
    probe = sent(session)[0]
    session.receive_data(simple_message(OFP13, OFPT_ECHO_REPLY, probe.xid), 6)
    assert session.handle_timer(16) == [] and session.state is State.READY


def test_silent_peer_never_saying_hello_is_dropped() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    assert session.next_deadline() == 5
    events = session.handle_timer(5)
    assert isinstance(events[0], Closed) and "HELLO" in events[0].reason


def test_incompatible_versions_get_hello_failed() -> None:
    session = SwitchSession(frozenset({OFP13}), TIMING, now=0)
    sent(session)
    events = session.receive_data(simple_message(OFP10, OFPT_HELLO, 0), 0)
    assert isinstance(events[0], Closed)
    error = sent(session)[0]
    assert error.type == OFPT_ERROR and struct.unpack_from("!HH", error.raw, 8) == (0, 0)


def test_garbage_and_bad_lengths_close_the_session() -> None:
    for garbage in (b"\x16\x03\x01\x02\x00" + b"\0" * 40, struct.pack("!BBHI", OFP13, 0, 2, 0)):
        session = SwitchSession(BOTH, TIMING, now=0)
        events = session.receive_data(garbage, 0)
        assert isinstance(events[0], Closed) and "protocol error" in events[0].reason
        assert session.receive_data(b"more", 1) == []


def test_message_before_hello_is_refused() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    events = session.receive_data(simple_message(OFP13, OFPT_ECHO_REQUEST, 1), 0)
    assert isinstance(events[0], Closed) and "expected HELLO" in events[0].reason


def test_switch_sending_flow_mod_gets_an_error_but_keeps_its_session() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    handshake_13(session)
    assert session.receive_data(simple_message(OFP13, OFPT_FLOW_MOD, 9, b"\0" * 40), 1) == []
    error = sent(session)[0]
    assert error.type == OFPT_ERROR and error.xid == 9 and session.state is State.READY


def test_packet_in_10_after_handshake() -> None:
    session = SwitchSession(frozenset({OFP10}), TIMING, now=0)
    sent(session)
    session.receive_data(simple_message(OFP10, OFPT_HELLO, 1), 0)
    requests = sent(session)
    body = struct.pack("!QIB3xII", 7, 256, 1, 0, 0)
    session.receive_data(simple_message(OFP10, 6, requests[0].xid, body), 0)
    events = session.receive_data(packet_in_10(2, UDP_FRAME, buffer_id=5), 0)
    assert isinstance(events[0], PacketIn) and events[0].buffer_id == 5 and events[0].in_port == 2


def test_peer_stuck_after_hello_is_dropped_at_the_handshake_deadline() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    sent(session)
    session.receive_data(hello(frozenset({OFP13})), 1)
    assert session.next_deadline() == 5
    assert session.handle_timer(4.9) == []
    events = session.handle_timer(5)
    assert isinstance(events[0], Closed) and "features reply" in events[0].reason


def test_messages_held_before_ready_are_capped() -> None:
    from ovs_sriov_proxy.sessions.switch import MAX_HELD_EVENTS

    session = SwitchSession(BOTH, TIMING, now=0)
    sent(session)
    session.receive_data(hello(frozenset({OFP13})), 0)
    burst = packet_in_13(1, UDP_FRAME) * (MAX_HELD_EVENTS + 1)
    events = session.receive_data(burst, 0)
    assert isinstance(events[-1], Closed) and "before the handshake ended" in events[-1].reason


def test_multipart_reply_of_another_type_to_the_port_request_closes_cleanly() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    sent(session)
    session.receive_data(hello(frozenset({OFP13})), 0)
    requests = sent(session)
    desc_body = struct.pack("!HH4x", 0, 0) + b"\0" * 1056  # OFPMP_DESC with an empty ofp_desc
    events = session.receive_data(simple_message(OFP13, 19, requests[2].xid, desc_body), 0)
    assert isinstance(events[0], Closed) and "port description" in events[0].reason


def test_a_message_batched_with_hello_must_carry_the_negotiated_version() -> None:
    session = SwitchSession(BOTH, TIMING, now=0)
    sent(session)
    batch = hello(frozenset({OFP13})) + simple_message(OFP10, OFPT_ECHO_REQUEST, 3)
    events = session.receive_data(batch, 0)
    assert isinstance(events[0], Closed) and "differs from the negotiated" in events[0].reason
