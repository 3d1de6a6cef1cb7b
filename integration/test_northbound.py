"""Misses the proxy's rules cannot answer go to real upstream controllers (ovs-testcontroller)."""

from __future__ import annotations

import pytest
from test_core import PROTOCOLS, add_bridge, proxy_config  # integration/ is on sys.path

from ovs_sriov_proxy.sandbox import free_port, udp_frame, wait_until

A, B = "00:00:00:00:00:0a", "00:00:00:00:00:0b"
CONTROLLER_TAG = 0x4300  # the first configured controller's cookie tag


def controller_flows(ovs, bridge: str, protocol: str) -> list[str]:
    return [line for line in ovs.ofctl("-O", protocol, "dump-flows", bridge).splitlines()
            if f"cookie=0x{CONTROLLER_TAG:x}" in line]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_real_controller_answers_misses_through_the_proxy(ovs, proxy_factory, tmp_path,
                                                             protocol) -> None:
    controller_port = free_port()
    ovs.start_testcontroller(controller_port, protocols=(protocol,))
    port = free_port()
    config = proxy_config(port, tmp_path / "state", [])
    config += f'[[controllers]]\nname = "tc"\ntarget = "tcp:127.0.0.1:{controller_port}"\n'
    proxy = proxy_factory(config)
    add_bridge(ovs, "br0", protocol, port)
    proxy.wait_log("controller tc connected")
    out1, out2, out3 = (ovs.capture(f"br0-p{i}") for i in (1, 2, 3))
    a_to_b = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"ab")
    b_to_a = udp_frame(B, A, "10.0.0.2", "10.0.0.1", 2000, 1000, b"ba")
    # Unknown destination: the learning switch floods it, with a PACKET_OUT carrying our buffer id.
    ovs.inject("br0-p1", a_to_b)
    assert out2.wait_frames(1) == [a_to_b] and out3.wait_frames(1) == [a_to_b]
    # A is known now: the controller installs a flow (a FLOW_MOD with our buffer id).
    ovs.inject("br0-p2", b_to_a)
    assert out1.wait_frames(1) == [b_to_a]
    flows = wait_until(lambda: controller_flows(ovs, "br0", protocol), 5,
                       "the controller's flow, tagged with its cookie band")
    assert "actions=output:1" in flows[0]
    proxy.stop()
    log = proxy.log_text()
    assert "won_by:tc=2" in log and "learned=1" in log
