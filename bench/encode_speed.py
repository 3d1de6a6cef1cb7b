"""Messages per second: os-ken build+serialize vs the hand-built templates of openflow/flows.py.

The os-ken figure is the cheapest os-ken path (action objects built once, only the message built
and serialized per packet), so the speedup is the templates' own. Run:
    PYTHONPATH=. python bench/encode_speed.py [seconds-per-case]   (from the repo root)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from os_ken.ofproto import ofproto_protocol

from ovs_sriov_proxy.openflow import flows
from ovs_sriov_proxy.rules.model import Match, Output, SetField

ACTIONS = (
    SetField("eth_dst", 0x020000000001),
    SetField("vlan_vid", 0x1000 | 10),
    Output(2),
)
MATCH = Match.from_fields(
    {
        "in_port": (1, 0xFFFFFFFF),
        "eth_dst": (0x020000000002, 0xFFFFFFFFFFFF),
        "eth_type": (0x0800, 0xFFFF),
        "ip_proto": (17, 0xFF),
        "ipv4_dst": (0x0A000001, 0xFFFFFFFF),
        "udp_dst": (4789, 0xFFFF),
    }
)
FRAME = bytes(range(256)) * 4  # 1 KiB packet
VERSIONS = {"1.0": flows.OF10, "1.3": flows.OF13, "1.4": flows.OF14, "1.5": flows.OF15}


def rate(fn: Callable[[int], object], seconds: float) -> float:
    """Calls per second of fn(i), measured over about `seconds`."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(200):
            fn(n + i)
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def osken_packet_out(version: int) -> Callable[[int], bytes]:
    dp = ofproto_protocol.ProtocolDesc(version)
    parser = dp.ofproto_parser
    actions = flows.encode_actions(ACTIONS, version)

    def build(xid: int) -> bytes:
        if version == flows.OF15:
            msg = parser.OFPPacketOut(
                dp, flows.NO_BUFFER, parser.OFPMatch(in_port=1), actions, FRAME
            )
        else:
            msg = parser.OFPPacketOut(dp, flows.NO_BUFFER, 1, actions, FRAME)
        msg.set_xid(xid)
        msg.serialize()
        return bytes(msg.buf)

    return build


def osken_flow_add(version: int) -> Callable[[int], bytes]:
    dp = ofproto_protocol.ProtocolDesc(version)
    ofp, parser = dp.ofproto, dp.ofproto_parser
    actions = flows.encode_actions(ACTIONS, version)

    def build(xid: int) -> bytes:
        # Built per flow, as every caller without a template does.
        match = flows.encode_match(MATCH, version)
        if version == flows.OF10:
            msg = parser.OFPFlowMod(dp, match, 1, ofp.OFPFC_ADD, 10, 0, 100, xid, ofp.OFPP_NONE,
                                    ofp.OFPFF_SEND_FLOW_REM, actions)  # fmt: skip
        else:
            inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
            msg = parser.OFPFlowMod(dp, cookie=1, idle_timeout=10, priority=100, buffer_id=xid,
                                    out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                                    flags=ofp.OFPFF_SEND_FLOW_REM, match=match,
                                    instructions=inst)  # fmt: skip
        msg.set_xid(xid)
        msg.serialize()
        return bytes(msg.buf)

    return build


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    print(
        f"{'message':<22}{'version':<9}{'os-ken msg/s':>14}{'template msg/s':>16}{'speedup':>9}"
    )
    for label, version in VERSIONS.items():
        po = flows.PacketOutTemplate(ACTIONS, version)
        fa = flows.FlowAddTemplate(
            version, MATCH, ACTIONS, priority=100, cookie=1, idle_timeout=10
        )
        cases = (
            (
                "PACKET_OUT (1 KiB)",
                osken_packet_out(version),
                lambda x, t=po: t.render(x, 1, data=FRAME),
            ),
            ("FLOW_MOD add", osken_flow_add(version), lambda x, t=fa: t.render(x, x)),
        )
        for name, peer, ours in cases:
            # Same bytes, or the comparison would be moot.
            assert peer(7) == ours(7), (name, label)
            peer_rate, our_rate = rate(peer, seconds), rate(ours, seconds)
            print(
                f"{name:<22}{label:<9}{peer_rate:>14,.0f}{our_rate:>16,.0f}"
                f"{our_rate / peer_rate:>8.1f}x"
            )


if __name__ == "__main__":
    main()
