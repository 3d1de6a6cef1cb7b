"""OVSDB management of a real proxy process against a real ovsdb-server and ovs-vswitchd.

Attach and detach (from the config, the command line and `ovs-appctl`), drift repair, a bridge
that appears later, ports leaving and coming back with the rules that depend on them, an OVSDB
restart, hw-offload reporting, and the `controllers` listing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_core import _pki  # integration/ is on sys.path

from ovs_sriov_proxy.sandbox import OvsCommandError, OvsSandbox, free_port, udp_frame, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
COOKIE_TAG = 0x5052
BEFORE_TARGET = "tcp:127.0.0.1:9"  # nothing listens there: the bridge keeps retrying (allowed)


@pytest.fixture(autouse=True)
def _short_lived_clients_may_be_cut_off(ovs: OvsSandbox) -> None:
    ovs.allow_log(r"^(jsonrpc\|WARN\|unix#\d+: receive error: Connection reset by peer"
                  r"|reconnect\|WARN\|unix#\d+: connection dropped \(Connection reset by peer\))$",
                  "ovsdb-server: a test's ovs-vsctl exited while the server was sending it an "
                  "update caused by a transaction of the proxy (seen once in 12 runs of the drift "
                  "test); the same race as the sandbox's allowed 'send error: Broken pipe'")


def config(port: int, tmp_path: Path, ovs: OvsSandbox, *, bridges: tuple[str, ...] = ("br0",),
           rules: str = "", extra: str = "", remote: str | None = None) -> str:
    return f"""\
[proxy]
listen = ["ptcp:{port}:127.0.0.1"]
state_dir = "{tmp_path / 'state'}"
control_socket = "{tmp_path / 'proxy.ctl'}"
protocols = ["OpenFlow13"]
hello_timeout = 1.0
echo_interval = 1.0
dead_interval = 3.0

[ovsdb]
remote = "{remote or f'unix:{ovs.db_socket}'}"
bridges = {json.dumps(list(bridges))}
fail_mode = "secure"
inactivity_probe = 5
max_backoff = 1
vswitchd_ctl = "{ovs.vswitchd_ctl}"
{extra}
{rules}"""


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


def ovsdb_bridge(target: Path, name: str) -> dict[str, Any] | None:
    for bridge in show(target)["ovsdb"]["bridges"]:
        if bridge["name"] == name:
            return bridge  # type: ignore[no-any-return]
    return None


def settings(ovs: OvsSandbox, bridge: str) -> tuple[list[tuple[str, str, str, str]], str, str]:
    """([(target, connection_mode, inactivity_probe, max_backoff)], fail_mode, protocols)."""
    for _ in range(5):
        try:
            return _settings(ovs, bridge)
        except OvsCommandError:  # the proxy replaced a Controller row between two reads
            continue
    return _settings(ovs, bridge)


def _settings(ovs: OvsSandbox, bridge: str) -> tuple[list[tuple[str, str, str, str]], str, str]:
    controllers = []
    for uuid in ovs.vsctl("get", "Bridge", bridge, "controller").strip("[] \n").split(", "):
        if uuid:
            values = ovs.vsctl("get", "Controller", uuid, "target", "connection_mode",
                               "inactivity_probe", "max_backoff").split()
            controllers.append((values[0].strip('"'), values[1], values[2], values[3]))
    fail_mode = ovs.vsctl("get", "Bridge", bridge, "fail_mode").strip()
    protocols = ovs.vsctl("get", "Bridge", bridge, "protocols").strip()
    return sorted(controllers), fail_mode, protocols


def attached_settings(port: int) -> tuple[list[tuple[str, str, str, str]], str, str]:
    return [(f"tcp:127.0.0.1:{port}", "out-of-band", "5000", "1000")], "secure", '[OpenFlow13]'


def proxy_cookies(ovs: OvsSandbox, bridge: str) -> list[int]:
    cookies = (int(flow.info.get("cookie", 0)) for flow in ovs.dump_flows(bridge))
    return sorted(cookie for cookie in cookies if cookie >> 48 == COOKIE_TAG)


def rules(target: Path) -> list[dict[str, Any]]:
    done = appctl(target, "proxy/rules", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["rules"]  # type: ignore[no-any-return]


def udp(port: int = 53) -> bytes:
    return udp_frame("00:00:00:00:00:01", "00:00:00:00:00:02", "10.0.0.1", "10.0.0.2", 40000, port,
                     b"hello")


def memory(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "state" / "ovsdb-bridges.json").read_text())["bridges"]  # type: ignore[no-any-return]


def test_attach_and_detach_round_trip(ovs, proxy_factory, tmp_path) -> None:
    ovs.allow_log(r"^rconn\|WARN\|br0<->tcp:127\.0\.0\.1:\d+: connection dropped \(Broken pipe\)$",
                  "the test detaches br0 right after attaching it, while br0 is in its OpenFlow "
                  "handshake with the proxy")
    ovs.add_bridge("br0", protocols=("OpenFlow10",), datapath_id=1, ports={"br0-p1": 1},
                   controller=BEFORE_TARGET, fail_mode="standalone")
    before = settings(ovs, "br0")
    assert before == ([(BEFORE_TARGET, "out-of-band", "[]", "1000")], "standalone", '[OpenFlow10]')
    port = free_port()
    proxy = proxy_factory(config(port, tmp_path, ovs))
    target = tmp_path / "proxy.ctl"
    wait_until(lambda: settings(ovs, "br0") == attached_settings(port), 10, "br0 attached")
    ovs.wait_connected("br0")
    wait_until(lambda: [b["name"] for b in show(target)["bridges"]] == ["br0"], 10,
               "the OpenFlow session of br0")
    assert memory(tmp_path)["br0"] == {
        "controllers": [{"target": BEFORE_TARGET, "connection_mode": "out-of-band",
                         "inactivity_probe": None, "max_backoff": 1000}],
        "fail_mode": "standalone", "protocols": ["OpenFlow10"]}
    text = appctl(target, "proxy/show").stdout
    assert f"  br0: attached; controller tcp:127.0.0.1:{port} (connected)" in text or \
        f"  br0: attached; controller tcp:127.0.0.1:{port};" in text

    # Detach through the command line restores what was there before, and forgets it. Like
    # ovs-vsctl, the command returns once OVSDB has the change.
    done = cli("detach", "br0", "--target", str(target))
    assert (done.returncode, done.stdout) == (0, "br0: detached\n")
    assert settings(ovs, "br0") == before
    wait_until(lambda: memory(tmp_path) == {}, 5, "the memory of br0 to be dropped")
    wait_until(lambda: show(target)["bridges"] == [], 10, "br0's session to end")
    assert ovsdb_bridge(target, "br0")["status"] == "detached"  # type: ignore[index]
    again = cli("detach", "br0", "--target", str(target))
    assert (again.returncode, again.stderr) == (1, "error: br0 is not attached (proxy/show lists the bridges)\n")

    done = cli("detach", "br0", "--target", str(target), "--no-wait")
    assert (done.returncode, done.stderr) == (1, "error: br0 is not attached (proxy/show lists the bridges)\n")

    # Attach through the real ovs-appctl binary; a second attach changes nothing.
    done = appctl(target, "proxy/attach", "br0", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bridge"] == "br0"
    wait_until(lambda: settings(ovs, "br0") == attached_settings(port), 10, "br0 attached again")
    # ovsdb-server has the settings; the proxy's own replica of the database follows a bit later.
    wait_until(lambda: ovsdb_bridge(target, "br0")["status"] == "attached", 10,  # type: ignore[index]
               "the proxy to see br0 attached")
    assert appctl(target, "proxy/attach", "br0").stdout == "br0: attached\n"
    wait_until(lambda: [b["name"] for b in show(target)["bridges"]] == ["br0"], 10,
               "the OpenFlow session of br0 again")
    assert memory(tmp_path)["br0"]["fail_mode"] == "standalone"

    # A restarted proxy finds br0 attached already: no transaction, the memory is kept, and
    # detach still restores the settings from before the first attach.
    proxy.stop()
    second = proxy_factory(config(port, tmp_path, ovs))
    second.wait_log("ovsdb: connected to")
    wait_until(lambda: ovsdb_bridge(target, "br0")["status"] == "attached", 10,  # type: ignore[index]
               "br0 reported attached")
    assert "br0: attaching" not in second.log_text()
    assert appctl(target, "proxy/detach", "br0").returncode == 0
    wait_until(lambda: settings(ovs, "br0") == before, 10, "br0's earlier settings back again")

    # A bridge that does not exist yet: the command line does not wait for it to appear.
    done = cli("attach", "br9", "--target", str(target), "--json")
    assert (done.returncode, json.loads(done.stdout)) == (0, {"bridge": "br9", "status": "waiting"})
    done = cli("detach", "br9", "--target", str(target))
    assert (done.returncode, done.stdout) == (0, "br9: detached\n")


def test_drift_is_repaired_with_a_warning(ovs, proxy_factory, tmp_path) -> None:
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1})
    port = free_port()
    proxy = proxy_factory(config(port, tmp_path, ovs))
    wait_until(lambda: settings(ovs, "br0") == attached_settings(port), 10, "br0 attached")
    ovs.set_controller("br0", BEFORE_TARGET)  # out-of-band: in-band would make OVS warn
    ovs.vsctl("set-fail-mode", "br0", "standalone")
    proxy.wait_log("br0: its control settings were changed by someone else")
    wait_until(lambda: settings(ovs, "br0") == attached_settings(port), 10, "br0 repaired")
    ovs.wait_connected("br0")
    assert "WARNING ovs_sriov_proxy.ovsdb.manager: br0: its control settings were changed" in proxy.log_text()


def test_a_bridge_created_later_is_attached_when_it_appears(ovs, proxy_factory, tmp_path) -> None:
    port = free_port()
    proxy_factory(config(port, tmp_path, ovs, bridges=("br-late",)))
    target = tmp_path / "proxy.ctl"
    wait_until(lambda: (ovsdb_bridge(target, "br-late") or {}).get("status") == "waiting", 10,
               "br-late reported as waited for")
    assert appctl(target, "proxy/attach", "br-later").stdout == "br-later: attached when it appears in OVSDB\n"
    ovs.add_bridge("br-late", datapath_id=7, ports={"late-p1": 1})
    wait_until(lambda: settings(ovs, "br-late") == attached_settings(port), 10, "br-late attached")
    wait_until(lambda: [b["name"] for b in show(target)["bridges"]] == ["br-late"], 10,
               "the OpenFlow session of br-late")
    ovs.add_bridge("br-later", datapath_id=8)
    wait_until(lambda: settings(ovs, "br-later") == attached_settings(port), 10, "br-later attached")
    wait_until(lambda: sorted(b["name"] for b in show(target)["bridges"]) == ["br-late", "br-later"],
               10, "the OpenFlow session of br-later")


def test_port_removal_purges_the_rules_and_flows_that_reference_it(ovs, proxy_factory,
                                                                    tmp_path) -> None:
    vm_rule = '[[rules]]\nflow = "priority=100,udp actions=output:1"\niface_id = "vm-a"\n'
    port = free_port()
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1, "br0-p2": 2, "br0-p3": 3})
    ovs.vsctl("set", "Interface", "br0-p2", "external_ids:iface-id=vm-a",
              "external_ids:attached-mac=00:00:00:00:00:01")
    proxy_factory(config(port, tmp_path, ovs, rules=vm_rule))
    target = tmp_path / "proxy.ctl"
    wait_until(lambda: [b["name"] for b in show(target)["bridges"]] == ["br0"], 10,
               "the OpenFlow session of br0")
    wait_until(lambda: [r["origin"] for r in rules(target)] == ["vm"], 10, "the VM rule active")
    [vm] = rules(target)
    assert (vm["bridge"], vm["flow"]) == ("br0", "priority=100,in_port=2,udp actions=output:1")
    added = cli("rules", "add", "priority=90,in_port=3,udp actions=output:1", "--bridge", "br0",
                "--target", str(target), "--json")
    assert added.returncode == 0, added.stderr
    cli_rule = json.loads(added.stdout)

    out1 = ovs.capture("br0-p1")
    ovs.inject("br0-p2", udp())
    ovs.inject("br0-p3", udp())
    out1.wait_frames(2)
    both = sorted(COOKIE_TAG << 48 | rule_id for rule_id in (vm["id"], cli_rule["id"]))
    wait_until(lambda: proxy_cookies(ovs, "br0") == both, 10, "a flow of each rule on br0")

    # The VM stops: its interface goes, so does its rule and its flow.
    ovs.vsctl("del-port", "br0", "br0-p2")
    wait_until(lambda: [r["id"] for r in rules(target)] == [cli_rule["id"]], 10, "the VM rule gone")
    wait_until(lambda: proxy_cookies(ovs, "br0") == [COOKIE_TAG << 48 | cli_rule["id"]], 10,
               "the VM rule's flow gone")
    # Port 3 goes: the run-time rule that matched in_port=3 is deleted, with its flow.
    ovs.vsctl("del-port", "br0", "br0-p3")
    wait_until(lambda: rules(target) == [], 10, "the rule of port 3 purged")
    wait_until(lambda: proxy_cookies(ovs, "br0") == [], 10, "no flow of the proxy left")

    # The VM comes back on another port (migration in): its rule follows it.
    ovs.vsctl("add-port", "br0", "vm-a-new", "--", "set", "Interface", "vm-a-new", "type=dummy",
              "ofport_request=7", "external_ids:iface-id=vm-a")
    wait_until(lambda: [r["flow"] for r in rules(target)]
               == ["priority=100,in_port=7,udp actions=output:1"], 10, "the VM rule on port 7")
    ovs.inject("vm-a-new", udp())
    out1.wait_frames(3)


def restart_ovsdb_server(ovs: OvsSandbox) -> None:
    """Kill the sandbox's ovsdb-server and start another on the same database file."""
    ovs.kill_daemon("ovsdb-server")
    ovs.start_ovsdb()


def test_ovsdb_restart_is_survived_without_repeating_work(ovs, proxy_factory, tmp_path) -> None:
    # ovs-vswitchd notices its database going away and reconnects.
    ovs.allow_log(r"^(reconnect|jsonrpc|stream_unix|ovsdb_idl)\|(WARN|ERR)\|unix:\S*db\.sock",
                  "ovs-vswitchd while the test has ovsdb-server killed")
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1})
    port = free_port()
    proxy = proxy_factory(config(port, tmp_path, ovs))
    target = tmp_path / "proxy.ctl"
    wait_until(lambda: settings(ovs, "br0") == attached_settings(port), 10, "br0 attached")
    proxy.wait_log("br0: attaching")
    restart_ovsdb_server(ovs)
    proxy.wait_log("ovsdb: lost the connection", timeout=15)
    proxy.wait_log("ovsdb: reconnected to", timeout=30)
    wait_until(lambda: show(target)["ovsdb"]["connected"], 10, "the proxy reporting OVSDB back")
    assert show(target)["ovsdb"]["connects"] == 2
    # The state read again is the same: nothing is attached twice.
    assert proxy.log_text().count("br0: attaching") == 1
    # And the proxy still acts on changes made after the restart.
    ovs.set_controller("br0", BEFORE_TARGET)
    wait_until(lambda: settings(ovs, "br0") == attached_settings(port), 10, "br0 repaired")
    wait_until(lambda: [b["name"] for b in show(target)["bridges"]] == ["br0"], 10,
               "the OpenFlow session of br0 again")


def test_hw_offload_is_reported_per_bridge(ovs, proxy_factory, tmp_path) -> None:
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1, "br0-p2": 2}, hw_offload=True)
    ovs.vsctl("set", "Open_vSwitch", ".", "other_config:tc-policy=skip_sw")
    port, metrics_port = free_port(), free_port()
    proxy_factory(config(port, tmp_path, ovs,
                         extra=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'))
    target = tmp_path / "proxy.ctl"
    assert "Assigned flow API 'dummy'" in (ovs.directory / "ovs-vswitchd.log").read_text()
    bridge = wait_until(lambda: (b := ovsdb_bridge(target, "br0")) and
                        b["offloaded_flows"] is not None and b["status"] == "attached" and b,
                        15, "an offloaded-flow count on the attached bridge")
    assert (bridge["hw_offload"], bridge["tc_policy"]) == (True, "skip_sw")
    # The dummy datapath lists no offloaded flows on OVS 3.1; what OVS shows is what we report.
    shown = ovs.appctl("dpctl/dump-flows", "-m", "type=offloaded")
    assert bridge["offloaded_flows"] == sum(1 for line in shown.splitlines() if "in_port(" in line)
    text = appctl(target, "proxy/show").stdout
    assert "; hw-offload on (tc-policy skip_sw)\n" in text
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        scraped = response.read().decode()
    assert 'ovs_sriov_proxy_hw_offload{bridge="br0",tc_policy="skip_sw"} 1.0' in scraped
    assert 'ovs_sriov_proxy_bridge_attached{bridge="br0"} 1.0' in scraped
    assert "ovs_sriov_proxy_ovsdb_connected 1.0" in scraped
    # Turned off at run time, it is reported off.
    ovs.vsctl("set", "Open_vSwitch", ".", "other_config:hw-offload=false")
    wait_until(lambda: ovsdb_bridge(target, "br0")["hw_offload"] is False, 10,  # type: ignore[index]
               "hw-offload reported off")


def test_controllers_lists_each_link_state(ovs, proxy_factory, tmp_path) -> None:
    controller_port = free_port()
    ovs.start_testcontroller(controller_port)
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1})
    port = free_port()
    upstream = (f'[[controllers]]\nname = "tc"\ntarget = "tcp:127.0.0.1:{controller_port}"\n'
                f'[[controllers]]\nname = "away"\ntarget = "tcp:127.0.0.1:{free_port()}"\n')
    proxy_factory(config(port, tmp_path, ovs, extra=upstream))
    target = tmp_path / "proxy.ctl"

    def links() -> dict[str, list[str]] | None:
        done = cli("controllers", "--target", str(target), "--json")
        assert done.returncode == 0, done.stderr
        found = {c["name"]: [link["state"] for link in c["links"]]
                 for c in json.loads(done.stdout)["controllers"]}
        return found if found["tc"] == ["connected"] else None

    assert wait_until(links, 15, "the link to tc connected") == {"tc": ["connected"],
                                                                   "away": ["connecting"]}
    text = appctl(target, "proxy/controllers").stdout
    assert f"tc: tcp:127.0.0.1:{controller_port}, priority 0\n  br0 (dpid 0000000000000001, OpenFlow13): connected" in text


def test_the_proxy_starts_without_ovsdb_and_attaches_once_it_is_there(ovs, proxy_factory,
                                                                       tmp_path) -> None:
    ovs.allow_log(r"^(reconnect|jsonrpc|stream_unix|ovsdb_idl)\|(WARN|ERR)\|unix:\S*db\.sock",
                  "ovs-vswitchd while the test has ovsdb-server killed")
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1})
    ovs.kill_daemon("ovsdb-server")
    port = free_port()
    proxy_factory(config(port, tmp_path, ovs))
    target = tmp_path / "proxy.ctl"
    # Up and answering without its database: OpenFlow and the control socket do not wait.
    state = show(target)["ovsdb"]
    assert state["connected"] is False and state["connects"] == 0
    ovs.start_ovsdb()
    wait_until(lambda: show(target)["ovsdb"]["connected"], 20, "the proxy connecting to OVSDB")
    wait_until(lambda: settings(ovs, "br0") == attached_settings(port), 10, "br0 attached")
    ovs.wait_connected("br0")


def ovsdb_tls(pki: Path, name: str, ca: str) -> str:
    """An [ovsdb.tls] table: the key and certificate `name` made by _pki, trusting CA `ca`."""
    return (f'[ovsdb.tls]\nprivate_key = "{pki / f"{name}-privkey.pem"}"\n'
            f'certificate = "{pki / f"{name}-cert.pem"}"\n'
            f'ca_cert = "{pki / "pki" / ca / "cacert.pem"}"\n')


def test_ssl_remote_needs_a_certificate_the_server_trusts(ovs, proxy_factory, tmp_path) -> None:
    ovs.allow_log(r"^(stream_ssl\|WARN\|SSL_read: error:\w+:SSL routines::unexpected eof while reading"
                  r"|jsonrpc\|WARN\|ssl:127\.0\.0\.1:\d+: receive error: Input/output error"
                  r"|reconnect\|WARN\|ssl:127\.0\.0\.1:\d+: connection dropped \(Input/output error\))$",
                  "ovsdb-server: python-ovs closes an ssl: session without a TLS close_notify, after "
                  "ovsdbapp's schema fetch and when the proxy stops")
    ovs.allow_log(r"^(stream_ssl\|WARN\|SSL_accept: error:\w+:SSL routines::certificate verify failed"
                  r"|jsonrpc\|WARN\|ssl:127\.0\.0\.1:\d+: receive error: Protocol error"
                  r"|reconnect\|WARN\|ssl:127\.0\.0\.1:\d+: connection dropped \(Protocol error\))$",
                  "ovsdb-server refusing the test's rogue proxy")
    # ovsdb-server plays the switch: its own certificate, and trust in the controller CA only.
    pki = _pki(tmp_path)
    ovs.set_ssl(pki / "sw-privkey.pem", pki / "sw-cert.pem", pki / "pki" / "controllerca" / "cacert.pem")
    remote = ovs.listen_ssl(free_port())
    ovs.add_bridge("br0", datapath_id=1, ports={"br0-p1": 1})
    port = free_port()
    proxy_factory(config(port, tmp_path, ovs, remote=remote,
                         extra=ovsdb_tls(pki, "ctl", "switchca")))
    target = tmp_path / "proxy.ctl"
    wait_until(lambda: settings(ovs, "br0") == attached_settings(port), 15, "br0 attached over ssl")
    state = show(target)["ovsdb"]
    assert (state["remote"], state["connected"], state["connects"]) == (remote, True, 1)
    ovs.wait_connected("br0")

    # A proxy with a certificate of the switch CA, which the server does not trust, is refused.
    rogue_dir = tmp_path / "rogue"
    rogue_dir.mkdir()
    rogue = proxy_factory(config(free_port(), rogue_dir, ovs, bridges=(), remote=remote,
                                 extra=ovsdb_tls(pki, "sw", "switchca")))
    rogue.wait_log(f"ERROR ovs_sriov_proxy.ovsdb.manager: ovsdb: {remote}: TLS failed: ",
                   timeout=15)
    state = show(rogue_dir / "proxy.ctl")["ovsdb"]
    assert (state["connected"], state["connects"]) == (False, 0)
    assert show(target)["ovsdb"]["connected"] is True
