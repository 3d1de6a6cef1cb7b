"""Network policies on a real bridge, against a real controller that tries to get past them."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from test_control import counter
from test_core import add_bridge, proxy_config
from test_northbound import start_tiny
from test_ovsdb import appctl, config, rules, show
from test_priority_bands import APP

from ovs_sriov_proxy.sandbox import OvsSandbox, free_port, tcp_listening, udp_frame, wait_until

A, B, C = "00:00:00:00:00:0a", "00:00:00:00:00:0b", "00:00:00:00:00:0c"
PROXY_TAG = 0x5052
POLICY = """
[[policies]]
name = "pci-to-web"
from_tag = "pci"
to_tag = "web"
"""


def flows(ovs: OvsSandbox, *match: str, protocol: str = "OpenFlow13") -> list[str]:
    return [line.strip() for line in ovs.ofctl("-O", protocol, "dump-flows", "br0",
                                                *match).splitlines() if "actions=" in line]


def policy_flows(ovs: OvsSandbox) -> list[str]:
    return [line for line in flows(ovs) if f"cookie=0x{PROXY_TAG:x}" in line
            and "priority=65535" in line]


def lines(path: Path, prefix: str) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_a_policy_holds_whatever_the_controller_programs(ovs, proxy_factory, tmp_path) -> None:
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1, "br0-p2": 2, "br0-p3": 3})
    ovs.vsctl("set", "Interface", "br0-p1", "external_ids:policy-tags=pci",
              f"external_ids:attached-mac={A}")
    ovs.vsctl("set", "Interface", "br0-p2", "external_ids:policy-tags=web",
              f"external_ids:attached-mac={B}")
    a_to_b = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"pci to web")
    a_to_c = udp_frame(A, C, "10.0.0.1", "10.0.0.3", 1000, 2000, b"pci to elsewhere")
    # The controller tries every way around the policy: a flow at the top priority sending all
    # of port 1 to port 2, and PACKET_OUTs of a pci-to-web frame "from port 1" and "from the
    # controller" (its source MAC is still the pci VM's).
    app_port = free_port()
    ovs.spawn("app", [sys.executable, str(APP), "--listen", str(app_port),
                      "--proactive", "65535:1:2", "--packet-out", f"1:2:{a_to_b.hex()}",
                      "--packet-out", f"{0xFFFFFFFD}:2:{a_to_b.hex()}"],
              ready=lambda: tcp_listening("127.0.0.1", app_port),
              allowed_log_lines=[r"^switch [0-9a-f]{16} connected$", r"^flow ", r"^flood ",
                                 r"^error ", r"^barrier$"],
              timeout=20)
    app_log = ovs.directory / "app.stderr"
    port = free_port()
    out2 = ovs.capture("br0-p2")
    controllers = (f'[[controllers]]\nname = "app"\ntarget = "tcp:127.0.0.1:{app_port}"\n'
                   'priority = 1\n')
    proxy = proxy_factory(config(port, tmp_path, ovs, extra=controllers, rules=POLICY))
    target = tmp_path / "proxy.ctl"

    # The policy's drop stands on the bridge before any packet asked for it, above the
    # controller's flow, which the proxy moved down from 65535.
    [drop] = wait_until(lambda: policy_flows(ovs), 15, "the policy's flow on br0")
    assert f"priority=65535,in_port=1,dl_dst={B} actions=drop" in drop
    [theirs] = wait_until(lambda: [f for f in flows(ovs, "in_port=1") if "cookie=0x4300" in f],
                          15, "the controller's flow")
    assert "priority=65534,in_port=1 actions=output:2" in theirs
    # Its PACKET_OUTs were refused with EPERM (BAD_REQUEST 1, code 5) and sent nothing.
    wait_until(lambda: lines(app_log, "barrier"), 15, "the app's barrier reply")
    assert lines(app_log, "error ") == ["error type 1 code 5"] * 2

    ovs.inject("br0-p1", a_to_b)  # dropped by the policy
    ovs.inject("br0-p1", a_to_c)  # not the policy's business: the controller's flow forwards it
    assert out2.wait_frames(1) == [a_to_c]  # frames are handled in order: a_to_b went nowhere
    listed = [r for r in rules(target) if r["origin"] == "policy"]
    assert [(r["bridge"], r["flow"]) for r in listed] == [
        ("br0", f"priority=65535,in_port=1,dl_dst={B} actions=drop")]

    # Deleted by hand on the bridge: the proxy puts it back. Deleted through the proxy: refused.
    pinned = counter(target, "br0", "pinned_flows")
    ovs.ofctl("-O", "OpenFlow13", "del-flows", "br0", f"in_port=1,dl_dst={B}")
    wait_until(lambda: counter(target, "br0", "pinned_flows") == pinned + 1, 10,
               "the policy's flow put back")
    assert len(policy_flows(ovs)) == 1
    refused = appctl(target, "proxy/del-rule", str(listed[0]["id"]))
    assert refused.returncode != 0 and "enforces a policy" in refused.stderr

    # The port is untagged: the policy no longer applies to it, and its flow goes.
    ovs.vsctl("remove", "Interface", "br0-p1", "external_ids", "policy-tags")
    wait_until(lambda: not policy_flows(ovs), 10, "the policy's flow gone")
    ovs.inject("br0-p1", a_to_b)
    assert out2.wait_frames(2) == [a_to_c, a_to_b]
    assert [b["name"] for b in show(target)["bridges"]] == ["br0"]
    proxy.stop()
    log = proxy.log_text()
    assert "policy_denied_packet_out:app=2" in log and "priority_clamped:app=1" in log


def test_a_policy_without_tags_holds_on_an_openflow_10_bridge(ovs, proxy_factory, tmp_path) -> None:
    """OpenFlow 1.0 has no cookie mask, so a 1.0 controller's modifies and deletes reach every
    flow: the proxy puts the policy's drop back after each of them. (A delete also brings a
    FLOW_REMOVED, a modify nothing.) The controller makes every flow output to port 2 when it
    connects, then sends every miss there too. No OVSDB here: a policy that names no tag needs
    none."""
    controller_port, _ = start_tiny(ovs, "tc", "--version", "1.0", "--on-connect", "modify-all")
    port = free_port()
    proxy = proxy_factory(
        proxy_config(port, tmp_path / "state", [])
        + f'[[controllers]]\nname = "tc"\ntarget = "tcp:127.0.0.1:{controller_port}"\n'
        + '[[policies]]\nname = "no-dns"\nmatch = "udp,tp_dst=53"\n')
    add_bridge(ovs, "br0", "OpenFlow10", port)
    proxy.wait_log("controller tc connected")
    target = tmp_path / "state" / "proxy.ctl"
    wait_until(lambda: counter(target, "br0", "pinned_flows") >= 2, 10,
               "the policy's flow put back after the controller's modify")
    [drop] = [line for line in flows(ovs, protocol="OpenFlow10") if "priority=65535" in line]
    assert "udp,tp_dst=53 actions=drop" in drop
    out2 = ovs.capture("br0-p2")
    dns = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 53, b"dns")
    web = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 80, b"web")
    ovs.inject("br0-p1", dns)  # dropped by the policy, though the controller would send it on
    ovs.inject("br0-p1", web)  # a miss: the controller sends it to port 2
    assert out2.wait_frames(1) == [web]
    proxy.stop()
    assert "won_by:tc=1" in proxy.log_text()


def test_policies_survive_a_restart_and_follow_a_reload(ovs, proxy_factory, tmp_path) -> None:
    """A restarted proxy finds its policy's drop on the bridge and keeps it (same rule id, same
    cookie: restored from the backup), and a SIGHUP adds and removes policies at once."""
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1, "br0-p2": 2, "br0-p3": 3})
    ovs.vsctl("set", "Interface", "br0-p1", "external_ids:policy-tags=pci")
    ovs.vsctl("set", "Interface", "br0-p2", "external_ids:policy-tags=web",
              f"external_ids:attached-mac={B}")
    port = free_port()
    text = config(port, tmp_path, ovs,
                  rules=POLICY + '[[rules]]\nflow = "priority=100,udp actions=output:2"\n')
    first = proxy_factory(text)
    [drop] = wait_until(lambda: policy_flows(ovs), 15, "the policy's flow on br0")
    cookie = drop.split(",")[0]
    first.stop()
    second = proxy_factory(text)
    target = tmp_path / "proxy.ctl"
    wait_until(lambda: [b["name"] for b in show(target)["bridges"]] == ["br0"], 15,
               "br0 back on the restarted proxy")
    wait_until(lambda: counter(target, "br0", "flows_kept") >= 1, 10, "the reconcile")
    assert [line.split(",")[0] for line in policy_flows(ovs)] == [cookie]
    out2 = ovs.capture("br0-p2")
    other = udp_frame(C, B, "10.0.0.3", "10.0.0.2", 1000, 2000, b"other")
    ovs.inject("br0-p1", udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"pci to web"))
    ovs.inject("br0-p3", other)  # the rule sends both to port 2; the policy drops the first
    assert out2.wait_frames(1) == [other]

    # A reload that adds a policy without tags and drops the tagged one.
    second.config_path.write_text(text.replace(POLICY, '\n[[policies]]\nname = "no-dns"\n'
                                                      'match = "udp,tp_dst=53"\n'))
    os.kill(second.pid, signal.SIGHUP)
    wait_until(lambda: [line for line in policy_flows(ovs) if "tp_dst=53" in line], 10,
               "the new policy's flow")
    wait_until(lambda: len(policy_flows(ovs)) == 1, 10, "the old policy's flow gone")
