"""Misses the proxy's rules cannot answer go to real upstream controllers (ovs-testcontroller)."""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

import pytest
from test_core import PROTOCOLS, add_bridge, proxy_config  # integration/ is on sys.path

from ovs_sriov_proxy.sandbox import free_port, tcp_listening, udp_frame, wait_until

A, B = "00:00:00:00:00:0a", "00:00:00:00:00:0b"
CONTROLLER_TAG = 0x4300  # the first configured controller's cookie tag


def controller_flows(ovs, bridge: str, protocol: str) -> list[str]:
    return [line for line in ovs.ofctl("-O", protocol, "dump-flows", bridge).splitlines()
            if f"cookie=0x{CONTROLLER_TAG:x}" in line]


def exchange_through_a_learning_switch(ovs) -> None:
    """A -> B on p1, then B -> A on p2, with ovs-testcontroller deciding upstream: the first is
    flooded (a PACKET_OUT carrying the proxy's buffer id), the second gets a flow (a FLOW_MOD
    carrying it)."""
    out1, out2, out3 = (ovs.capture(f"br0-p{i}") for i in (1, 2, 3))
    a_to_b = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"ab")
    b_to_a = udp_frame(B, A, "10.0.0.2", "10.0.0.1", 2000, 1000, b"ba")
    ovs.inject("br0-p1", a_to_b)
    assert out2.wait_frames(1) == [a_to_b] and out3.wait_frames(1) == [a_to_b]
    ovs.inject("br0-p2", b_to_a)
    assert out1.wait_frames(1) == [b_to_a]


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
    exchange_through_a_learning_switch(ovs)
    flows = wait_until(lambda: controller_flows(ovs, "br0", protocol), 5,
                       "the controller's flow, tagged with its cookie band")
    assert "actions=output:1" in flows[0]
    if protocol == "OpenFlow13":  # the controller's own table-miss flow was not let through
        misses = [line for line in ovs.ofctl("-O", protocol, "dump-flows", "br0").splitlines()
                  if " priority=0 " in line]
        assert len(misses) == 1 and misses[0].strip().startswith("cookie=0x0,")  # the proxy's
        assert misses[0].rstrip().endswith("actions=CONTROLLER:65535")
    proxy.stop()
    log = proxy.log_text()
    assert "won_by:tc=2" in log and "learned=1" in log


TINY = Path(__file__).resolve().parent / "tiny_controller.py"
OTHER_HOST = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 2000, b"web")
SIP = udp_frame(A, B, "10.0.0.1", "10.0.0.2", 1000, 5060, b"sip")


def start_tiny(ovs, name: str, *args: str) -> tuple[int, object]:
    port = free_port()
    process = ovs.spawn(name, [sys.executable, str(TINY), "--listen", str(port), *args],
                        ready=lambda: tcp_listening("127.0.0.1", port),
                        allowed_log_lines=[r"^answered miss "])  # its one line per answer
    return port, process


def controllers_toml(entries: list[tuple[str, int, int, str]]) -> str:
    """[[controllers]] tables for (name, port, priority, extra primacy TOML lines)."""
    text = ""
    for name, port, priority, primacy in entries:
        text += (f'[[controllers]]\nname = "{name}"\ntarget = "tcp:127.0.0.1:{port}"\n'
                 f"priority = {priority}\n")
        if primacy:
            text += f"[controllers.primacy]\n{primacy}\n"
    return text


def start_proxy_with(ovs, proxy_factory, tmp_path, controllers: str, extra: str = ""):
    port = free_port()
    proxy = proxy_factory(proxy_config(port, tmp_path / "state", [], extra=extra) + controllers)
    add_bridge(ovs, "br0", "OpenFlow13", port)
    return proxy


def test_two_controllers_answer_differently_and_priority_decides(ovs, proxy_factory,
                                                                 tmp_path) -> None:
    low, _ = start_tiny(ovs, "low", "--output", "2")
    high, _ = start_tiny(ovs, "high", "--output", "3")
    proxy = start_proxy_with(ovs, proxy_factory, tmp_path,
                             controllers_toml([("low", low, 10, ""), ("high", high, 50, "")]))
    proxy.wait_log("controller low connected")
    proxy.wait_log("controller high connected")
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    ovs.inject("br0-p1", OTHER_HOST)
    assert out3.wait_frames(1) == [OTHER_HOST]
    assert out2.frames() == []  # the loser's answer never reaches the bridge
    proxy.stop()
    assert "won_by:high=1" in proxy.log_text()


def test_scope_sends_only_matching_misses_to_a_controller(ovs, proxy_factory, tmp_path) -> None:
    default, _ = start_tiny(ovs, "default", "--output", "2")
    voip, _ = start_tiny(ovs, "voip", "--output", "3")
    proxy = start_proxy_with(ovs, proxy_factory, tmp_path, controllers_toml([
        ("default", default, 10, ""), ("voip", voip, 50, 'scope = "udp,tp_dst=5060"')]))
    proxy.wait_log("controller voip connected")
    proxy.wait_log("controller default connected")
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    ovs.inject("br0-p1", OTHER_HOST)
    assert out2.wait_frames(1) == [OTHER_HOST]
    ovs.inject("br0-p1", SIP)
    assert out3.wait_frames(1) == [SIP]
    assert out2.frames() == [OTHER_HOST]


def test_outside_its_hours_the_higher_priority_controller_yields(ovs, proxy_factory,
                                                                 tmp_path) -> None:
    now = datetime.datetime.now()
    start = (now + datetime.timedelta(hours=6)).strftime("%H:%M")
    end = (now + datetime.timedelta(hours=7)).strftime("%H:%M")  # a window that excludes now
    day, _ = start_tiny(ovs, "day", "--output", "2")
    night, _ = start_tiny(ovs, "night", "--output", "3")
    proxy = start_proxy_with(ovs, proxy_factory, tmp_path, controllers_toml([
        ("day", day, 10, ""), ("night", night, 50, f'hours = ["{start}-{end}"]')]))
    proxy.wait_log("controller night connected")
    proxy.wait_log("controller day connected")
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    ovs.inject("br0-p1", OTHER_HOST)
    assert out2.wait_frames(1) == [OTHER_HOST]
    proxy.stop()
    assert out3.frames() == [] and "won_by:day=1" in proxy.log_text()


def test_a_silent_controller_never_holds_a_miss_past_the_timeout(ovs, proxy_factory,
                                                                 tmp_path) -> None:
    hung, _ = start_tiny(ovs, "hung", "--answer", "none")
    low, _ = start_tiny(ovs, "low", "--output", "2")
    proxy = start_proxy_with(ovs, proxy_factory, tmp_path, controllers_toml([
        ("low", low, 10, ""), ("hung", hung, 50, "")]), extra="miss_timeout_ms = 150")
    proxy.wait_log("controller hung connected")
    proxy.wait_log("controller low connected")
    out2 = ovs.capture("br0-p2")
    started = time.monotonic()
    ovs.inject("br0-p1", OTHER_HOST)
    assert out2.wait_frames(1) == [OTHER_HOST]  # the lower answer, applied at the timeout
    assert time.monotonic() - started < 2.0


def test_learned_rules_answer_after_the_controller_dies(ovs, proxy_factory, tmp_path) -> None:
    learner, process = start_tiny(ovs, "learner", "--answer", "flow-mod", "--output", "2",
                                  "--idle-timeout", "1")
    proxy = start_proxy_with(ovs, proxy_factory, tmp_path,
                             controllers_toml([("learner", learner, 10, "")]))
    proxy.wait_log("controller learner connected")
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", OTHER_HOST)
    out2.wait_frames(1)
    wait_until(lambda: controller_flows(ovs, "br0", "OpenFlow13"), 5, "the controller's flow")
    ovs.stop_process(process)
    proxy.wait_log("controller learner disconnected")
    wait_until(lambda: not controller_flows(ovs, "br0", "OpenFlow13"), 10,
               "the controller's flow to expire on the bridge")
    ovs.inject("br0-p1", OTHER_HOST)
    assert out2.wait_frames(2) == [OTHER_HOST, OTHER_HOST]  # answered from the learned rule
    proxy_flow = wait_until(
        lambda: [f for f in ovs.dump_flows("br0") if int(f.info.get("cookie", 0)) >> 48 == 0x5052],
        5, "the proxy's own flow for the learned rule")
    assert proxy_flow[0].info["idle_timeout"] == 1


def test_a_garbage_speaking_controller_loses_its_session_and_the_miss_is_still_answered(
        ovs, proxy_factory, tmp_path) -> None:
    broken, _ = start_tiny(ovs, "broken", "--answer", "garbage")
    good, _ = start_tiny(ovs, "good", "--output", "2")
    proxy = start_proxy_with(ovs, proxy_factory, tmp_path, controllers_toml([
        ("good", good, 10, ""), ("broken", broken, 50, "")]))
    proxy.wait_log("controller broken connected")
    proxy.wait_log("controller good connected")
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", OTHER_HOST)
    assert out2.wait_frames(1) == [OTHER_HOST]
    log = proxy.wait_log("controller broken disconnected: protocol error")
    assert "not OpenFlow" in log
    proxy.stop()
    assert "won_by:good=1" in proxy.log_text()


def test_a_proxy_can_be_the_controller_of_another_proxy(ovs, proxy_factory, tmp_path) -> None:
    controller_port = free_port()
    ovs.start_testcontroller(controller_port, protocols=("OpenFlow13",))
    upper_port, lower_port = free_port(), free_port()
    upper = proxy_factory(
        proxy_config(upper_port, tmp_path / "upper", [])
        + f'[[controllers]]\nname = "tc"\ntarget = "tcp:127.0.0.1:{controller_port}"\n')
    lower = proxy_factory(
        proxy_config(lower_port, tmp_path / "lower", [])
        + f'[[controllers]]\nname = "upper"\ntarget = "tcp:127.0.0.1:{upper_port}"\n')
    add_bridge(ovs, "br0", "OpenFlow13", lower_port)
    lower.wait_log("controller upper connected")
    upper.wait_log("controller tc connected")
    exchange_through_a_learning_switch(ovs)
    upper.stop()
    lower.stop()
    assert "won_by:tc=2" in upper.log_text() and "won_by:upper=2" in lower.log_text()
