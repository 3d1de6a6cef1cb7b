"""Cost of OpenFlow 1.0 <-> 1.3 translation per message (openflow/translate.py), next to the
cost of relaying the same message untranslated (an xid rewrite) in the same run.

The peer figure, where there is one, is os-ken alone building and serializing the message the
translation produces, from the same field values: what any os-ken-based translation would pay
at least (an os-ken controller pays it for every message it sends). Inputs are built once, with os-ken or switch_side.py, shaped like what real controllers and
OVS send: a FLOW_MOD with an exact L2/L3/L4 match and two actions, a PACKET_OUT with a 64-byte
frame, the bridge's FLOW_REMOVED and PORT_STATUS, a BARRIER, and a flow-statistics reply of
20 flows. Run:
    PYTHONPATH=. python bench/translate_speed.py [seconds-per-case]   (from the repo root)
"""

from __future__ import annotations

import functools
import struct
import sys
import time
from collections.abc import Callable

from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_0 as o10
from os_ken.ofproto import ofproto_v1_0_parser as p10
from os_ken.ofproto import ofproto_v1_3 as o13
from os_ken.ofproto import ofproto_v1_3_parser as p13

from ovs_sriov_proxy.openflow import switch_side
from ovs_sriov_proxy.openflow.framing import OFP10, OFP13
from ovs_sriov_proxy.openflow.translate import match_bytes, translate
from ovs_sriov_proxy.rules.model import Match

DP10 = ofproto_protocol.ProtocolDesc(OFP10)
DP13 = ofproto_protocol.ProtocolDesc(OFP13)
FRAME = bytes.fromhex("00000000000b00000000000a0800450000320001000040117ad60a0000010a000002"
                      "03e807d0001e0000") + bytes(22)  # 64 bytes, UDP
MATCH = Match.from_fields({"in_port": (1, 0xFFFFFFFF), "eth_dst": (0x0B, 0xFFFFFFFFFFFF),
                           "eth_type": (0x0800, 0xFFFF), "ip_proto": (17, 0xFF),
                           "ipv4_dst": (0x0A000002, 0xFFFFFFFF), "udp_dst": (2000, 0xFFFF)})


def build(msg: object) -> bytes:
    msg.serialize()  # type: ignore[attr-defined]
    return bytes(msg.buf)  # type: ignore[attr-defined]


def flow_mod13() -> bytes:
    return build(p13.OFPFlowMod(
        DP13, priority=100, idle_timeout=60, match=p13.OFPMatch(
            in_port=1, eth_dst="00:00:00:00:00:0b", eth_type=0x0800, ip_proto=17,
            ipv4_dst="10.0.0.2", udp_dst=2000),
        instructions=[p13.OFPInstructionActions(o13.OFPIT_APPLY_ACTIONS, [
            p13.OFPActionSetField(vlan_vid=0x1000 | 10), p13.OFPActionOutput(2)])]))


def flow_mod10() -> bytes:
    wildcards = o10.OFPFW_ALL & ~(o10.OFPFW_IN_PORT | o10.OFPFW_DL_DST | o10.OFPFW_DL_TYPE
                                  | o10.OFPFW_NW_PROTO | o10.OFPFW_NW_DST_MASK | o10.OFPFW_TP_DST)
    match = p10.OFPMatch(wildcards=wildcards, in_port=1, dl_dst=b"\0\0\0\0\0\x0b",
                         dl_type=0x0800, nw_proto=17, nw_dst=0x0A000002, tp_dst=2000)
    return build(p10.OFPFlowMod(DP10, match, 0, o10.OFPFC_ADD, 60, 0, 100, 0xFFFFFFFF,
                                o10.OFPP_NONE, 0, [p10.OFPActionVlanVid(10),
                                                   p10.OFPActionOutput(2)]))


def osken_flow_mod13() -> bytes:
    return flow_mod13()


def osken_flow_mod10() -> bytes:
    return flow_mod10()


def osken_packet_out10() -> bytes:
    return build(p10.OFPPacketOut(DP10, 0xFFFFFFFF, 1, [p10.OFPActionOutput(2)], FRAME))


def osken_packet_out13() -> bytes:
    return build(p13.OFPPacketOut(DP13, 0xFFFFFFFF, 1, [p13.OFPActionOutput(2)], FRAME))


def flow_stats13(count: int) -> bytes:
    match = bytearray()
    p13.OFPMatch(in_port=1, eth_dst="00:00:00:00:00:0b").serialize(match, 0)
    inst = bytearray()
    p13.OFPInstructionActions(o13.OFPIT_APPLY_ACTIONS, [p13.OFPActionOutput(2)]).serialize(inst, 0)
    entry = struct.pack("!HBxIIHHHH4xQQQ", 48 + len(match) + len(inst), 0, 1, 2, 100, 60, 0, 0,
                        0x4300 << 48, 3, 300) + bytes(match) + bytes(inst)
    return switch_side.multipart_reply(OFP13, 1, entry * count, 1)


Case = tuple[str, bytes, int, Callable[[], object] | None]
CASES: list[Case] = [
    ("FLOW_MOD 1.3 -> 1.0", flow_mod13(), OFP10, osken_flow_mod10),
    ("FLOW_MOD 1.0 -> 1.3", flow_mod10(), OFP13, osken_flow_mod13),
    ("PACKET_OUT 1.3 -> 1.0", osken_packet_out13(), OFP10, osken_packet_out10),
    ("PACKET_OUT 1.0 -> 1.3", osken_packet_out10(), OFP13, osken_packet_out13),
    ("PACKET_IN 1.3 -> 1.0", switch_side.packet_in(OFP13, buffer_id=7, total_len=64, in_port=1,
                                                   reason=0, data=FRAME), OFP10, None),
    ("FLOW_REMOVED 1.0 -> 1.3", switch_side.flow_removed(
        OFP10, cookie=1, priority=100, reason=0, match=match_bytes(MATCH, OFP10)), OFP13, None),
    ("PORT_STATUS 1.3 -> 1.0", switch_side.port_status(
        OFP13, reason=2, port=switch_side.PortDesc(3, "p3", "02:00:00:00:00:03")), OFP10, None),
    ("BARRIER_REQUEST 1.3 -> 1.0", build(p13.OFPBarrierRequest(DP13)), OFP10, None),
    ("FLOW stats reply, 20 flows, 1.3 -> 1.0", flow_stats13(20), OFP10, None),
]


def rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    relay = rate(lambda: switch_side.rewrite_xid(CASES[0][1], 5), seconds)
    print(f"{'message':42} {'µs/msg':>9} {'msgs/s':>10} {'os-ken alone µs':>16}")
    print(f"{'relay untranslated (xid rewrite)':42} {1e6 / relay:9.2f} {relay:10.0f}")
    for name, raw, to_version, reference in CASES:
        translate(raw, to_version)  # fail before timing if it cannot be translated
        per_second = rate(functools.partial(translate, raw, to_version), seconds)
        peer = f"{1e6 / rate(reference, seconds):16.1f}" if reference is not None else ""
        print(f"{name:42} {1e6 / per_second:9.1f} {per_second:10.0f} {peer}")


if __name__ == "__main__":
    main()
