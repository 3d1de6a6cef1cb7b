"""A reactive L2 learning switch written on os-ken's app framework (OpenFlow 1.3), for tests.

    python integration/osken_l2_app.py --listen PORT [--proactive PRIORITY:IN_PORT:OUT_PORT ...]
                                       [--group-flow IN_PORT:GROUP:METER:OUT_PORT ...]
                                       [--learn-flow IN_PORT:OUT_PORT ...]
                                       [--packet-out IN_PORT:OUT_PORT:HEX_FRAME ...]
                                       [--bundle] [--quiet] [--packet-outs-only]

os-ken 4.2.2 ships no `osken-manager`, so this script is its own manager: it registers the app,
parses os-ken's options and runs the app loop. The app learns source MACs from packet-ins; a
packet for a known destination gets a flow (in_port, eth_dst -> output) that carries the
packet-in's buffer id and so releases the packet; one for an unknown destination is flooded
with a PACKET_OUT. `--proactive` flows are installed as soon as the switch connects. One line
per decision goes to stderr ("flow ..." or "flood ...").

With `--bundle` the `--proactive` flows are sent in one bundle (ONF's extension, as neutron's
agent does on 1.3): open bundle 1, add each flow, commit; it prints "bundle committed" on the
switch's reply.

`--learn-flow` installs in_port=IN_PORT (priority 200) -> learn(table 0, priority 300,
hard_timeout 60, cookie 0x77, eth_dst=the packet's eth_src, no actions), output:OUT_PORT: the
bridge itself then installs a flow for every source it sees (as neutron's br-tun does).

`--packet-out` sends the frame as a PACKET_OUT on connect, as if it had come in on IN_PORT,
with output:OUT_PORT (after the flows, then a barrier: "barrier" is printed on its reply).

`--group-flow` makes it program groups and meters the way Faucet does: on connect it deletes
every group and meter, then adds meter METER, group GROUP (type all, output OUT_PORT) and a flow
in_port=IN_PORT -> meter METER, group GROUP; then it asks for its groups' and meters' ids and
prints them ("groups [...]", "meters [...]"). Errors from the switch are printed ("error ...").
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from os_ken.lib import hub

hub.patch(thread=False)  # what osken-manager did first: eventlet before anything else loads

from os_ken import cfg  # noqa: E402
from os_ken.base import app_manager  # noqa: E402
from os_ken.controller import ofp_event  # noqa: E402
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls  # noqa: E402
from os_ken.lib.packet import ethernet, packet  # noqa: E402
from os_ken.ofproto import ofproto_v1_3  # noqa: E402

FLOW_PRIORITY = 10
FLOW_IDLE_TIMEOUT = 30
PROACTIVE: list[tuple[int, int, int]] = []  # (priority, in_port, out_port), from the command line
GROUP_FLOWS: list[tuple[int, int, int, int]] = []  # (in_port, group, meter, out_port)
LEARN_FLOWS: list[tuple[int, int]] = []  # (in_port, out_port)
PACKET_OUTS: list[tuple[int, int, bytes]] = []  # (in_port, out_port, frame)


class LearningSwitch(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    quiet = False  # --quiet: no line per decision (benchmarks)
    packet_outs_only = False  # --packet-outs-only: answer with PACKET_OUTs, never a flow
    bundle = False  # --bundle: the proactive flows in one ONF bundle

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports_by_mac: dict[int, dict[str, int]] = {}  # datapath id -> MAC -> port

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, event: Any) -> None:
        """The usual table-miss flow: every miss to the controller, whole."""
        datapath = event.msg.datapath
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        datapath.send_msg(parser.OFPFlowMod(
            datapath, priority=0, match=parser.OFPMatch(),
            instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]))
        if self.bundle and PROACTIVE:
            datapath.send_msg(parser.ONFBundleCtrlMsg(datapath, 1, ofp.ONF_BCT_OPEN_REQUEST, 0, []))
        for priority, in_port, out_port in PROACTIVE:
            flow = parser.OFPFlowMod(
                datapath, priority=priority, match=parser.OFPMatch(in_port=in_port),
                instructions=[parser.OFPInstructionActions(
                    ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(out_port)])])
            if self.bundle:
                flow = parser.ONFBundleAddMsg(datapath, 1, 0, flow, [])
            datapath.send_msg(flow)
        if self.bundle and PROACTIVE:
            datapath.send_msg(parser.ONFBundleCtrlMsg(datapath, 1, ofp.ONF_BCT_COMMIT_REQUEST, 0,
                                                      []))
        if GROUP_FLOWS:
            self.program_groups(datapath)
        for in_port, out_port in LEARN_FLOWS:
            learn = parser.NXActionLearn(
                table_id=0, specs=[parser.NXFlowSpecMatch(src=("eth_src", 0), dst=("eth_dst", 0),
                                                          n_bits=48)],
                idle_timeout=0, hard_timeout=60, priority=300, cookie=0x77, flags=0,
                fin_idle_timeout=0, fin_hard_timeout=0)
            datapath.send_msg(parser.OFPFlowMod(
                datapath, priority=200, match=parser.OFPMatch(in_port=in_port),
                instructions=[parser.OFPInstructionActions(
                    ofp.OFPIT_APPLY_ACTIONS, [learn, parser.OFPActionOutput(out_port)])]))
        for in_port, out_port, frame in PACKET_OUTS:
            datapath.send_msg(parser.OFPPacketOut(
                datapath, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                actions=[parser.OFPActionOutput(out_port)], data=frame))
        if PACKET_OUTS:
            datapath.send_msg(parser.OFPBarrierRequest(datapath))
        self.say(f"switch {datapath.id:016x} connected")

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, event: Any) -> None:
        self.say("barrier")

    def program_groups(self, datapath: Any) -> None:
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        datapath.send_msg(parser.OFPGroupMod(datapath, ofp.OFPGC_DELETE, ofp.OFPGT_ALL,
                                             ofp.OFPG_ALL, []))
        datapath.send_msg(parser.OFPMeterMod(datapath, ofp.OFPMC_DELETE, 0, ofp.OFPM_ALL, []))
        for in_port, group, meter, out_port in GROUP_FLOWS:
            datapath.send_msg(parser.OFPMeterMod(datapath, ofp.OFPMC_ADD, ofp.OFPMF_PKTPS, meter,
                                                 [parser.OFPMeterBandDrop(rate=10000)]))
            bucket = parser.OFPBucket(actions=[parser.OFPActionOutput(out_port)])
            datapath.send_msg(parser.OFPGroupMod(datapath, ofp.OFPGC_ADD, ofp.OFPGT_ALL, group,
                                                 [bucket]))
            datapath.send_msg(parser.OFPFlowMod(
                datapath, priority=100, match=parser.OFPMatch(in_port=in_port),
                instructions=[parser.OFPInstructionMeter(meter),
                              parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                           [parser.OFPActionGroup(group)])]))
        datapath.send_msg(parser.OFPGroupDescStatsRequest(datapath, 0))
        datapath.send_msg(parser.OFPMeterConfigStatsRequest(datapath, 0, ofp.OFPM_ALL))

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def group_desc(self, event: Any) -> None:
        self.say(f"groups {sorted(desc.group_id for desc in event.msg.body)}")

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def meter_config(self, event: Any) -> None:
        self.say(f"meters {sorted(config.meter_id for config in event.msg.body)}")

    @set_ev_cls(ofp_event.EventONFBundleCtrlMsg, MAIN_DISPATCHER)
    def bundle_reply(self, event: Any) -> None:
        if event.msg.type == event.msg.datapath.ofproto.ONF_BCT_COMMIT_REPLY:
            self.say(f"bundle {event.msg.bundle_id} committed")

    # Also while os-ken is still in its config state: an error to what switch_features sent
    # may come back before it has moved on.
    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def switch_error(self, event: Any) -> None:
        self.say(f"error type {event.msg.type} code {event.msg.code}")

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, event: Any) -> None:
        msg = event.msg
        datapath = msg.datapath
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        in_port = msg.match["in_port"]
        frame = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if frame is None:
            return
        ports = self.ports_by_mac.setdefault(datapath.id, {})
        ports[frame.src] = in_port
        out_port = ports.get(frame.dst)
        if out_port is not None and self.packet_outs_only:
            actions = [parser.OFPActionOutput(out_port)]
        elif out_port is not None:
            actions = [parser.OFPActionOutput(out_port)]
            datapath.send_msg(parser.OFPFlowMod(
                datapath, priority=FLOW_PRIORITY, idle_timeout=FLOW_IDLE_TIMEOUT,
                buffer_id=msg.buffer_id, match=parser.OFPMatch(in_port=in_port, eth_dst=frame.dst),
                instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]))
            self.say(f"flow in_port={in_port} eth_dst={frame.dst} -> {out_port}")
            if msg.buffer_id != ofp.OFP_NO_BUFFER:
                return  # the flow releases the buffered packet
        else:
            actions = [parser.OFPActionOutput(ofp.OFPP_FLOOD)]
            self.say(f"flood in_port={in_port} eth_dst={frame.dst}")
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        datapath.send_msg(parser.OFPPacketOut(datapath, buffer_id=msg.buffer_id, in_port=in_port,
                                              actions=actions, data=data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--proactive", action="append", default=[],
                        metavar="PRIORITY:IN_PORT:OUT_PORT")
    parser.add_argument("--group-flow", action="append", default=[],
                        metavar="IN_PORT:GROUP:METER:OUT_PORT")
    parser.add_argument("--learn-flow", action="append", default=[], metavar="IN_PORT:OUT_PORT")
    parser.add_argument("--packet-out", action="append", default=[],
                        metavar="IN_PORT:OUT_PORT:HEX_FRAME")
    parser.add_argument("--bundle", action="store_true",
                        help="send the --proactive flows in one ONF bundle")
    parser.add_argument("--quiet", action="store_true", help="no line per decision")
    parser.add_argument("--packet-outs-only", action="store_true",
                        help="never install a flow: every packet is a miss (benchmarks)")
    args = parser.parse_args()
    LearningSwitch.quiet = args.quiet
    LearningSwitch.packet_outs_only = args.packet_outs_only
    LearningSwitch.bundle = args.bundle
    for text in args.proactive:
        priority, in_port, out_port = (int(part) for part in text.split(":"))
        PROACTIVE.append((priority, in_port, out_port))
    for text in args.learn_flow:
        in_port, out_port = (int(part) for part in text.split(":"))
        LEARN_FLOWS.append((in_port, out_port))
    for text in args.packet_out:
        in_port, out_port, frame = text.split(":")
        PACKET_OUTS.append((int(in_port), int(out_port), bytes.fromhex(frame)))
    for text in args.group_flow:
        in_port, group, meter, out_port = (int(part) for part in text.split(":"))
        GROUP_FLOWS.append((in_port, group, meter, out_port))
    cfg.CONF([f"--ofp-tcp-listen-port={args.listen}", "--ofp-listen-host=127.0.0.1"],
             project="os_ken")
    app_manager.AppManager.run_apps([__name__])


if __name__ == "__main__":
    main()
