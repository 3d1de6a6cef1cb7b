"""A controller written on os-ken's app framework (integration/osken_l2_app.py, a reactive L2
learning switch) runs through the proxy: it floods and forwards, and the flows it answers misses
with are learned by the proxy, which keeps answering with them once the app is gone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from test_core import PROXY_COOKIE_TAG, add_bridge, proxy_config  # integration/ is on sys.path
from test_northbound import controllers_toml

from ovs_sriov_proxy.control import transact
from ovs_sriov_proxy.sandbox import free_port, tcp_listening, udp_frame, wait_until

APP = Path(__file__).resolve().parent / "osken_l2_app.py"
A, B = "00:00:00:00:00:0a", "00:00:00:00:00:0b"
TAG = 0x4300  # the only controller's cookie tag


def test_an_osken_app_forwards_through_the_proxy_and_the_proxy_learns_its_flows(
        ovs, proxy_factory, tmp_path) -> None:
    app_port = free_port()
    app = ovs.spawn("osken-l2", [sys.executable, str(APP), "--listen", str(app_port)],
                    ready=lambda: tcp_listening("127.0.0.1", app_port),
                    allowed_log_lines=[r"^switch [0-9a-f]{16} connected$", r"^flow ", r"^flood "],
                    timeout=20)
    port = free_port()
    state = tmp_path / "state"
    proxy = proxy_factory(proxy_config(port, state, [])
                          + controllers_toml([("osken", app_port, 0, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller osken connected")
    wait_until(lambda: "connected" in (ovs.directory / "osken-l2.stderr").read_text(), 10,
               "the app to see the switch")
    out1, out2, out3 = (ovs.capture(f"br0-p{i}") for i in (1, 2, 3))
    a_to_b = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"ab")
    b_to_a = udp_frame(B, A, "10.0.0.2", "10.0.0.1", 2000, 1000, b"ba")
    ovs.inject("br0-p1", a_to_b)  # B unknown: the app floods (a PACKET_OUT on the proxy's buffer)
    assert out2.wait_frames(1) == [a_to_b] and out3.wait_frames(1) == [a_to_b]
    ovs.inject("br0-p2", b_to_a)  # A known: the app answers with a flow carrying the buffer id
    assert out1.wait_frames(1) == [b_to_a]
    expected = f"priority=10,in_port=2,dl_dst={A} actions=output:1"
    app_flows = wait_until(
        lambda: [line for line in ovs.ofctl("-O", "OpenFlow13", "dump-flows", "br0").splitlines()
                 if f"cookie=0x{TAG:x}" in line], 5, "the app's flow on the bridge")
    assert len(app_flows) == 1 and app_flows[0].rstrip().endswith(expected)
    assert "idle_timeout=30" in app_flows[0]

    rules = json.loads(transact(state / "proxy.ctl", "proxy/rules", ["--json"]))["rules"]
    learned = [r for r in rules if r["origin"] == "osken"]
    assert len(learned) == 1 and learned[0]["bridge"] == "br0"
    assert learned[0]["flow"].startswith("priority=10,idle_timeout=30,")
    assert "in_port=2" in learned[0]["flow"] and learned[0]["flow"].endswith("actions=output:1")

    # The app goes away and its flow leaves the bridge: the proxy answers from what it learned.
    ovs.stop_process(app)
    proxy.wait_log(f"controller osken (tcp:127.0.0.1:{app_port}): cannot connect")  # it is gone
    ovs.ofctl("-O", "OpenFlow13", "del-flows", "br0", f"cookie=0x{TAG << 48:x}/0xffff000000000000")
    ovs.inject("br0-p2", b_to_a)
    assert out1.wait_frames(2) == [b_to_a, b_to_a]
    proxy_flows = wait_until(
        lambda: [line for line in ovs.ofctl("-O", "OpenFlow13", "dump-flows", "br0").splitlines()
                 if f"cookie=0x{PROXY_COOKIE_TAG:x}" in line], 5, "the proxy's flow for the rule")
    assert proxy_flows[0].rstrip().endswith(expected)
    assert out3.frames() == [a_to_b]
    proxy.stop()
    log = proxy.log_text()
    assert "won_by:osken=2" in log and "learned=1" in log
