"""The OVS sandbox itself, against real ovsdb-server, ovs-vswitchd and ovs-testcontroller."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ovs.flow.decoders import EthMask  # type: ignore[import-untyped]

from ovs_sriov_proxy import sandbox as sandbox_module
from ovs_sriov_proxy.sandbox import (
    OvsCommandError,
    OvsSandbox,
    SandboxError,
    arp_frame,
    free_port,
    read_pcap,
    tcp_frame,
    udp_frame,
    wait_until,
)

PROTOCOLS = ["OpenFlow10", "OpenFlow13"]
MAC_A = "00:00:00:00:00:0a"
MAC_B = "00:00:00:00:00:0b"
PORTS = {"p1": 1, "p2": 2, "p3": 3}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_flow_forwards_injected_frame(ovs: OvsSandbox, protocol: str) -> None:
    ovs.add_bridge("br0", protocols=[protocol], ports=PORTS, datapath_id=0xABC)
    ovs.ofctl("-O", protocol, "add-flow", "br0", "in_port=1 actions=output:2")
    to_p2, to_p3 = ovs.capture("p2"), ovs.capture("p3")
    before = ovs.port_tx_packets("br0", 2, protocol)
    sent = udp_frame(MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"sandbox")

    ovs.inject("p1", sent)

    wait_until(lambda: ovs.port_tx_packets("br0", "p2", protocol) == before + 1, 5, "port 2's tx count to rise by 1")
    assert to_p2.wait_frames(1) == [sent]
    assert to_p3.frames() == []
    assert ovs.port_tx_packets("br0", 3, protocol) == 0
    assert ovs.datapath_id("br0") == 0xABC


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dump_flows_parses(ovs: OvsSandbox, protocol: str) -> None:
    ovs.add_bridge("br0", protocols=[protocol], ports=PORTS)
    ovs.ofctl("-O", protocol, "add-flow", "br0", "in_port=1 actions=output:2")
    ovs.ofctl("-O", protocol, "add-flow", "br0", "priority=200,udp,in_port=3,tp_dst=53 actions=output:1,output:2")

    flows = sorted(ovs.dump_flows("br0", protocol), key=lambda flow: flow.match.get("priority", 32768))

    assert len(flows) == 2
    assert flows[0].match == {"priority": 200, "udp": True, "in_port": 3, "tp_dst": 53}
    assert flows[0].actions == [{"output": {"port": 1}}, {"output": {"port": 2}}]
    assert flows[1].match["in_port"] == 1
    assert flows[1].actions == [{"output": {"port": 2}}]
    assert flows[1].info["n_packets"] == 0
    assert ovs.dump_flows("br0", protocol, "--no-stats", "in_port=3")[0].match["tp_dst"] == 53


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_testcontroller_installs_flow(ovs: OvsSandbox, protocol: str, require_programs: Callable[..., None]) -> None:
    require_programs("ovs-testcontroller")
    port = free_port()
    # Controller first, then the bridge: the switch connects at once, no refused attempt.
    ovs.start_testcontroller(port, protocols=[protocol])
    ovs.add_bridge("br0", protocols=[protocol], ports=PORTS, controller=f"tcp:127.0.0.1:{port}")
    ovs.wait_connected("br0")
    to_p1 = ovs.capture("p1")

    # A learning switch floods A->B (B unknown) and learns A on port 1 ...
    ovs.inject("p1", udp_frame(MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 1, 2))
    wait_until(
        lambda: ovs.port_tx_packets("br0", 2, protocol) >= 1 and ovs.port_tx_packets("br0", 3, protocol) >= 1,
        10,
        "the flood of the first frame to ports 2 and 3",
    )
    # ... so B->A goes to port 1 and a flow for it is installed.
    reply = udp_frame(MAC_B, MAC_A, "10.0.0.2", "10.0.0.1", 2, 1)
    ovs.inject("p2", reply)

    def learned_flow() -> list[Any]:
        return [
            flow
            for flow in ovs.dump_flows("br0", protocol)
            if "dl_src" in flow.match
            and flow.match["dl_src"] == EthMask(MAC_B)
            and flow.match["dl_dst"] == EthMask(MAC_A)
        ]

    [flow] = wait_until(learned_flow, 10, f"ovs-testcontroller to install a B->A flow on an {protocol} bridge")
    assert flow.actions == [{"output": {"port": 1}}]
    assert flow.match["in_port"] == 2
    assert flow.info["idle_timeout"] == 60
    assert to_p1.wait_frames(1) == [reply]


def test_wait_connected_with_controller_started_late(ovs: OvsSandbox, require_programs: Callable[..., None]) -> None:
    require_programs("ovs-testcontroller")
    port = free_port()
    ovs.add_bridge("br0", ports=PORTS, controller=f"tcp:127.0.0.1:{port}")
    with pytest.raises(sandbox_module.WaitTimeout, match="br0's controller to connect"):
        ovs.wait_connected("br0", timeout=0.2)
    ovs.start_testcontroller(port)
    ovs.wait_connected("br0", timeout=10)
    assert ovs.controller_connected("br0")


def test_set_controller_is_out_of_band(ovs: OvsSandbox) -> None:
    ovs.add_bridge("br0", ports=PORTS)
    port = free_port()
    ovs.set_controller("br0", f"tcp:127.0.0.1:{port}")
    row = ovs.vsctl("--columns=target,connection_mode,max_backoff", "list", "Controller")
    assert f'"tcp:127.0.0.1:{port}"' in row
    assert "out-of-band" in row
    assert "1000" in row
    ovs.set_controller("br0", None)
    assert ovs.vsctl("get", "Bridge", "br0", "controller").strip() == "[]"


def test_hw_offload_flag(ovs: OvsSandbox) -> None:
    ovs.add_bridge("br0", ports=PORTS, hw_offload=True)
    assert ovs.vsctl("get", "Open_vSwitch", ".", "other_config:hw-offload").strip() == '"true"'
    assert ovs.vsctl("get", "Bridge", "br0", "datapath_type").strip() == "dummy"


def test_frames_match_ovs_own_packets(ovs: OvsSandbox) -> None:
    """Our frame builders agree byte for byte with what netdev-dummy builds from a flow string."""
    ovs.add_bridge("br0", ports=PORTS)
    ovs.ofctl("-O", "OpenFlow13", "add-flow", "br0", "in_port=1 actions=output:2")
    eth = f"eth(src={MAC_A},dst={MAC_B})"
    ip4 = "ipv4(src=10.0.0.1,dst=10.0.0.2,proto={},tos=0,ttl=64,frag=no)"
    ip6 = "ipv6(src=2001:db8::1,dst=2001:db8::2,label=0,proto={},tclass=0,hlimit=64,frag=no)"
    payload = bytes(range(64))  # netdev-dummy's filler for UDP (TCP gets none)
    cases = [
        (
            f"in_port(1),{eth},eth_type(0x0800),{ip4.format(17)},udp(src=1,dst=2)",
            udp_frame(MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 1, 2, payload),
        ),
        (
            f"in_port(1),{eth},eth_type(0x86dd),{ip6.format(17)},udp(src=1,dst=2)",
            udp_frame(MAC_A, MAC_B, "2001:db8::1", "2001:db8::2", 1, 2, payload),
        ),
        (
            f"in_port(1),{eth},eth_type(0x0800),{ip4.format(6)},tcp(src=1,dst=2),tcp_flags(syn)",
            tcp_frame(MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 1, 2, flags="S", window=0),
        ),
        (
            f"in_port(1),eth(src={MAC_A},dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806),"
            f"arp(sip=10.0.0.1,tip=10.0.0.2,op=1,sha={MAC_A},tha=00:00:00:00:00:00)",
            arp_frame(MAC_A, "10.0.0.1", "10.0.0.2"),
        ),
    ]
    for flow_string, built in cases:
        capture = ovs.capture("p2")
        ovs.inject("p1", flow_string)
        [from_ovs] = capture.wait_frames(1)
        capture.close()
        # netdev-dummy does not pad to the Ethernet minimum; our builder does.
        assert built[: len(from_ovs)] == from_ovs, flow_string
        assert built[len(from_ovs) :] == bytes(len(built) - len(from_ovs)), flow_string


def test_vlan_tagged_frame_keeps_tag(ovs: OvsSandbox) -> None:
    ovs.add_bridge("br0", ports=PORTS)
    ovs.ofctl("-O", "OpenFlow13", "add-flow", "br0", "in_port=1,dl_vlan=42 actions=output:3")
    capture = ovs.capture("p3")
    sent = udp_frame(MAC_A, MAC_B, "10.0.0.1", "10.0.0.2", 5, 6, vlan=42)
    ovs.inject("p1", sent)
    assert capture.wait_frames(1) == [sent]
    assert sent[12:16] == bytes.fromhex("8100002a")


def test_log_problems_reports_unexpected_lines(ovs: OvsSandbox) -> None:
    ovs.add_bridge("br0", ports=PORTS)
    ovs.vsctl("add-port", "br0", "bogus", "--", "set", "Interface", "bogus", "type=no-such-type")
    problems = wait_until(ovs.log_problems, 5, "a problem about the bogus port in the logs")
    assert any("bogus" in line for line in problems), problems
    ovs.allow_log(r"\bbogus\b", "this test adds a port of an unknown type on purpose")
    assert ovs.log_problems() == []


def test_command_error_carries_stderr(ovs: OvsSandbox) -> None:
    with pytest.raises(OvsCommandError, match=r'no row "nope" in table Bridge') as raised:
        ovs.vsctl("get", "Bridge", "nope", "name")
    assert raised.value.returncode == 1
    with pytest.raises(OvsCommandError, match="ovs-ofctl"):
        ovs.ofctl("dump-flows", "nope")
    assert "ovs-vswitchd" in ovs.appctl("version")
    assert "ovsdb-server" in ovs.appctl("version", target="ovsdb")


def test_stop_leaves_no_process(tmp_path: Path, require_programs: Callable[..., None]) -> None:
    require_programs()
    sandbox = OvsSandbox(tmp_path / "ovs")
    with sandbox:
        sandbox.add_bridge("br0", ports=PORTS)
        pids = [int((sandbox.directory / f"{name}.pid").read_text()) for name in ("ovsdb-server", "ovs-vswitchd")]
        assert all(_alive(pid) for pid in pids)
    assert not any(_alive(pid) for pid in pids)
    sandbox.stop()  # a second stop is harmless
    assert sandbox.log_problems() == []


def test_failed_start_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_programs: Callable[..., None]
) -> None:
    require_programs()
    sandbox = OvsSandbox(tmp_path / "ovs")
    real_spawn = OvsSandbox._spawn_daemon
    spawned: list[int] = []

    def spawn_then_fail(self: OvsSandbox, name: str, *args: object, **kwargs: object) -> object:
        daemon = real_spawn(self, name, *args, **kwargs)  # type: ignore[arg-type]
        spawned.append(daemon.process.pid)
        if name == "ovs-vswitchd":
            raise SandboxError("simulated failure after ovs-vswitchd started")
        return daemon

    monkeypatch.setattr(OvsSandbox, "_spawn_daemon", spawn_then_fail)
    with pytest.raises(SandboxError, match="simulated"):
        sandbox.start()
    assert len(spawned) == 2
    assert not any(_alive(pid) for pid in spawned)


def test_daemon_that_cannot_start_is_reported(tmp_path: Path, require_programs: Callable[..., None]) -> None:
    require_programs()
    sandbox = OvsSandbox(tmp_path / "ovs", schema=tmp_path / "missing.ovsschema")
    with pytest.raises(OvsCommandError, match=r"missing\.ovsschema"):
        sandbox.start()
    assert not sandbox.running


def test_read_pcap_ignores_a_partial_record() -> None:
    header = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
    record = struct.pack("<IIII", 0, 0, 3, 3) + b"abc"
    assert read_pcap(header + record + record[:10]) == [b"abc"]
    with pytest.raises(ValueError):
        read_pcap(b"x" * 24)
