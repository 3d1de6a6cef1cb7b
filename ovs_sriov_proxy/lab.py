"""`ovs-sriov-proxy lab`: the whole product on a private OVS, no hardware and no root paths.

Builds a sandboxed Open vSwitch (dummy datapath, hw-offload on) with a bridge shaped like a
hypervisor's br-int — an uplink and three VF representors — starts the proxy as its controller
with sample rules, a sample network policy and a sample upstream controller (ovs-testcontroller,
a learning switch) for what the rules do not cover, sends traffic, and prints what happened:
where each frame left, whether it cost a miss, who answered it, the flows on the bridge and the
proxy's own counters. Then it cleans up.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .control import transact
from .sandbox import (
    OvsSandbox,
    SandboxError,
    free_port,
    missing_ovs_programs,
    tcp_listening,
    udp_frame,
    wait_until,
)

BRIDGE = "br-int"
CONTROLLER = "learning-switch"
PORTS = {"uplink": 1, "vf0-rep": 2, "vf1-rep": 3, "vf2-rep": 4}
VM_MAC = {"vf0-rep": "fa:16:3e:00:00:10", "vf1-rep": "fa:16:3e:00:00:11", "vf2-rep": "fa:16:3e:00:00:12"}
GATEWAY_MAC = "fa:16:3e:00:00:01"
SAMPLE_RULES = (
    # VM traffic to the fabric goes out the uplink...
    ("VMs to the uplink", "priority=100,in_port=2 actions=output:1"),
    ("", "priority=100,in_port=3 actions=output:1"),
    # ...and the fabric reaches each VM by its MAC.
    ("uplink to vf0 by MAC", f"priority=100,in_port=1,dl_dst={VM_MAC['vf0-rep']} actions=output:2"),
    ("uplink to vf1 by MAC", f"priority=100,in_port=1,dl_dst={VM_MAC['vf1-rep']} actions=output:3"),
    # SIP signalling from any VM goes to a dedicated VF (a voice appliance), above the rules above.
    ("SIP to the voice VF", "priority=200,udp,tp_dst=5060 actions=output:4"),
)

# A network policy: dropped on the bridge whatever a rule or a controller says. (Policies can
# also name ports by tags in OVSDB; the lab has no [ovsdb], so this one names traffic only.)
SAMPLE_POLICY = ("no-tftp", "udp,tp_dst=69")


@dataclass(frozen=True)
class Probe:
    what: str
    in_port: str
    frame: bytes
    expect: tuple[str, ...]  # the ports it should leave by; () for dropped
    via_controller: bool = False  # no rule covers it: the upstream controller answers
    by_policy: bool = False  # the policy's flow drops it on the bridge


def _probes() -> list[Probe]:
    def udp(src_port: str, dst_mac: str, dport: int, dst_ip: str = "192.0.2.10") -> bytes:
        src_mac = VM_MAC.get(src_port, GATEWAY_MAC)
        return udp_frame(src_mac, dst_mac, "10.0.0.5", dst_ip, 40000, dport, b"lab")

    return [
        Probe("VM0 -> fabric (DNS)", "vf0-rep", udp("vf0-rep", GATEWAY_MAC, 53), ("uplink",)),
        Probe("VM0 -> fabric again (same flow)", "vf0-rep", udp("vf0-rep", GATEWAY_MAC, 53),
              ("uplink",)),
        Probe("VM1 -> fabric (NTP)", "vf1-rep", udp("vf1-rep", GATEWAY_MAC, 123), ("uplink",)),
        Probe(f"VM1 -> fabric (TFTP: policy {SAMPLE_POLICY[0]})", "vf1-rep",
              udp("vf1-rep", GATEWAY_MAC, 69), (), by_policy=True),
        Probe("VM0 -> SIP server", "vf0-rep", udp("vf0-rep", GATEWAY_MAC, 5060), ("vf2-rep",)),
        Probe("fabric -> VM1", "uplink", udp("uplink", VM_MAC["vf1-rep"], 8080), ("vf1-rep",)),
        Probe("fabric -> unknown MAC (no rule: controller)", "uplink",
              udp("uplink", "fa:16:3e:99:99:99", 8080), ("vf0-rep", "vf1-rep", "vf2-rep"),
              via_controller=True),
    ]


def _config(port: int, state_dir: Path, controller_port: int) -> str:
    lines = ["[proxy]", f'listen = ["ptcp:{port}:127.0.0.1"]', f'state_dir = "{state_dir}"',
             f'control_socket = "{state_dir / "proxy.ctl"}"', ""]
    for comment, flow in SAMPLE_RULES:
        if comment:
            lines.append(f"# {comment}")
        lines += ["[[rules]]", f'flow = "{flow}"', ""]
    lines += ["# Dropped whatever any rule or controller says.", "[[policies]]",
              f'name = "{SAMPLE_POLICY[0]}"', f'match = "{SAMPLE_POLICY[1]}"', ""]
    lines += ["# What the rules do not cover goes to the upstream controller.", "[[controllers]]",
              f'name = "{CONTROLLER}"', f'target = "tcp:127.0.0.1:{controller_port}"', ""]
    return "\n".join(lines)


def _tx_counts(ovs: OvsSandbox) -> dict[str, int]:
    return {name: ovs.port_tx_packets(BRIDGE, number) for name, number in PORTS.items()}


def _policy_drops(ovs: OvsSandbox) -> int:
    """Packets the policy's flow (priority 65535) dropped."""
    return sum(int(flow.info.get("n_packets", 0)) for flow in ovs.dump_flows(BRIDGE)
               if flow.match.get("priority") == 65535)


def _misses(ovs: OvsSandbox) -> int:
    """Packets the bridge sent to its controller: the table-miss flow's packet count."""
    for flow in ovs.dump_flows(BRIDGE):
        if flow.match == {"priority": 0}:  # ovs.flow keeps the priority with the match
            return int(flow.info.get("n_packets", 0))
    return 0


def run_lab(workdir: Path | None, *, keep: bool = False, out: TextIO = sys.stdout) -> int:
    missing = missing_ovs_programs()
    if missing:
        print(f"lab: Open vSwitch programs missing: {', '.join(missing)} "
              "(apt-get install openvswitch-switch)", file=out)
        return 2
    directory = workdir or Path(tempfile.mkdtemp(prefix="ovs-sriov-proxy-lab-"))
    directory.mkdir(parents=True, exist_ok=True)
    failures = 0
    try:
        (directory / "ovs").mkdir(exist_ok=True)
        with OvsSandbox(directory / "ovs") as ovs:
            port, controller_port = free_port(), free_port()
            config_path = directory / "proxy.toml"
            state_dir = directory / "state"
            config_path.write_text(_config(port, state_dir, controller_port))
            print(f"lab: private OVS in {directory / 'ovs'}; proxy config {config_path}", file=out)
            ovs.start_testcontroller(controller_port, protocols=("OpenFlow13",))
            print(f"lab: upstream controller {CONTROLLER} (ovs-testcontroller) on "
                  f"tcp:127.0.0.1:{controller_port}", file=out)
            # The proxy runs from this very package, installed or not (cwd is the sandbox).
            package_root = str(Path(__file__).resolve().parent.parent)
            ovs.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (package_root, ovs.env.get("PYTHONPATH", "")) if p)
            ovs.spawn("proxy", [sys.executable, "-m", "ovs_sriov_proxy", "run", "--config",
                                str(config_path)], ready=lambda: tcp_listening("127.0.0.1", port))
            ovs.add_bridge(BRIDGE, protocols=("OpenFlow13",), ports=PORTS, hw_offload=True,
                           controller=f"tcp:127.0.0.1:{port}")
            ovs.wait_connected(BRIDGE)
            proxy_log = ovs.directory / "proxy.stderr"
            wait_until(lambda: f"controller {CONTROLLER} connected" in proxy_log.read_text(), 10,
                       "the proxy to reach the upstream controller")
            offload = ovs.vsctl("get", "Open_vSwitch", ".", "other_config:hw-offload").strip()
            print(f"lab: bridge {BRIDGE} (OpenFlow13, hw-offload={offload}) connected to the "
                  f"proxy at tcp:127.0.0.1:{port}", file=out)
            print(f"lab: ports {', '.join(f'{n}={p}' for n, p in PORTS.items())}\n", file=out)
            for probe in _probes():
                failures += _send(ovs, probe, out)
            print("\nlab: flows on the bridge (cookie 0x5052... = installed by the proxy from its "
                  "rules and policies, 0x4300... = installed by the upstream controller):", file=out)
            for line in ovs.ofctl("-O", "OpenFlow13", "dump-flows", BRIDGE, "--no-stats").splitlines():
                print(f"  {line.strip()}", file=out)
            print("\nlab: the proxy's own view (ovs-appctl -t STATE/proxy.ctl proxy/show):", file=out)
            for line in transact(state_dir / "proxy.ctl", "proxy/show").splitlines():
                print(f"  {line}", file=out)
        print(f"\nlab: {'all probes behaved as expected' if not failures else f'{failures} probe(s) misbehaved'}",
              file=out)
        return 1 if failures else 0
    except SandboxError as exc:
        print(f"lab: failed: {exc}", file=out)
        return 1
    finally:
        if keep:
            print(f"lab: kept {directory}", file=out)
        elif workdir is None:
            shutil.rmtree(directory, ignore_errors=True)


def _proxy_flows(ovs: OvsSandbox) -> set[str]:
    lines = ovs.ofctl("-O", "OpenFlow13", "dump-flows", BRIDGE, "--no-stats").splitlines()
    return {line.strip() for line in lines if "cookie=0x5052" in line}


def _send(ovs: OvsSandbox, probe: Probe, out: TextIO) -> int:
    before, flows_before, misses_before = _tx_counts(ovs), _proxy_flows(ovs), _misses(ovs)
    dropped_before = _policy_drops(ovs)
    ovs.inject(probe.in_port, probe.frame)

    def settled() -> dict[str, int] | None:
        now = _tx_counts(ovs)
        moved = {name: now[name] - before[name] for name in now if now[name] != before[name]}
        if probe.by_policy:  # the drop flow's counter (slow to update) shows the drop
            return moved if moved or _policy_drops(ovs) > dropped_before else None
        if not probe.expect:
            # Nothing leaves; the table-miss flow's counter (slow to update) shows the miss.
            return moved if moved or _misses(ovs) > misses_before else None
        return moved if len(moved) >= len(probe.expect) else None

    try:
        moved = wait_until(settled, 5, f"{probe.what} to be handled")
    except TimeoutError:
        moved = {}
    # The proxy installs a flow before it releases the packet: a new flow means a miss.
    new_flows = _proxy_flows(ovs) - flows_before
    policy_held = _policy_drops(ovs) > dropped_before and not new_flows
    if probe.by_policy:
        how = "dropped on the bridge by the policy's flow: no miss" if policy_held else "policy NOT applied"
    elif new_flows:
        how = "miss: proxy installed " + "; ".join(
            sorted(f.split(" ", 1)[1].replace("send_flow_rem ", "") for f in new_flows))
    elif probe.via_controller:
        how = f"miss: no rule; {CONTROLLER} answered (it floods an unknown destination)"
    elif not probe.expect:
        how = "miss: no rule, proxy fallback (drop)"
    else:
        how = "hit on the bridge's flow: no miss"
    left = ", ".join(sorted(moved)) or "nowhere"
    ok = sorted(moved) == sorted(probe.expect) and (policy_held or not probe.by_policy)
    print(f"  {'ok ' if ok else 'BAD'} {probe.what:<42} {probe.in_port:>7} -> {left:<26} {how}",
          file=out)
    return 0 if ok else 1
