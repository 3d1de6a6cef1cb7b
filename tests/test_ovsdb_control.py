"""proxy/attach, proxy/detach, proxy/controllers and the ovsdb part of proxy/show, sans-IO."""

from __future__ import annotations

import json
from typing import Any

from ovs_sriov_proxy.control import Dispatcher, format_show, show_document
from ovs_sriov_proxy.rules.model import FlowRule

OVSDB_SECTION = {
    "remote": "unix:/var/run/openvswitch/db.sock", "connected": True, "connects": 1,
    "controller_target": "tcp:127.0.0.1:6653", "hw_offload": True, "tc_policy": "skip_sw",
    "offload_checked": 1.0, "offload_error": None,
    "bridges": [
        {"name": "br-int", "status": "attached", "present": True,
         "controllers": ["tcp:127.0.0.1:6653"], "connected_controllers": ["tcp:127.0.0.1:6653"],
         "fail_mode": "secure", "protocols": ["OpenFlow13"], "ports": 4, "hw_offload": True,
         "tc_policy": "skip_sw", "offloaded_flows": 3},
        {"name": "br-late", "status": "waiting", "present": False, "controllers": [],
         "connected_controllers": [], "fail_mode": None, "protocols": [], "ports": 0,
         "hw_offload": True, "tc_policy": "skip_sw", "offloaded_flows": None},
    ],
}

CONTROLLERS = {"controllers": [
    {"name": "faucet", "target": "tcp:127.0.0.1:6633", "priority": 10, "links": [
        {"bridge": "br-int", "datapath_id": "0000000000000001", "state": "connected", "version": 4,
         "connects": 2}]},
    {"name": "backup", "target": "tcp:127.0.0.1:6634", "priority": 0, "links": []},
]}


class FakeDaemon:
    def __init__(self, managed: bool = True) -> None:
        self.managed = managed
        self.attached: set[str] = set()

    def snapshot(self) -> dict[str, Any]:
        return {"rules": 0, "bridges": [], "ovsdb": OVSDB_SECTION}

    def rules(self) -> list[tuple[int, FlowRule]]:
        return []

    def attach(self, bridge: str) -> str:
        if not self.managed:
            raise LookupError("no [ovsdb] table in the config: the proxy does not manage bridges")
        self.attached.add(bridge)
        return "waiting" if bridge == "br-late" else "attaching"

    def detach(self, bridge: str) -> str | None:
        if not self.managed:
            raise LookupError("no [ovsdb] table in the config: the proxy does not manage bridges")
        if bridge not in self.attached:
            return None
        self.attached.discard(bridge)
        return "detaching"

    def controllers(self) -> dict[str, Any]:
        return CONTROLLERS

    def stop(self) -> None:
        pass


def run(daemon: FakeDaemon, method: str, *params: str) -> tuple[bool, str]:
    reply = Dispatcher(daemon).dispatch(method, params)  # type: ignore[arg-type]
    return reply.ok, reply.text


def test_attach_and_detach_replies() -> None:
    daemon = FakeDaemon()
    assert run(daemon, "proxy/attach", "br-int") == (True, "br-int: attaching (the transaction is under way)\n")
    assert run(daemon, "proxy/attach", "br-late") == (True, "br-late: attached when it appears in OVSDB\n")
    ok, text = run(daemon, "proxy/detach", "br-int", "--json")
    assert ok and json.loads(text) == {"bridge": "br-int", "status": "detaching"}
    assert run(daemon, "proxy/detach", "br-int") == (
        False, "br-int is not attached (proxy/show lists the bridges)\n")
    assert run(daemon, "proxy/attach", "br 0") == (False, "'br 0' is not a bridge name\n")
    assert run(daemon, "proxy/attach") == (
        False, '"proxy/attach" takes 1 argument, got 0 (usage: proxy/attach BRIDGE [--json])\n')


def test_attach_without_ovsdb_is_refused() -> None:
    assert run(FakeDaemon(managed=False), "proxy/attach", "br0") == (
        False, "no [ovsdb] table in the config: the proxy does not manage bridges\n")


def test_controllers_text_and_json() -> None:
    ok, text = run(FakeDaemon(), "proxy/controllers")
    assert ok and text == (
        "faucet: tcp:127.0.0.1:6633, priority 10\n"
        "  br-int (dpid 0000000000000001, OpenFlow13): connected, 2 connections\n"
        "backup: tcp:127.0.0.1:6634, priority 0\n"
        "  no bridge connected\n")
    ok, text = run(FakeDaemon(), "proxy/controllers", "--json")
    assert ok and json.loads(text) == CONTROLLERS


def test_show_reports_ovsdb_and_hw_offload_per_bridge() -> None:
    document = show_document(FakeDaemon().snapshot())
    assert document["ovsdb"] == OVSDB_SECTION
    text = format_show(document)
    assert text.endswith(
        "ovsdb unix:/var/run/openvswitch/db.sock: connected; hw-offload on (tc-policy skip_sw)\n"
        "  br-int: attached; controller tcp:127.0.0.1:6653 (connected); fail_mode secure; "
        "protocols OpenFlow13; 4 ports, 3 offloaded flows\n"
        "  br-late: attached when it appears in OVSDB\n")


def test_help_lists_the_new_commands() -> None:
    ok, text = run(FakeDaemon(), "help")
    assert ok
    for usage in ("proxy/attach BRIDGE [--json]", "proxy/detach BRIDGE [--json]",
                  "proxy/controllers [--json]"):
        assert f"  {usage}\n" in text
