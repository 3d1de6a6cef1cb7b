"""The control socket of a real proxy process, through the real `ovs-appctl` binary, the
`ovs-sriov-proxy` command line and the `ovs` package's own unixctl client, with a real bridge."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from ovs_sriov_proxy.sandbox import OvsSandbox, free_port, udp_frame, wait_until

with warnings.catch_warnings():  # ovs.unixctl.client imports ovs.poller, which imports eventlet
    warnings.simplefilter("ignore")
    from ovs.unixctl.client import UnixctlClient

REPO_ROOT = Path(__file__).resolve().parents[1]
COOKIE_TAG = 0x5052  # the top 16 bits of every cookie of the proxy's flows
SIP_FLOW = "priority=100,in_port=1,udp,tp_dst=5060 actions=output:2"


def proxy_config(port: int, tmp_path: Path, control_socket: Path | str,
                 rules: tuple[str, ...] = ()) -> str:
    lines = [
        "[proxy]",
        f'listen = ["ptcp:{port}:127.0.0.1"]',
        f'state_dir = "{tmp_path / "state"}"',
        f'control_socket = "{control_socket}"',
        "hello_timeout = 1.0",
        "echo_interval = 1.0",
        "dead_interval = 3.0",
    ]
    for flow in rules:
        lines += ["[[rules]]", f'flow = "{flow}"']
    return "\n".join(lines) + "\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "ovs_sriov_proxy", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def appctl(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ovs-appctl", "-t", str(target), *args], capture_output=True, text=True,
                          timeout=30)


def show(target: Path) -> dict[str, Any]:
    done = appctl(target, "proxy/show", "--json")
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def counter(target: Path, bridge: str, name: str) -> int:
    for entry in show(target)["bridges"]:
        if entry["name"] == bridge:
            return int(entry["counters"].get(name, 0))
    return 0


def proxy_cookies(ovs: OvsSandbox, bridge: str) -> list[int]:
    cookies = (int(flow.info.get("cookie", 0)) for flow in ovs.dump_flows(bridge))
    return [cookie for cookie in cookies if cookie >> 48 == COOKIE_TAG]


def sip(port: int = 5060) -> bytes:
    return udp_frame("00:00:00:00:00:01", "00:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 40000, port,
                     b"hello")


def start(ovs: OvsSandbox, proxy_factory, tmp_path: Path, rules: tuple[str, ...] = ()):
    """A proxy with its control socket in tmp_path, and bridge br0 (OF1.3, ports 1-3) on it."""
    port, target = free_port(), tmp_path / "proxy.ctl"
    proxy = proxy_factory(proxy_config(port, tmp_path, target, rules))
    proxy.wait_log("ready:")  # logged once the control socket listens
    ovs.add_bridge("br0", protocols=("OpenFlow13",), datapath_id=1,
                   ports={"br0-p1": 1, "br0-p2": 2, "br0-p3": 3}, controller=f"tcp:127.0.0.1:{port}")
    ovs.wait_connected("br0")
    wait_until(lambda: show(target)["bridges"], 10, "the proxy to report br0")
    return proxy, target


def test_ovs_appctl_shows_the_connected_bridge(ovs, proxy_factory, tmp_path) -> None:
    proxy, target = start(ovs, proxy_factory, tmp_path, rules=(SIP_FLOW,))
    text = appctl(target, "proxy/show")
    assert text.returncode == 0, text.stderr
    assert ": 1 rule, 1 bridge connected\n" in text.stdout
    assert "\nbr0: dpid 0000000000000001, OpenFlow13, " in text.stdout
    [bridge] = show(target)["bridges"]
    assert (bridge["name"], bridge["datapath_id"], bridge["protocol"]) == (
        "br0", "0000000000000001", "OpenFlow13")
    assert bridge["ports"] >= 3
    assert appctl(target, "version").stdout.startswith("ovs-sriov-proxy ")
    assert "proxy/add-rule FLOW [BRIDGE] [--json]" in appctl(target, "help").stdout
    # The command line reads the socket's path from the daemon's config file.
    status = cli("status", "--config", str(proxy.config_path))
    assert status.returncode == 0 and "br0: dpid 0000000000000001" in status.stdout
    # The `ovs` package's own client, as other tools would use it.
    error, client = UnixctlClient.create(str(target))
    assert error == 0
    try:
        failed, problem, result = client.transact("proxy/rules", ["--json"])
        assert (failed, problem) == (0, None)
        assert json.loads(result)["rules"][0]["flow"] == SIP_FLOW
    finally:
        client.close()


def test_rules_added_at_run_time_forward_and_deleted_ones_leave_the_bridge(
        ovs, proxy_factory, tmp_path) -> None:
    _, target = start(ovs, proxy_factory, tmp_path)
    out2 = ovs.capture("br0-p2")
    # No rule yet: the miss falls back to drop.
    ovs.inject("br0-p1", sip())
    wait_until(lambda: counter(target, "br0", "fallback_drop") == 1, 10, "the first miss dropped")

    added = cli("rules", "add", SIP_FLOW, "--bridge", "br0", "--target", str(target), "--json")
    assert added.returncode == 0, added.stderr
    rule = json.loads(added.stdout)
    assert (rule["origin"], rule["bridge"], rule["flow"]) == ("cli", "br0", SIP_FLOW)
    ovs.inject("br0-p1", sip())
    assert out2.wait_frames(1) == [sip()]
    cookie = COOKIE_TAG << 48 | rule["id"]
    wait_until(lambda: proxy_cookies(ovs, "br0") == [cookie], 5, "the rule's flow on br0")
    listing = cli("rules", "list", "--target", str(target))
    assert listing.returncode == 0
    assert f"{rule['id']}  cli     br0     {SIP_FLOW}\n" in listing.stdout

    deleted = cli("rules", "del", str(rule["id"]), "--target", str(target))
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f"rule {rule['id']} deleted on bridge br0: {SIP_FLOW}\n"
    wait_until(lambda: proxy_cookies(ovs, "br0") == [], 5, "the rule's flow to leave br0")
    ovs.inject("br0-p1", sip())
    wait_until(lambda: counter(target, "br0", "fallback_drop") == 2, 10, "the next miss dropped")
    assert out2.frames() == [sip()]
    assert cli("rules", "list", "--target", str(target)).stdout == "no rules\n"


def test_bad_requests_get_clear_errors_and_non_zero_exits(require_programs, proxy_factory,
                                                          tmp_path) -> None:
    require_programs("ovs-appctl")
    target = tmp_path / "proxy.ctl"
    stale = socket.socket(socket.AF_UNIX)  # as if a killed proxy had left its socket behind
    stale.bind(str(target))
    stale.close()
    proxy = proxy_factory(proxy_config(free_port(), tmp_path, target))
    proxy.wait_log("ready:")

    added = cli("rules", "add", "udp actions=outptu:2", "--target", str(target))
    assert added.returncode == 1
    assert added.stderr == ("error: bad flow 'udp actions=outptu:2': unknown action 'outptu' "
                            "(did you mean 'output'?) at column 13\n")
    raw = appctl(target, "proxy/add-rule", "udp,tp_dst=99999 actions=drop")
    assert raw.returncode != 0
    assert "tp_dst" in raw.stderr and "server returned an error" in raw.stderr
    gone = cli("rules", "del", "42", "--target", str(target))
    assert (gone.returncode, gone.stderr) == (1, "error: no rule 42 (proxy/rules lists them)\n")
    unknown = appctl(target, "proxy/frobnicate")
    assert unknown.returncode != 0 and '"proxy/frobnicate" is not a valid command' in unknown.stderr
    nowhere = cli("status", "--target", str(tmp_path / "nope.ctl"))
    assert nowhere.returncode == 1 and "no such control socket" in nowhere.stderr
    assert cli("rules", "list", "--target", str(target)).stdout == "no rules\n"
    assert proxy.returncode is None


def test_exit_stops_the_daemon_and_removes_its_socket(require_programs, proxy_factory,
                                                      tmp_path) -> None:
    require_programs("ovs-appctl")
    # Longer than a sockaddr_un holds: both ends go through /proc/self/fd/DIR, as OVS does.
    directory = tmp_path / ("d" * 60) / ("e" * 60)
    directory.mkdir(parents=True)
    target = directory / "proxy.ctl"
    assert len(str(target)) > 108
    proxy = proxy_factory(proxy_config(free_port(), tmp_path, target))
    proxy.wait_log("ready:")
    assert cli("status", "--target", str(target)).returncode == 0
    done = appctl(target, "exit")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert proxy.process.wait(10) == 0
    assert "stopped" in proxy.log_text()
    assert not target.exists()


def test_a_second_proxy_on_a_live_socket_refuses_to_start(require_programs, proxy_factory,
                                                          tmp_path) -> None:
    require_programs("ovs-appctl")
    target = tmp_path / "proxy.ctl"
    first = proxy_factory(proxy_config(free_port(), tmp_path, target))
    first.wait_log("ready:")
    second = proxy_factory(proxy_config(free_port(), tmp_path, target), wait=False)
    assert second.process.wait(20) == 1
    assert f"error: control socket {target} is in use by a running process" in second.log_text()
    assert appctl(target, "version").returncode == 0  # the first one still has its socket
    assert first.returncode is None
