from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovs_sriov_proxy.openflow.framing import (
    OFP10,
    OFP13,
    OFP15,
    OFPT_ECHO_REQUEST,
    OFPT_HELLO,
    Framer,
    Message,
    RemoteProtocolError,
    hello,
    negotiate,
    peer_versions,
    simple_message,
)


def test_split_across_arbitrary_chunks() -> None:
    stream = simple_message(OFP13, OFPT_HELLO, 1) + simple_message(OFP13, OFPT_ECHO_REQUEST, 2, b"abc")
    for cut in range(len(stream) + 1):
        framer = Framer()
        got = framer.receive_data(stream[:cut]) + framer.receive_data(stream[cut:])
        assert [(m.type, m.xid, m.body) for m in got] == [(OFPT_HELLO, 1, b""),
                                                          (OFPT_ECHO_REQUEST, 2, b"abc")]
        assert framer.pending_bytes == 0


@pytest.mark.parametrize("raw, problem", [
    (struct.pack("!BBHI", 4, 0, 4, 0), "shorter than a header"),
    (b"GET / HTTP/1.1\r\n", "not OpenFlow"),
    (struct.pack("!BBHI", 0x42, 0, 8, 0), "not OpenFlow"),
])
def test_garbage_is_the_peers_fault(raw: bytes, problem: str) -> None:
    with pytest.raises(RemoteProtocolError, match=problem):
        Framer().receive_data(raw)


def test_version_mismatch_after_negotiation() -> None:
    framer = Framer()
    framer.expected_version = OFP13
    with pytest.raises(RemoteProtocolError, match="differs from the negotiated"):
        framer.receive_data(simple_message(OFP10, OFPT_ECHO_REQUEST, 1))


def test_incomplete_message_waits_for_more() -> None:
    framer = Framer()
    assert framer.receive_data(simple_message(OFP13, OFPT_ECHO_REQUEST, 9, b"x" * 100)[:50]) == []
    assert framer.pending_bytes == 50


def _as_message(raw: bytes) -> Message:
    return Framer().receive_data(raw)[0]


def test_negotiation_uses_bitmaps_when_both_have_them() -> None:
    ours = frozenset({OFP10, OFP13})
    theirs = _as_message(hello(frozenset({OFP10, OFP13, OFP15})))
    assert peer_versions(theirs) == {OFP10, OFP13, OFP15}
    assert negotiate(ours, theirs) == OFP13


def test_negotiation_without_bitmap_means_every_version_up_to_the_header() -> None:
    assert negotiate(frozenset({OFP10, OFP13}), _as_message(simple_message(OFP10, OFPT_HELLO, 0))) == OFP10
    assert negotiate(frozenset({OFP13}), _as_message(simple_message(OFP10, OFPT_HELLO, 0))) is None


def test_hello_bitmap_parses_with_os_ken() -> None:
    from os_ken.ofproto import ofproto_protocol
    from os_ken.ofproto import ofproto_v1_3_parser as p

    raw = hello(frozenset({OFP10, OFP13}))
    msg = p.OFPHello.parser(ofproto_protocol.ProtocolDesc(OFP13), OFP13, OFPT_HELLO, len(raw), 0, raw)
    assert msg.elements[0].versions == [OFP10, OFP13]


@given(st.binary(max_size=300))
def test_framer_never_raises_anything_but_remote_errors(data: bytes) -> None:
    try:
        Framer().receive_data(data)
    except RemoteProtocolError:
        pass


def test_negotiation_without_bitmap_takes_the_lower_header_version_or_fails() -> None:
    ours = frozenset({OFP10, OFP13, OFP15})
    # A 1.2-only peer: the lower header version is 1.2, which we do not speak.
    assert negotiate(ours, _as_message(simple_message(0x03, OFPT_HELLO, 0))) is None
    assert negotiate(ours, _as_message(simple_message(OFP13, OFPT_HELLO, 0))) == OFP13
    assert negotiate(frozenset({OFP10, OFP13}), _as_message(simple_message(OFP15, OFPT_HELLO, 0))) == OFP13
