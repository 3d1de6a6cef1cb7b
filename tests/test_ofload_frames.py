"""The load generator's switch-side bytes, checked with os-ken's parsers.

bench/ofload.py builds PACKET_IN, FEATURES_REPLY, PORT_DESC and HELLO with plain
struct for speed; os-ken is the independent reference here. The correlation path
(which buffer_id or sequence number a response carries back) is checked with
FLOW_MODs and PACKET_OUTs serialized by os-ken.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest
from os_ken.lib.packet import ethernet, ipv4, packet, udp
from os_ken.ofproto import ofproto_parser, ofproto_protocol

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ofload = _load("ofload")
responder = _load("responder")

VERSIONS = [ofload.OFP10, ofload.OFP13]


def parse(version: int, data: bytes):  # type: ignore[no-untyped-def]
    dp = ofproto_protocol.ProtocolDesc(version)
    v, msg_type, length, xid = struct.unpack_from("!BBHI", data)
    assert v == version and length == len(data)
    msg = ofproto_parser.msg(dp, v, msg_type, length, xid, data)
    assert msg is not None, "os-ken could not parse the message"
    return msg


def config(version: int, buffered: bool = True, **kw: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = {
        "host": "127.0.0.1", "port": 6653, "version": version, "switches": 1, "mode": "throughput",
        "window": 4, "seconds": 1.0, "warmup": 0.0, "loop": 1.0, "buffered": buffered, "flows": 8,
        "ports": 4, "frame_size": 64, "loss_timeout": 0.5, "connect_timeout": 5.0, "dpid_base": 1,
    }
    base.update(kw)
    return ofload.LoadConfig(**base)


def measuring_stats():  # type: ignore[no-untyped-def]
    stats = ofload.WorkerStats()
    stats.measure_start, stats.measure_end = 0, 1 << 62
    stats.loop_ns, stats.loop_counts = 1 << 62, [0]
    return stats


def split_messages(data: bytes) -> list[bytes]:
    out = []
    while data:
        length = struct.unpack_from("!H", data, 2)[0]
        out.append(data[:length])
        data = data[length:]
    return out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("buffered", [True, False])
def test_packet_in_parses_into_intended_fields(version: int, buffered: bool) -> None:
    cfg = config(version, buffered)
    switch = ofload.FakeSwitch(cfg, 0x2A, measuring_stats())
    pins = split_messages(switch.begin_streaming(now=0))
    assert len(pins) == cfg.window
    for i, raw in enumerate(pins):
        seq = i + 1
        msg = parse(version, raw)
        dp = msg.datapath
        assert msg.msg_type == dp.ofproto.OFPT_PACKET_IN
        assert msg.xid == 0
        assert msg.reason == dp.ofproto.OFPR_NO_MATCH
        assert msg.total_len == len(msg.data) == cfg.frame_size
        assert msg.buffer_id == (seq if buffered else ofload.NO_BUFFER)
        # Flow 0 comes in on the last port; the others on ports 1..ports-1.
        expected_port = cfg.ports if i == 0 else 1 + (i - 1) % (cfg.ports - 1)
        if version == ofload.OFP10:
            assert msg.in_port == expected_port
        else:
            assert msg.table_id == 0
            assert msg.cookie == 0  # what OVS 3.1 sends on a table miss
            assert list(msg.match.items()) == [("in_port", expected_port)]

        pkt = packet.Packet(msg.data)
        eth = pkt.get_protocol(ethernet.ethernet)
        ip = pkt.get_protocol(ipv4.ipv4)
        l4 = pkt.get_protocol(udp.udp)
        assert eth.ethertype == 0x0800
        assert ip.proto == 17 and ip.ttl == 64
        assert ip.csum == ipv4.ipv4.parser(ip.serialize(b"", None))[0].csum  # header checksum valid
        assert l4.src_port == 1024 + i and l4.dst_port == 5000
        payload = pkt.protocols[-1]
        if not buffered:
            assert struct.unpack_from("!I", payload)[0] == seq
        if i > 0:
            assert eth.dst == "02:00:00:2a:ff:ff"  # the 'server' learnt from flow 0
    src_macs = {packet.Packet(parse(version, r).data).get_protocol(ethernet.ethernet).src for r in pins}
    assert len(src_macs) == len(pins)  # varied source MACs


@pytest.mark.parametrize("version", VERSIONS)
def test_features_reply_and_port_desc(version: int) -> None:
    cfg = config(version, ports=3)
    switch = ofload.FakeSwitch(cfg, 0xABCDEF, measuring_stats())
    dp = ofproto_protocol.ProtocolDesc(version)
    request = dp.ofproto_parser.OFPFeaturesRequest(dp)
    request.xid = 77
    request.serialize()
    reply = switch.receive(bytes(request.buf), now=0)
    assert switch.ready
    msg = parse(version, reply)
    assert msg.msg_type == dp.ofproto.OFPT_FEATURES_REPLY
    assert msg.xid == 77
    assert msg.datapath_id == 0xABCDEF
    if version == ofload.OFP10:
        assert sorted(msg.ports) == [1, 2, 3]
        assert msg.ports[2].name == b"p2"
        return
    req = dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0)
    req.xid = 78
    req.serialize()
    msg = parse(version, switch.receive(bytes(req.buf), now=0))
    assert isinstance(msg, dp.ofproto_parser.OFPPortDescStatsReply)
    assert msg.xid == 78
    assert [p.port_no for p in msg.body] == [1, 2, 3]
    assert [p.name for p in msg.body] == [b"p1", b"p2", b"p3"]


def test_hello_13_carries_version_bitmap() -> None:
    msg = parse(ofload.OFP13, ofload.build_hello(ofload.OFP13))
    (element,) = msg.elements
    assert element.versions == [ofload.OFP13]
    assert parse(ofload.OFP10, ofload.build_hello(ofload.OFP10)).msg_type == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_control_requests_get_parseable_replies(version: int) -> None:
    switch = ofload.FakeSwitch(config(version), 5, measuring_stats())
    dp = ofproto_protocol.ProtocolDesc(version)
    p = dp.ofproto_parser
    for req, reply_cls in [
        (p.OFPEchoRequest(dp, data=b"ping"), p.OFPEchoReply),
        (p.OFPBarrierRequest(dp), p.OFPBarrierReply),
        (p.OFPGetConfigRequest(dp), p.OFPGetConfigReply),
        (p.OFPDescStatsRequest(dp, 0), p.OFPDescStatsReply),
    ]:
        req.xid = 9
        req.serialize()
        msg = parse(version, switch.receive(bytes(req.buf), now=0))
        assert isinstance(msg, reply_cls) and msg.xid == 9
    set_config = p.OFPSetConfig(dp, 0, 128)
    set_config.serialize()
    assert switch.receive(bytes(set_config.buf), now=0) == b""


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", ["flow_mod", "packet_out"])
def test_responses_built_by_os_ken_are_correlated(version: int, kind: str) -> None:
    stats = measuring_stats()
    switch = ofload.FakeSwitch(config(version, window=3), 1, stats)
    switch.begin_streaming(now=1000)
    dp = ofproto_protocol.ProtocolDesc(version)
    p, ofp = dp.ofproto_parser, dp.ofproto
    out_port = 2
    actions = [p.OFPActionOutput(out_port)]
    if kind == "packet_out":
        msg = p.OFPPacketOut(dp, buffer_id=2, in_port=1, actions=actions)
    elif version == ofload.OFP10:
        msg = p.OFPFlowMod(dp, match=p.OFPMatch(), cookie=0, command=ofp.OFPFC_ADD, buffer_id=2,
                           actions=actions)
    else:
        inst = [p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        msg = p.OFPFlowMod(dp, buffer_id=2, match=p.OFPMatch(in_port=1), instructions=inst)
    msg.serialize()
    replacement = switch.receive(bytes(msg.buf), now=1500)
    assert stats.responses == 1
    assert list(stats.latencies) == [500]
    assert sorted(switch.outstanding) == [1, 3, 4]  # 2 answered, 4 sent in its place
    assert parse(version, replacement).buffer_id == 4


@pytest.mark.parametrize("version", VERSIONS)
def test_unbuffered_packet_out_echoing_frame_is_correlated(version: int) -> None:
    stats = measuring_stats()
    switch = ofload.FakeSwitch(config(version, buffered=False, window=2), 1, stats)
    pins = split_messages(switch.begin_streaming(now=0))
    frame = parse(version, pins[1]).data  # seq 2
    dp = ofproto_protocol.ProtocolDesc(version)
    p = dp.ofproto_parser
    po = p.OFPPacketOut(dp, buffer_id=dp.ofproto.OFP_NO_BUFFER, in_port=1,
                        actions=[p.OFPActionOutput(2)], data=frame)
    po.serialize()
    switch.receive(bytes(po.buf), now=10)
    assert stats.responses == 1
    assert sorted(switch.outstanding) == [1, 3]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("buffered", [True, False])
def test_responder_answers_carry_the_packet_back(version: int, buffered: bool) -> None:
    """The trivial responder's answer parses with os-ken and is correlated by ofload."""
    stats = measuring_stats()
    switch = ofload.FakeSwitch(config(version, buffered=buffered, window=1), 1, stats)
    pin = switch.begin_streaming(now=0)
    sent: list[bytes] = []

    class Transport:
        def write(self, data: bytes) -> None:
            sent.append(data)

    proto = responder.Responder("packet-out", {"connections": 0, "packet_ins": 0})
    proto.transport = Transport()
    proto.version = version
    proto.fm_parts = responder.flow_mod_parts(version)
    target = proto.get_buffer(-1)
    target[:len(pin)] = pin
    proto.buffer_updated(len(pin))
    (answer,) = sent
    switch.receive(answer, now=5)
    assert stats.responses == 1
    # os-ken decodes no PACKET_OUT (controller->switch); compare with its encoder instead.
    dp = ofproto_protocol.ProtocolDesc(version)
    p = dp.ofproto_parser
    in_port = parse(version, pin).in_port if version == ofload.OFP10 else parse(version, pin).match["in_port"]
    data = None if buffered else parse(version, pin).data
    expected = p.OFPPacketOut(dp, buffer_id=1 if buffered else dp.ofproto.OFP_NO_BUFFER, in_port=in_port,
                              actions=[p.OFPActionOutput(2, max_len=0)], data=data)
    expected.xid = 0
    expected.serialize()
    assert answer == bytes(expected.buf)


@pytest.mark.parametrize("version", VERSIONS)
def test_responder_flow_mod_parses(version: int) -> None:
    head, tail = responder.flow_mod_parts(version)
    msg = parse(version, head + struct.pack("!I", 1234) + tail)
    assert msg.buffer_id == 1234
    assert msg.priority == 10
