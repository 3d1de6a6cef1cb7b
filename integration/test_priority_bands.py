"""Two controllers install overlapping proactive flows on one bridge: with priority bands the
one with primacy wins on the bridge, whatever raw priorities they chose; without, the raw
priorities decide."""

from __future__ import annotations

import sys

import pytest
from test_core import add_bridge, proxy_config  # integration/ is on sys.path
from test_northbound import controllers_toml
from test_osken_app import APP

from ovs_sriov_proxy.sandbox import OvsSandbox, free_port, tcp_listening, udp_frame, wait_until

A, B = "00:00:00:00:00:0a", "00:00:00:00:00:0b"
LOW_TAG, HIGH_TAG = 0x4300, 0x4301  # cookie tags, by position in the config


def start_app(ovs: OvsSandbox, name: str, *proactive: str) -> int:
    port = free_port()
    ovs.spawn(name, [sys.executable, str(APP), "--listen", str(port),
                     *(arg for flow in proactive for arg in ("--proactive", flow))],
              ready=lambda: tcp_listening("127.0.0.1", port),
              allowed_log_lines=[r"^switch [0-9a-f]{16} connected$", r"^flow ", r"^flood "],
              timeout=20)
    return port


def in_port_1_flows(ovs: OvsSandbox) -> dict[int, int]:
    """Bridge priority of each controller's in_port=1 flow, by cookie tag."""
    found = {}
    for line in ovs.ofctl("-O", "OpenFlow13", "dump-flows", "br0", "in_port=1").splitlines():
        if "cookie=0x43" in line:
            cookie = int(line.split("cookie=")[1].split(",")[0], 16)
            found[cookie >> 48] = int(line.split("priority=")[1].split(",")[0])
    return found


@pytest.mark.parametrize("bands, winner_port", [("auto", 3), ("off", 2)])
def test_the_controller_with_primacy_wins_overlapping_proactive_flows(
        ovs, proxy_factory, tmp_path, bands, winner_port) -> None:
    # "low" (primacy priority 10) asks for a high raw priority, "high" (50) for a low one.
    low = start_app(ovs, "low", "40000:1:2")
    high = start_app(ovs, "high", "100:1:3")
    port = free_port()
    proxy = proxy_factory(
        proxy_config(port, tmp_path / "state", [], extra=f'priority_bands = "{bands}"')
        + controllers_toml([("low", low, 10, ""), ("high", high, 50, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller low connected")
    proxy.wait_log("controller high connected")

    def both() -> dict[int, int] | None:
        flows = in_port_1_flows(ovs)
        return flows if len(flows) == 2 else None

    installed = wait_until(both, 10, "both controllers' in_port=1 flows")
    if bands == "auto":  # high's band is 32768..65535, low's 0..32767 (40000 clamped)
        assert installed == {HIGH_TAG: 32768 + 100, LOW_TAG: 32767}
    else:
        assert installed == {HIGH_TAG: 100, LOW_TAG: 40000}
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    frame = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"x")
    ovs.inject("br0-p1", frame)  # matched on the bridge: no controller involved
    winner, loser = (out3, out2) if winner_port == 3 else (out2, out3)
    # The bridge forwards after netdev-dummy/receive returns: wait for the frame to leave.
    assert winner.wait_frames(1) == [frame] and loser.frames() == []
    proxy.stop()
    clamped = "priority_clamped:low=1" in proxy.log_text()
    assert clamped == (bands == "auto")


def test_flows_the_bridge_learns_for_a_controller_carry_its_tag_and_band(
        ovs, proxy_factory, tmp_path) -> None:
    """A learn() action installs flows of its own, on the bridge, with no FLOW_MOD through the
    proxy: they must still carry the controller's cookie tag and sit in its band."""
    port_learner, port_other = free_port(), free_port()
    for name, port, extra in (("learner", port_learner, ["--learn-flow", "1:2"]),
                              ("other", port_other, [])):
        ovs.spawn(name, [sys.executable, str(APP), "--listen", str(port), *extra],
                  ready=lambda port=port: tcp_listening("127.0.0.1", port),
                  allowed_log_lines=[r"^switch [0-9a-f]{16} connected$", r"^flow ", r"^flood "],
                  timeout=20)
    port = free_port()
    # learner: first in the config (tag 0x4300) and first in primacy (band 32768..65535)
    proxy_factory(proxy_config(port, tmp_path / "state", [])
                  + controllers_toml([("learner", port_learner, 50, ""),
                                      ("other", port_other, 10, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    wait_until(lambda: "learn(" in ovs.ofctl("-O", "OpenFlow13", "dump-flows", "br0"), 15,
               "the learner's learning flow")
    ovs.inject("br0-p1", udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"x"))

    def learned() -> str | None:
        lines = [line for line in ovs.ofctl("-O", "OpenFlow13", "dump-flows", "br0").splitlines()
                 if f"dl_dst={A}" in line]
        return lines[0] if lines else None

    line = wait_until(learned, 10, "the flow the bridge learned")
    assert "cookie=0x4300000000000077" in line
    assert "priority=33068" in line  # 32768 + the 300 the learn action asked for
