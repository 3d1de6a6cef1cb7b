"""Two controllers install their proactive flows in OpenFlow bundles (ONF's extension on 1.3,
as neutron's agent does), both with bundle id 1, through the proxy to a real bridge: both
bundles commit, and the flows in them carry each controller's cookie tag and priority band, as
the same flows sent alone would."""

from __future__ import annotations

import sys
from pathlib import Path

from test_core import add_bridge, proxy_config  # integration/ is on sys.path
from test_northbound import controllers_toml
from test_osken_app import APP
from test_priority_bands import HIGH_TAG, LOW_TAG, in_port_1_flows

from ovs_sriov_proxy.sandbox import OvsSandbox, free_port, tcp_listening, udp_frame, wait_until


def start_bundling_app(ovs: OvsSandbox, name: str, flow: str) -> tuple[int, Path]:
    port = free_port()
    ovs.spawn(name, [sys.executable, str(APP), "--listen", str(port), "--proactive", flow,
                     "--bundle"],
              ready=lambda: tcp_listening("127.0.0.1", port),
              allowed_log_lines=[r"^switch [0-9a-f]{16} connected$", r"^bundle 1 committed$",
                                 r"^flow ", r"^flood "],
              timeout=20)
    return port, ovs.directory / f"{name}.stderr"


def test_bundles_of_two_controllers_commit_with_tags_and_bands(ovs, proxy_factory,
                                                               tmp_path) -> None:
    low, low_log = start_bundling_app(ovs, "low", "40000:1:2")
    high, high_log = start_bundling_app(ovs, "high", "100:1:3")
    port = free_port()
    proxy = proxy_factory(proxy_config(port, tmp_path / "state", [])
                          + controllers_toml([("low", low, 10, ""), ("high", high, 50, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    for log in (low_log, high_log):
        wait_until(lambda log=log: "bundle 1 committed" in log.read_text(), 15,
                   f"{log.name}: its bundle committed")
        assert "error" not in log.read_text()
    installed = wait_until(lambda: in_port_1_flows(ovs) if len(in_port_1_flows(ovs)) == 2
                           else None, 10, "both controllers' bundled flows")
    assert installed == {HIGH_TAG: 32768 + 100, LOW_TAG: 32767}  # as without bundles
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    frame = udp_frame("00:00:00:00:00:0a", "00:00:00:00:00:0b", "10.0.0.1", "10.0.0.2", 1000,
                      2000, b"x")
    ovs.inject("br0-p1", frame)  # high's flow, which has primacy, forwards it
    assert out3.wait_frames(1) == [frame] and out2.frames() == []
    proxy.stop()
    assert "bundle_adds=2" in proxy.log_text() and "bundle_controls=4" in proxy.log_text()
