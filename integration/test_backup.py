"""Restarts and outages lose nothing: the rules backup, with real processes and kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_core import add_bridge, proxy_config, proxy_flows, sip  # integration/ is on sys.path
from test_northbound import controllers_toml, start_tiny

from ovs_sriov_proxy.control import transact
from ovs_sriov_proxy.sandbox import free_port, udp_frame, wait_until


def frame_to(n: int) -> bytes:
    """A frame for the n-th distinct destination: each becomes its own learned rule."""
    return udp_frame("00:00:00:00:00:0a", f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}",
                     "10.0.0.1", "10.0.0.2", 1000, 2000, b"x")


def rules_of(state: Path) -> list[dict]:
    return json.loads(transact(state / "proxy.ctl", "proxy/rules", ["--json"]))["rules"]


def learned(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["origin"], r["flow"]): r for r in rows if r["origin"] == "learner"}


def test_a_proxy_killed_mid_burst_of_learning_gets_every_acknowledged_rule_back(
        ovs, proxy_factory, tmp_path) -> None:
    learner, _ = start_tiny(ovs, "learner", "--answer", "flow-mod", "--output", "2")
    port, state = free_port(), tmp_path / "state"
    config = proxy_config(port, state, []) + controllers_toml([("learner", learner, 10, "")])
    proxy = proxy_factory(config)
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller learner connected")

    stop = threading.Event()

    def burst() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            ovs.inject("br0-p1", frame_to(n))

    injector = threading.Thread(target=burst)
    injector.start()
    try:
        acknowledged = wait_until(
            lambda: (rows := [r for r in learned(rules_of(state)).values() if r["backed_up"]])
            and len(rows) >= 40 and rows, 60, "40 learned rules acknowledged by the backup")
        os.kill(proxy.pid, signal.SIGKILL)  # mid-burst: the injector is still going
        proxy.process.wait()
    finally:
        stop.set()
        injector.join()

    restarted = proxy_factory(config)
    restored = learned(rules_of(state))
    for row in acknowledged:
        back = restored.get(("learner", row["flow"]))
        assert back is not None, f"acknowledged rule {row} lost"
        assert back["id"] == row["id"]  # the same id, so the same cookie on the bridge
    restarted.wait_log("rules restored")


def test_forwarding_resumes_from_the_store_after_ovs_vswitchd_is_killed(
        ovs, proxy_factory, tmp_path) -> None:
    learner, process = start_tiny(ovs, "learner", "--answer", "flow-mod", "--output", "2")
    port, state = free_port(), tmp_path / "state"
    proxy = proxy_factory(proxy_config(port, state, ["priority=5,udp,tp_dst=5060 actions=output:3"])
                          + controllers_toml([("learner", learner, 10, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller learner connected")
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", frame_to(1))
    assert out2.wait_frames(1) == [frame_to(1)]
    wait_until(lambda: learned(rules_of(state)), 5, "the rule learned from the controller")

    ovs.stop_process(process)  # no controller from here on
    ovs.allow_log(r"connection failed|Connection refused|dropped \d+ log messages|"
                  r"unix:.*: connection dropped|pidfile", "the restarted vswitchd reconnects")
    ovs.kill_vswitchd()
    ovs.start_vswitchd()
    ovs.wait_connected("br0")
    # The learned rule is back on the bridge before any packet asks for it ...
    wait_until(lambda: proxy_flows(ovs, "br0", "OpenFlow13"), 10, "the learned rule reinstalled")
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    ovs.inject("br0-p1", frame_to(1))
    assert out2.wait_frames(1) == [frame_to(1)]
    # ... and local rules answer misses as before.
    ovs.inject("br0-p1", sip(5060))
    assert out3.wait_frames(1) == [sip(5060)]


@pytest.mark.parametrize("protocol", ["OpenFlow10", "OpenFlow13", "OpenFlow15"])
def test_a_restarted_proxy_keeps_agreeing_flows_and_removes_stale_ones(
        ovs, proxy_factory, tmp_path, protocol) -> None:
    port, state = free_port(), tmp_path / "state"
    rules = ["priority=5,udp,tp_dst=5060 actions=output:3", "priority=6,udp,tp_dst=53 actions=output:2"]
    proxy = proxy_factory(proxy_config(port, state, rules))
    add_bridge(ovs, "br0", protocol, port)
    ovs.inject("br0-p1", sip(5060))
    ovs.inject("br0-p1", sip(53))
    wait_until(lambda: len(cookies(ovs, protocol)) == 2, 5, "both rules' flows")
    before = cookies(ovs, protocol)
    proxy.stop()
    # The second rule is gone from the config when the proxy comes back.
    restarted = proxy_factory(proxy_config(port, state, rules[:1]))
    ovs.wait_connected("br0")
    restarted.wait_log("connected with OpenFlow")
    after = wait_until(lambda: (c := cookies(ovs, protocol)) and len(c) == 1 and c, 10,
                       "the removed rule's flow to go")
    assert after < before  # the kept flow is the one of before: same rule id, same cookie
    assert "flows_kept=1" in transact(state / "proxy.ctl", "proxy/show")


def cookies(ovs, protocol: str) -> set[str]:
    """The cookies of the proxy's flows (text: ovs.flow cannot parse every version's dump)."""
    found = set()
    for line in ovs.ofctl("-O", protocol, "dump-flows", "br0").splitlines():
        cookie = line.strip().split(",")[0]
        if cookie.startswith("cookie=0x5052"):
            found.add(cookie)
    return found


def test_learned_rules_answer_for_a_dead_controller_and_retain_drop_removes_them(
        ovs, proxy_factory, tmp_path) -> None:
    keeper, keeper_process = start_tiny(ovs, "keeper", "--answer", "flow-mod", "--output", "2")
    dropper, dropper_process = start_tiny(ovs, "dropper", "--answer", "flow-mod", "--output", "3")
    port, state = free_port(), tmp_path / "state"
    controllers = controllers_toml([("keeper", keeper, 10, ""), ("dropper", dropper, 5, "")])
    controllers = controllers.replace('name = "dropper"', 'name = "dropper"\nretain = "drop"')
    proxy = proxy_factory(proxy_config(port, state, []) + controllers)
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller keeper connected")
    proxy.wait_log("controller dropper connected")
    ovs.stop_process(keeper_process)  # dropper answers this one
    proxy.wait_log("controller keeper disconnected")
    out3 = ovs.capture("br0-p3")
    ovs.inject("br0-p1", frame_to(7))
    assert out3.wait_frames(1) == [frame_to(7)]
    wait_until(lambda: [r for r in rules_of(state) if r["origin"] == "dropper"], 5,
               "the rule learned from dropper")
    ovs.stop_process(dropper_process)
    wait_until(lambda: not [r for r in rules_of(state) if r["origin"] == "dropper"], 10,
               "retain = drop to remove dropper's rules")


def test_a_corrupt_backup_is_set_aside_and_the_configured_rules_still_apply(
        ovs, proxy_factory, tmp_path) -> None:
    port, state = free_port(), tmp_path / "state"
    config = proxy_config(port, state, ["priority=5,udp,tp_dst=5060 actions=output:3"])
    proxy = proxy_factory(config)
    for n in range(300):
        transact(state / "proxy.ctl", "proxy/add-rule", [f"priority=9,udp,tp_dst={1000 + n} actions=output:2"])
    wait_until(lambda: all(r["backed_up"] for r in rules_of(state)), 10, "every rule backed up")
    proxy.stop()
    database = state / "rules.db"
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    damaged = bytearray(database.read_bytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 4096] = b"\xff" * 4096
    database.write_bytes(bytes(damaged))

    restarted = proxy_factory(config)
    log = restarted.wait_log("was unreadable")
    assert "kept as" in log
    aside = [p for p in state.iterdir() if p.name.startswith("rules.db.corrupt-")
             and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes() == bytes(damaged)
    rows = rules_of(state)
    cli_rules = [r for r in rows if r["origin"] == "cli"]
    assert 230 <= len(cli_rules) < 300  # what the damaged page held (about 50) is gone
    add_bridge(ovs, "br0", "OpenFlow13", port)
    out3 = ovs.capture("br0-p3")
    ovs.inject("br0-p1", sip(5060))
    assert out3.wait_frames(1) == [sip(5060)]


def test_rules_export_and_import_move_rules_between_proxies(ovs, proxy_factory, tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    proxy_factory(proxy_config(free_port(), first, ["priority=5,udp,tp_dst=5060 actions=output:3"]))
    proxy_factory(proxy_config(free_port(), second, []))
    transact(first / "proxy.ctl", "proxy/add-rule", ["priority=9,tcp,tp_dst=80 actions=output:2", "br0"])
    cli = [sys.executable, "-m", "ovs_sriov_proxy", "rules"]
    exported = subprocess.run([*cli, "export", "-t", str(first / "proxy.ctl")], check=True,
                              capture_output=True, text=True).stdout
    assert len(exported.splitlines()) == 2
    (tmp_path / "rules.jsonl").write_text(exported)
    done = subprocess.run([*cli, "import", str(tmp_path / "rules.jsonl"), "-t", str(second / "proxy.ctl")],
                          check=True, capture_output=True, text=True).stdout
    assert "2 rules imported, 0 skipped" in done
    rows = {(r["origin"], r["bridge"], r["flow"]) for r in rules_of(second)}
    assert rows == {("import", None, "priority=5,udp,tp_dst=5060 actions=output:3"),
                    ("cli", "br0", "priority=9,tcp,tp_dst=80 actions=output:2")}
    # Importing again adds nothing; the offline export reads the backup file directly.
    again = subprocess.run([*cli, "import", str(tmp_path / "rules.jsonl"), "-t", str(second / "proxy.ctl")],
                           check=True, capture_output=True, text=True).stdout
    assert "0 rules imported, 2 skipped" in again
    wait_until(lambda: all(r["backed_up"] for r in rules_of(second)), 10, "the import backed up")
    offline = subprocess.run([*cli, "export", "--backup", str(second / "rules.db")], check=True,
                             capture_output=True, text=True).stdout
    assert len(offline.splitlines()) == 2


def spawn_tiny(ovs, name: str, port: int, *args: str):
    from test_northbound import TINY

    from ovs_sriov_proxy.sandbox import tcp_listening
    return ovs.spawn(name, [sys.executable, str(TINY), "--listen", str(port), *args],
                     ready=lambda: tcp_listening("127.0.0.1", port),
                     allowed_log_lines=[r"^answered miss "])


def learner_setup(ovs, proxy_factory, tmp_path, *args: str):
    from test_northbound import controller_flows

    controller_port, port, state = free_port(), free_port(), tmp_path / "state"
    first = spawn_tiny(ovs, "first", controller_port, "--answer", "flow-mod", "--output", "2",
                       "--idle-timeout", "1")
    proxy = proxy_factory(proxy_config(port, state, [], extra="miss_timeout_ms = 300")
                          + controllers_toml([("learner", controller_port, 10, "")]))
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller learner connected")
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", frame_to(1))
    assert out2.wait_frames(1) == [frame_to(1)]
    wait_until(lambda: learned(rules_of(state)), 5, "the learned rule")
    ovs.stop_process(first)
    proxy.wait_log("controller learner disconnected")
    wait_until(lambda: not controller_flows(ovs, "br0", "OpenFlow13"), 10,
               "the controller's flow to expire")
    spawn_tiny(ovs, "second", controller_port, *args)
    proxy.wait_log("will be revalidated", timeout=20)
    return proxy, state


def test_a_returning_controller_that_answers_differently_replaces_what_it_taught(
        ovs, proxy_factory, tmp_path) -> None:
    proxy, state = learner_setup(ovs, proxy_factory, tmp_path,
                                 "--answer", "flow-mod", "--output", "3")
    out2, out3 = ovs.capture("br0-p2"), ovs.capture("br0-p3")
    ovs.inject("br0-p1", frame_to(1))
    assert out3.wait_frames(1) == [frame_to(1)]
    assert out2.frames() == []
    flows = wait_until(lambda: (rows := list(learned(rules_of(state)))) and len(rows) == 1 and rows,
                       5, "one learned rule, the new answer")
    assert flows[0][1].endswith("actions=output:3")
    assert "revalidated_replaced=1" in transact(state / "proxy.ctl", "proxy/show")


def test_a_returning_controller_that_stays_silent_lets_the_learned_rule_stand(
        ovs, proxy_factory, tmp_path) -> None:
    proxy, state = learner_setup(ovs, proxy_factory, tmp_path, "--answer", "none")
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", frame_to(1))
    assert out2.wait_frames(1) == [frame_to(1)]  # from the rule, once the miss timed out
    ovs.inject("br0-p1", frame_to(1))
    assert out2.wait_frames(2) == [frame_to(1)] * 2
    show = transact(state / "proxy.ctl", "proxy/show")
    assert "revalidated_unchanged=1" in show and "revalidations=1" in show


def test_retain_seconds_keeps_learned_rules_only_that_long_after_the_controller_left(
        ovs, proxy_factory, tmp_path) -> None:
    learner, process = start_tiny(ovs, "learner", "--answer", "flow-mod", "--output", "2")
    port, state = free_port(), tmp_path / "state"
    controllers = controllers_toml([("learner", learner, 10, "")]).replace(
        'name = "learner"', 'name = "learner"\nretain = 1.5')
    proxy = proxy_factory(proxy_config(port, state, []) + controllers)
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller learner connected")
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", frame_to(3))
    assert out2.wait_frames(1) == [frame_to(3)]
    wait_until(lambda: learned(rules_of(state)), 5, "the learned rule")
    ovs.stop_process(process)
    proxy.wait_log("kept for 1.5 s while it is away")
    assert learned(rules_of(state))  # still answering right after the loss
    wait_until(lambda: not learned(rules_of(state)), 10, "the rule to go after 1.5 s")


def test_a_proxy_restart_is_not_a_controller_outage_and_leaves_controller_flows_alone(
        ovs, proxy_factory, tmp_path) -> None:
    from test_northbound import controller_flows

    learner, _ = start_tiny(ovs, "learner", "--answer", "flow-mod", "--output", "2")
    port, state = free_port(), tmp_path / "state"
    controllers = controllers_toml([("learner", learner, 10, "")]).replace(
        'name = "learner"', 'name = "learner"\nretain = "drop"')
    config = proxy_config(port, state, []) + controllers
    proxy = proxy_factory(config)
    add_bridge(ovs, "br0", "OpenFlow13", port)
    proxy.wait_log("controller learner connected")
    out2 = ovs.capture("br0-p2")
    ovs.inject("br0-p1", frame_to(5))
    assert out2.wait_frames(1) == [frame_to(5)]
    before = wait_until(lambda: controller_flows(ovs, "br0", "OpenFlow13"), 5, "its flow")
    rule = wait_until(lambda: learned(rules_of(state)), 5, "the learned rule")
    proxy.stop()  # SIGTERM: retain = drop must not fire
    assert "dropped (retain = drop)" not in proxy.log_text()

    restarted = proxy_factory(config)
    restarted.wait_log("rules restored")
    ovs.wait_connected("br0")
    restarted.wait_log("controller learner connected")
    assert learned(rules_of(state)).keys() == rule.keys()
    restarted.wait_log("will be revalidated")
    # The learned rule stood on the bridge as the controller's flow: still there, its cookie
    # unchanged, not overwritten by a reinstall under the proxy's cookie.
    assert [line.split(",")[0] for line in controller_flows(ovs, "br0", "OpenFlow13")] == [
        line.split(",")[0] for line in before]
    assert cookies(ovs, "OpenFlow13") == set()
