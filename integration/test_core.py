"""The proxy as the controller of real OVS bridges (dummy datapath): misses answered from rules."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from test_control import counter  # integration/ is on sys.path

from ovs_sriov_proxy.sandbox import OvsSandbox, free_port, udp_frame, wait_until

PROXY_COOKIE_TAG = 0x5052  # the top 16 bits of every cookie the proxy gives its own flows
PROTOCOLS = ["OpenFlow10", "OpenFlow13"]


def proxy_config(port: int, state_dir: Path, rules: list[str], extra: str = "",
                 listen: list[str] | None = None) -> str:
    targets = listen or [f"ptcp:{port}:127.0.0.1"]
    lines = [
        "[proxy]",
        "listen = [" + ", ".join(f'"{t}"' for t in targets) + "]",
        f'state_dir = "{state_dir}"',
        f'control_socket = "{state_dir / "proxy.ctl"}"',  # not the machine-wide default path
        "hello_timeout = 1.0",
        "echo_interval = 1.0",
        "dead_interval = 3.0",
        extra,
    ]
    for flow in rules:
        lines += ["[[rules]]", f'flow = "{flow}"']
    return "\n".join(lines) + "\n"


def sip(port: int, dst: str = "10.0.0.2", src_mac: str = "00:00:00:00:00:01") -> bytes:
    return udp_frame(src_mac, "00:00:00:00:00:02", "10.0.0.1", dst, 40000, port, b"hello")


def proxy_flows(ovs: OvsSandbox, bridge: str, protocol: str) -> list:
    return [f for f in ovs.dump_flows(bridge, protocol)
            if int(f.info.get("cookie", 0)) >> 48 == PROXY_COOKIE_TAG]


def add_bridge(ovs: OvsSandbox, name: str, protocol: str, port: int, dpid: int = 1) -> None:
    ovs.add_bridge(name, protocols=(protocol,), datapath_id=dpid,
                   ports={f"{name}-p1": 1, f"{name}-p2": 2, f"{name}-p3": 3},
                   controller=f"tcp:127.0.0.1:{port}")
    ovs.wait_connected(name)
    if protocol != "OpenFlow10":
        # The hello is not enough: until the proxy's table-miss flow is in, a 1.3+ bridge
        # drops misses, and a frame injected then would be lost without a trace.
        wait_until(lambda: ovs.dump_flows(name, protocol, "table=0"), 10,
                   f"{name}'s table-miss flow")


@pytest.mark.parametrize("protocol", [*PROTOCOLS, "OpenFlow14", "OpenFlow15"])
def test_miss_is_answered_from_a_local_rule(ovs, proxy_factory, tmp_path, protocol) -> None:
    port = free_port()
    proxy_factory(proxy_config(port, tmp_path / "state",
                               ["priority=100,in_port=1,udp,tp_dst=5060 actions=output:2"]))
    add_bridge(ovs, "br0", protocol, port)
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    frame = sip(5060)
    ovs.inject("br0-p1", frame)
    assert out2.wait_frames(1) == [frame]
    # Plain lines: ovs.flow cannot parse OVS's OpenFlow 1.5 dump format ("send_flow_rem idle_age").
    lines = wait_until(lambda: [line for line in ovs.ofctl("-O", protocol, "dump-flows", "br0")
                                .splitlines() if "cookie=0x5052" in line], 5, "the proxy's flow")
    assert len(lines) == 1
    assert lines[0].rstrip().endswith(" priority=100,udp,in_port=1,tp_dst=5060 actions=output:2")
    # The second frame is forwarded by the installed flow itself.
    ovs.inject("br0-p1", frame)
    assert out2.wait_frames(2) == [frame, frame]
    assert out3.frames() == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_higher_priority_rule_is_never_shadowed(ovs, proxy_factory, tmp_path, protocol) -> None:
    port = free_port()
    proxy_factory(proxy_config(port, tmp_path / "state", [
        "priority=10,udp actions=output:2",
        "priority=20,udp,nw_dst=10.0.0.9 actions=output:3",
    ]))
    add_bridge(ovs, "br0", protocol, port)
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    ordinary = sip(53, dst="10.0.0.1")
    ovs.inject("br0-p1", ordinary)
    out2.wait_frames(1)
    wait_until(lambda: proxy_flows(ovs, "br0", protocol), 5, "the low-priority rule's flow")
    # Had the proxy installed plain "udp actions=output:2", this frame would leave on p2.
    special = sip(53, dst="10.0.0.9")
    ovs.inject("br0-p1", special)
    assert out3.wait_frames(1) == [special]
    assert out2.frames() == [ordinary]


@pytest.mark.parametrize("fallback, expect_flood", [("drop", False), ("flood", True),
                                                     ("normal", True)])
def test_miss_without_rule_uses_the_fallback(ovs, proxy_factory, tmp_path, fallback,
                                             expect_flood) -> None:
    port = free_port()
    proxy = proxy_factory(proxy_config(port, tmp_path / "state",
                                       ["priority=100,in_port=3,udp actions=output:1"],
                                       extra=f'miss_fallback = "{fallback}"'))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    frame = sip(9999)
    ovs.inject("br0-p1", frame)
    if expect_flood:
        assert out2.wait_frames(1) == [frame] and out3.wait_frames(1) == [frame]
    else:
        # A drop leaves no trace on the wire; prove the miss was handled, then that nothing left.
        wait_until(lambda: counter(tmp_path / "state" / "proxy.ctl", "br0", "fallback_drop") == 1,
                   10, "the miss dropped")
        proxy.stop()
        assert out2.frames() == [] and out3.frames() == []
    assert proxy_flows(ovs, "br0", "OpenFlow13") == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("timeout", ["idle_timeout", "hard_timeout"])
def test_timeouts_expire_and_the_rule_answers_again(ovs, proxy_factory, tmp_path, protocol,
                                                    timeout) -> None:
    port = free_port()
    proxy = proxy_factory(proxy_config(port, tmp_path / "state",
                                       [f"priority=100,udp,{timeout}=1 actions=output:2"]))
    add_bridge(ovs, "br0", protocol, port)
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", sip(1))
    out2.wait_frames(1)
    flows = wait_until(lambda: proxy_flows(ovs, "br0", protocol), 5, "the installed flow")
    assert flows[0].info[timeout] == 1
    if timeout == "hard_timeout":  # traffic does not keep a hard-timed flow alive
        for _ in range(3):
            ovs.inject("br0-p1", sip(1))
    wait_until(lambda: not proxy_flows(ovs, "br0", protocol), 10, "the flow to expire")
    ovs.inject("br0-p1", sip(1))
    wait_until(lambda: proxy_flows(ovs, "br0", protocol), 5, "the flow installed again")
    proxy.stop()
    assert "flows_removed=" in proxy.log_text()  # FLOW_REMOVED reached the proxy and was counted


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reload_removes_stale_flows_and_shadowing_ones(ovs, proxy_factory, tmp_path,
                                                       protocol) -> None:
    port = free_port()
    state = tmp_path / "state"
    proxy = proxy_factory(proxy_config(port, state, [
        "priority=10,udp actions=output:2",
        "priority=50,in_port=1,udp,tp_dst=7 actions=output:3",
    ]))
    add_bridge(ovs, "br0", protocol, port)
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    ovs.inject("br0-p1", sip(7))
    out3.wait_frames(1)
    ovs.inject("br0-p1", sip(8))
    out2.wait_frames(1)
    wait_until(lambda: len(proxy_flows(ovs, "br0", protocol)) == 2, 5, "both rules' flows")
    # Drop the tp_dst=7 rule, add one above the udp rule for tp_dst=8.
    proxy.config_path.write_text(proxy_config(port, state, [
        "priority=10,udp actions=output:2",
        "priority=60,udp,tp_dst=8 actions=output:1",
    ]))
    os.kill(proxy.pid, signal.SIGHUP)
    proxy.wait_log("reloaded")
    wait_until(lambda: proxy_flows(ovs, "br0", protocol) == [], 5,
               "the removed rule's flow and the now-shadowing udp flow to go")
    out1 = ovs.capture("br0-p1")
    ovs.inject("br0-p3", sip(8))
    assert out1.wait_frames(1) == [sip(8)]


def _raw_peer(port: int, payload: bytes | None) -> socket.socket:
    peer = socket.create_connection(("127.0.0.1", port), timeout=5)
    if payload is not None:
        peer.sendall(payload)
    return peer


def _closed_by_proxy(peer: socket.socket) -> bool:
    peer.settimeout(5)
    try:
        while peer.recv(4096):
            pass
    except (TimeoutError, ConnectionResetError):
        return False
    return True


def test_malformed_peers_lose_their_session_and_nobody_else_does(ovs, proxy_factory,
                                                                 tmp_path) -> None:
    port = free_port()
    proxy = proxy_factory(proxy_config(port, tmp_path / "state",
                                       ["priority=1,udp actions=output:2"]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    hello13 = struct.pack("!BBHI", 4, 0, 8, 1)
    bad_peers = {
        "garbage": _raw_peer(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "bad version": _raw_peer(port, struct.pack("!BBHI", 0x63, 0, 8, 1)),
        "short length": _raw_peer(port, hello13 + struct.pack("!BBHI", 4, 2, 3, 2)),
        "oversized then truncated": _raw_peer(port, hello13 + struct.pack("!BBHI", 4, 10, 0xFFFF, 3)
                                              + b"\0" * 100),
        "silent": _raw_peer(port, None),
    }
    for name in ("garbage", "bad version", "short length", "silent", "oversized then truncated"):
        assert _closed_by_proxy(bad_peers[name]), f"{name} peer was not disconnected"
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", sip(5))
    assert out2.wait_frames(1) == [sip(5)]
    log = proxy.wait_log("no HELLO within")
    assert "not OpenFlow" in log and "shorter than a header" in log
    assert "no features reply within" in log  # the peer that stalled mid-message after its HELLO
    for peer in bad_peers.values():
        peer.close()
    assert proxy.process.poll() is None


def test_many_bridges_of_both_versions_at_once(ovs, proxy_factory, tmp_path) -> None:
    port = free_port()
    proxy_factory(proxy_config(port, tmp_path / "state", ["priority=5,udp actions=output:3"]))
    names = [f"br{i}" for i in range(4)]
    for i, name in enumerate(names):
        ovs.add_bridge(name, protocols=(PROTOCOLS[i % 2],), datapath_id=i + 1,
                       ports={f"{name}-p1": 1, f"{name}-p3": 3},
                       controller=f"tcp:127.0.0.1:{port}")
    for name in names:
        ovs.wait_connected(name)
    captures = {name: ovs.capture(f"{name}-p3") for name in names}
    for name in names:
        ovs.inject(f"{name}-p1", sip(77))
    for name in names:
        assert captures[name].wait_frames(1) == [sip(77)]


def test_bridge_scoped_rule_applies_only_to_its_bridge(ovs, proxy_factory, tmp_path) -> None:
    port = free_port()
    config = proxy_config(port, tmp_path / "state", ["priority=5,udp actions=output:3"])
    config += '[[rules]]\nflow = "priority=9,udp actions=output:2"\nbridge = "br1"\n'
    proxy_factory(config)
    for i, name in enumerate(("br0", "br1")):
        add_bridge(ovs, name, "OpenFlow13", port, dpid=i + 1)
    out = {name: (ovs.capture(f"{name}-p2"), ovs.capture(f"{name}-p3")) for name in ("br0", "br1")}
    for name in ("br0", "br1"):
        ovs.inject(f"{name}-p1", sip(1))
    assert out["br0"][1].wait_frames(1) and out["br0"][0].frames() == []
    assert out["br1"][0].wait_frames(1) and out["br1"][1].frames() == []


def _pki(directory: Path) -> Path:
    subprocess.run(["ovs-pki", f"--dir={directory / 'pki'}", "init"], check=True,
                   capture_output=True, cwd=directory)
    for name, kind in (("ctl", "controller"), ("sw", "switch")):
        subprocess.run(["ovs-pki", f"--dir={directory / 'pki'}", "req+sign", name, kind],
                       check=True, capture_output=True, cwd=directory)
    return directory


def test_tls_and_unix_listeners(ovs, proxy_factory, tmp_path) -> None:
    pki = _pki(tmp_path)
    tls_port = free_port()
    # ovs-vswitchd refuses unix: controllers outside its run directory ("possibility for remote
    # exploit"), so the proxy's socket goes there, as it would under /var/run/openvswitch.
    unix_path = ovs.directory / "proxy.sock"
    config = proxy_config(0, tmp_path / "state", ["priority=5,udp actions=output:2"],
                          listen=[f"pssl:{tls_port}:127.0.0.1", f"punix:{unix_path}"])
    config += (
        "[proxy.tls]\n"
        f'private_key = "{pki / "ctl-privkey.pem"}"\n'
        f'certificate = "{pki / "ctl-cert.pem"}"\n'
        f'ca_cert = "{pki / "pki" / "switchca" / "cacert.pem"}"\n'
    )
    proxy = proxy_factory(config)
    proxy.wait_log("ready:")  # every listener is up, the TLS one included
    ovs.vsctl("set-ssl", str(pki / "sw-privkey.pem"), str(pki / "sw-cert.pem"),
              str(pki / "pki" / "controllerca" / "cacert.pem"))
    ovs.add_bridge("brtls", protocols=("OpenFlow13",), datapath_id=1,
                   ports={"brtls-p1": 1, "brtls-p2": 2}, controller=f"ssl:127.0.0.1:{tls_port}")
    ovs.add_bridge("brunix", protocols=("OpenFlow10",), datapath_id=2,
                   ports={"brunix-p1": 1, "brunix-p2": 2}, controller=f"unix:{unix_path}")
    ovs.wait_connected("brtls")
    ovs.wait_connected("brunix")
    for name in ("brtls", "brunix"):
        capture = ovs.capture(f"{name}-p2")
        ovs.inject(f"{name}-p1", sip(3))
        assert capture.wait_frames(1) == [sip(3)]
    assert "brtls" in proxy.log_text()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_flows_of_an_earlier_run_are_removed_and_foreign_flows_kept(ovs, proxy_factory, tmp_path,
                                                                    protocol) -> None:
    port = free_port()
    ovs.add_bridge("br0", protocols=(protocol,), datapath_id=1,
                   ports={"br0-p1": 1, "br0-p2": 2}, controller=f"tcp:127.0.0.1:{port}")
    # As if a previous proxy run had installed a flow, next to one from somebody else.
    ovs.ofctl("-O", protocol, "add-flow", "br0",
              "cookie=0x5052000000000063,priority=7,in_port=2,actions=output:1")
    ovs.ofctl("-O", protocol, "add-flow", "br0", "cookie=0x1234,priority=8,in_port=2,actions=drop")
    proxy_factory(proxy_config(port, tmp_path / "state", ["priority=1,udp actions=output:2"]))
    ovs.wait_connected("br0")
    wait_until(lambda: proxy_flows(ovs, "br0", protocol) == [], 5, "the stale proxy flow to go")
    cookies = [int(f.info.get("cookie", 0)) for f in ovs.dump_flows("br0", protocol)]
    assert 0x1234 in cookies
