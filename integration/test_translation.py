"""Version translation on real OVS: a controller and a bridge that speak different OpenFlow
versions (1.0 <-> 1.3), the proxy negotiating each side on its own and translating."""

from __future__ import annotations

import sys

import pytest
from test_core import add_bridge, proxy_config  # integration/ is on sys.path
from test_northbound import (
    CONTROLLER_TAG,
    OTHER_HOST,
    controller_flows,
    exchange_through_a_learning_switch,
    start_tiny,
)

from ovs_sriov_proxy.sandbox import free_port, tcp_listening, wait_until

# (the controller's version for tiny_controller.py, its OVS name, the bridge's OVS name)
CROSSED = [("1.3", "OpenFlow13", "OpenFlow10"), ("1.0", "OpenFlow10", "OpenFlow13")]


def start(ovs, proxy_factory, tmp_path, controller_port: int, bridge_protocol: str,
          controller_protocols: str = ""):
    port = free_port()
    config = proxy_config(port, tmp_path / "state", [])
    config += f'[[controllers]]\nname = "c"\ntarget = "tcp:127.0.0.1:{controller_port}"\n'
    config += controller_protocols
    proxy = proxy_factory(config)
    add_bridge(ovs, "br0", bridge_protocol, port)
    return proxy


@pytest.mark.parametrize("controller_version, controller_protocol, bridge_protocol", CROSSED)
def test_a_controller_of_the_other_version_installs_flows_that_forward(
        ovs, proxy_factory, tmp_path, controller_version, controller_protocol,
        bridge_protocol) -> None:
    """The answer is a FLOW_MOD in the controller's version carrying the proxy's buffer id:
    translated, installed on the bridge (visible in dump-flows in the bridge's own version),
    the packet released through it, and the flow learned."""
    controller, _ = start_tiny(ovs, "c", "--version", controller_version, "--answer", "flow-mod",
                               "--output", "2", "--idle-timeout", "60")
    proxy = start(ovs, proxy_factory, tmp_path, controller, bridge_protocol)
    proxy.wait_log(f"controller c connected (OpenFlow 0x{0x04 if controller_version == '1.3' else 0x01:02x})")
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", OTHER_HOST)
    assert out2.wait_frames(1) == [OTHER_HOST]
    flows = wait_until(lambda: controller_flows(ovs, "br0", bridge_protocol), 5,
                       "the translated flow on the bridge")
    assert len(flows) == 1
    assert "priority=100" in flows[0] and "dl_dst=00:00:00:00:00:0b" in flows[0]
    assert "in_port=1" in flows[0] and "idle_timeout=60" in flows[0]
    assert flows[0].rstrip().endswith("actions=output:2")
    # The next packet of that flow is switched by the bridge itself: had it gone through the
    # proxy, its PACKET_IN would be counted before the frame left.
    ovs.inject("br0-p1", OTHER_HOST)
    assert out2.wait_frames(2) == [OTHER_HOST] * 2
    proxy.stop()
    log = proxy.log_text()
    assert "won_by:c=1" in log and "learned=1" in log and "translated_down=" in log
    assert " packet_ins=1 " in log


@pytest.mark.parametrize("controller_version, controller_protocol, bridge_protocol", CROSSED)
def test_a_packet_out_of_the_other_version_is_applied(ovs, proxy_factory, tmp_path,
                                                      controller_version, controller_protocol,
                                                      bridge_protocol) -> None:
    controller, _ = start_tiny(ovs, "c", "--version", controller_version, "--output", "3")
    proxy = start(ovs, proxy_factory, tmp_path, controller, bridge_protocol)
    proxy.wait_log("controller c connected")
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    ovs.inject("br0-p1", OTHER_HOST)
    assert out3.wait_frames(1) == [OTHER_HOST]
    assert out2.frames() == []
    assert controller_flows(ovs, "br0", bridge_protocol) == []  # a packet-out installs nothing


def test_ovs_testcontroller_speaking_1_0_drives_a_1_3_bridge(ovs, proxy_factory,
                                                            tmp_path) -> None:
    """ovs-testcontroller offers OpenFlow 1.0 only: the learning switch floods the first
    packet, installs an exact-match 1.0 flow for the reply, which the proxy installs in 1.3."""
    controller = free_port()
    ovs.start_testcontroller(controller, protocols=("OpenFlow10",))
    proxy = start(ovs, proxy_factory, tmp_path, controller, "OpenFlow13")
    proxy.wait_log("controller c connected (OpenFlow 0x01)")
    exchange_through_a_learning_switch(ovs)
    flows = wait_until(lambda: controller_flows(ovs, "br0", "OpenFlow13"), 5,
                       "the controller's flow, translated to 1.3")
    # The 1.0 exact match, without the fields 1.3 refuses for lack of prerequisites.
    assert ("udp,in_port=2,vlan_tci=0x0000/0x1fff,dl_src=00:00:00:00:00:0b,"
            "dl_dst=00:00:00:00:00:0a,nw_src=10.0.0.2,nw_dst=10.0.0.1,nw_tos=0,tp_src=2000,"
            "tp_dst=1000 actions=output:1") in flows[0]
    assert f"cookie=0x{CONTROLLER_TAG:x}" in flows[0]
    proxy.stop()
    log = proxy.log_text()
    assert "won_by:c=2" in log and "learned=1" in log and "translated_down=" in log
    assert "untranslatable" not in log


def test_protocols_restrict_what_a_controller_is_offered(ovs, proxy_factory, tmp_path) -> None:
    """A controller configured for OpenFlow 1.0 only, on a 1.3 bridge, is offered 1.0 and
    translated for; one configured for 1.4 only cannot be offered anything there."""
    controller, _ = start_tiny(ovs, "c", "--version", "1.3")
    proxy = start(ovs, proxy_factory, tmp_path, controller, "OpenFlow13",
                  'protocols = ["OpenFlow14"]\n')
    proxy.wait_log("controller c speaks none of the versions")
    proxy.stop()


def test_a_controller_speaking_both_versions_gets_the_bridges_own(ovs, proxy_factory,
                                                                 tmp_path) -> None:
    """No translation when none is needed: ovs-testcontroller offering 1.0 and 1.3 is spoken
    to in 1.0 on a 1.0 bridge, though the highest common version would be 1.3."""
    controller = free_port()
    ovs.start_testcontroller(controller, protocols=("OpenFlow10", "OpenFlow13"))
    proxy = start(ovs, proxy_factory, tmp_path, controller, "OpenFlow10")
    proxy.wait_log("controller c connected (OpenFlow 0x01)")
    exchange_through_a_learning_switch(ovs)
    wait_until(lambda: controller_flows(ovs, "br0", "OpenFlow10"), 5, "the controller's flow")
    proxy.stop()
    assert "translated_" not in proxy.log_text()


# A controller that speaks OpenFlow 1.3 only and, once connected, sends a FLOW_MOD with
# goto_table (which OpenFlow 1.0 cannot carry), then a plain one and a barrier. It writes every
# ERROR and BARRIER_REPLY it gets to the file named by its second argument.
GOTO_CONTROLLER = r"""
import socket, struct, sys
from os_ken.ofproto import ofproto_protocol, ofproto_v1_3 as ofp
dp = ofproto_protocol.ProtocolDesc(0x04)
p = dp.ofproto_parser

def raw(msg, xid):
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)

server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
out = open(sys.argv[2], "a", buffering=1)
conn, _ = server.accept()
conn.sendall(raw(p.OFPHello(dp), 1))
buffer = b""
while True:
    data = conn.recv(65536)
    if not data:
        break
    buffer += data
    while len(buffer) >= 8 and len(buffer) >= struct.unpack_from("!H", buffer, 2)[0]:
        length = struct.unpack_from("!H", buffer, 2)[0]
        msg, buffer = buffer[:length], buffer[length:]
        kind, xid = msg[1], struct.unpack_from("!I", msg, 4)[0]
        if kind == 0:  # HELLO: go
            conn.sendall(raw(p.OFPFlowMod(dp, priority=50, match=p.OFPMatch(in_port=1),
                                          instructions=[p.OFPInstructionGotoTable(1)]), 0x99)
                         + raw(p.OFPFlowMod(dp, priority=60, match=p.OFPMatch(in_port=1),
                                            instructions=[p.OFPInstructionActions(
                                                ofp.OFPIT_APPLY_ACTIONS,
                                                [p.OFPActionOutput(2)])]), 0x9A)
                         + raw(p.OFPBarrierRequest(dp), 0x9B))
        elif kind == 2:  # ECHO_REQUEST
            conn.sendall(msg[:1] + b"\x03" + msg[2:])
        elif kind == 1:
            print("error", xid, *struct.unpack_from("!HH", msg, 8), file=out)
        elif kind == 21:
            print("barrier", xid, file=out)
"""


def test_what_1_0_cannot_carry_is_answered_with_an_error_and_never_reaches_the_bridge(
        ovs, proxy_factory, tmp_path) -> None:
    script, heard = tmp_path / "goto_controller.py", tmp_path / "heard.txt"
    script.write_text(GOTO_CONTROLLER)
    heard.write_text("")
    controller = free_port()
    ovs.spawn("goto", [sys.executable, str(script), str(controller), str(heard)],
              ready=lambda: tcp_listening("127.0.0.1", controller))
    proxy = start(ovs, proxy_factory, tmp_path, controller, "OpenFlow10")
    lines = wait_until(lambda: heard.read_text().splitlines()
                       if "barrier" in heard.read_text() else None, 10, "the barrier reply")
    # BAD_INSTRUCTION / UNSUP_INST for the goto_table, under its own xid; the barrier after the
    # plain FLOW_MOD comes back too, so the bridge had nothing to refuse.
    assert lines == [f"error {0x99} 3 1", f"barrier {0x9B}"]
    flows = controller_flows(ovs, "br0", "OpenFlow10")
    assert len(flows) == 1 and "priority=60,in_port=1 actions=output:2" in flows[0]
    proxy.stop()
    assert "cannot carry, answered with an error" in proxy.log_text()
