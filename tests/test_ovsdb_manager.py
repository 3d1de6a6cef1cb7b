"""The OVSDB manager on a real event loop with a fake client standing in for ovsdbapp.

The fake publishes states from another thread, as the IDL's thread does, so the hand-over
through loop.call_soon_threadsafe is exercised; its transactions change its own rows.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from ovs_sriov_proxy.config import OvsdbConfig, PolicyConfig, ProxyConfig, VmRule
from ovs_sriov_proxy.ovsdb import manager as manager_module
from ovs_sriov_proxy.ovsdb.idl import BridgeNotFound
from ovs_sriov_proxy.ovsdb.manager import OvsdbManager
from ovs_sriov_proxy.ovsdb.model import (
    BridgeRow,
    BridgeSettings,
    ControllerSpec,
    InterfaceRow,
    OvsState,
)
from ovs_sriov_proxy.rules.flowparse import parse_flow
from ovs_sriov_proxy.rules.model import FlowRule
from ovs_sriov_proxy.rules.store import RuleChange, RuleStore
from ovs_sriov_proxy.targets import parse_passive

BEFORE = BridgeSettings.of([ControllerSpec("tcp:127.0.0.1:9", "out-of-band")], "standalone", ["OpenFlow10"])


class FakeClient:
    def __init__(self, remote: str, on_state: Callable[[OvsState | None], None]) -> None:
        self.remote = remote
        self.on_state = on_state
        self.bridges: dict[str, BridgeRow] = {}
        self.other_config: dict[str, str] = {}
        self.applied: list[tuple[str, BridgeSettings]] = []
        self.stopped = False

    def publish(self, state: OvsState | None = None) -> None:
        """From another thread, as the IDL does."""
        value = state if state is not None else self.state()
        thread = threading.Thread(target=self.on_state, args=(value,))
        thread.start()
        thread.join()

    def disconnect(self) -> None:
        thread = threading.Thread(target=self.on_state, args=(None,))
        thread.start()
        thread.join()

    def state(self) -> OvsState:
        return OvsState(dict(self.bridges), tuple(sorted(self.other_config.items())))

    def connect(self) -> None:
        self.publish()

    def apply(self, bridge: str, settings: BridgeSettings) -> None:
        if bridge not in self.bridges:
            raise BridgeNotFound(bridge)
        self.applied.append((bridge, settings))
        row = self.bridges[bridge]
        self.bridges[bridge] = BridgeRow(row.name, settings, row.interfaces)
        self.publish()

    def stop(self) -> None:
        self.stopped = True


class Host:
    """The daemon's rule side: a real store."""

    def __init__(self) -> None:
        self.store = RuleStore()
        self.removed: list[int] = []

    def rules(self) -> Iterable[tuple[int, FlowRule]]:
        return list(self.store.items())

    def remove_rule(self, rule_id: int) -> FlowRule:
        self.removed.append(rule_id)
        return self.store.remove(rule_id)

    def replace_rules(self, origin: str, rules: Iterable[FlowRule]) -> RuleChange:
        return self.store.replace_origin(origin, rules)

    def set_ports_by_mac(self, ports: dict[str, dict[int, tuple[int, ...]]]) -> None:
        self.ports_by_mac = ports


def bridge(name: str, settings: BridgeSettings = BEFORE, *interfaces: InterfaceRow) -> BridgeRow:
    return BridgeRow(name, settings, tuple(interfaces))


def make(tmp_path: Path, *, bridges: tuple[str, ...] = ("br0",),
         vm_templates: tuple[VmRule, ...] = (),
         policies: tuple[PolicyConfig, ...] = ()) -> tuple[OvsdbManager, FakeClient, Host]:
    host = Host()
    clients: list[FakeClient] = []

    def factory(remote: str, on_state: Callable[[OvsState | None], None]) -> FakeClient:
        clients.append(FakeClient(remote, on_state))
        return clients[-1]

    manager = OvsdbManager(
        OvsdbConfig(remote="unix:/nowhere", bridges=bridges, vswitchd_ctl=None),
        ProxyConfig(listen=(parse_passive("ptcp:6653:127.0.0.1"),), state_dir=tmp_path,
                    protocols=("OpenFlow13",)),
        vm_templates, host, client_factory=factory, policies=policies)
    return manager, clients[0], host


async def settle(predicate: Callable[[], object], what: str) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_attach_drift_and_detach_through_the_thread_bridge(tmp_path: Path) -> None:
    async def scenario() -> None:
        manager, client, _ = make(tmp_path)
        client.bridges["br0"] = bridge("br0")
        await manager.start()
        desired = manager.desired
        await settle(lambda: client.applied == [("br0", desired)], "br0 attached")
        await settle(lambda: manager.report()["bridges"][0]["status"] == "attached", "reported")
        saved = json.loads((tmp_path / "ovsdb-bridges.json").read_text())["bridges"]
        assert BridgeSettings.from_json(saved["br0"]) == BEFORE

        # Someone points br0 elsewhere: repaired once.
        client.bridges["br0"] = bridge("br0", BEFORE)
        client.publish()
        await settle(lambda: len(client.applied) == 2, "br0 repaired")
        assert client.applied[1] == ("br0", desired)

        # A reconnect hands the same state in again: nothing to do.
        client.disconnect()
        await settle(lambda: not manager.connected, "the loss seen")
        client.publish()
        await settle(lambda: manager.connected, "the reconnect seen")
        await asyncio.sleep(0.05)
        assert len(client.applied) == 2 and manager.connects == 2

        assert manager.detach("br0") == "detaching"
        await settle(lambda: client.applied[-1] == ("br0", BEFORE), "br0 restored")
        await settle(lambda: json.loads((tmp_path / "ovsdb-bridges.json").read_text())["bridges"] == {},
                     "the memory forgotten")
        assert manager.detach("br0") is None
        await manager.stop()
        assert client.stopped

    asyncio.run(scenario())


def test_a_bridge_that_appears_later_is_attached(tmp_path: Path) -> None:
    async def scenario() -> None:
        manager, client, _ = make(tmp_path, bridges=())
        await manager.start()
        await settle(lambda: manager.connected, "connected")
        assert manager.attach("br-late") == "waiting"
        client.bridges["br-late"] = bridge("br-late")
        client.publish()
        await settle(lambda: client.applied == [("br-late", manager.desired)], "br-late attached")
        await manager.stop()

    asyncio.run(scenario())


def test_a_gone_port_purges_its_rules_and_vm_rules_follow_interfaces(tmp_path: Path) -> None:
    template = VmRule(parse_flow("priority=100,udp actions=output:1", origin="vm"), "iface-id", "vm-a")

    async def scenario() -> None:
        manager, client, host = make(tmp_path, vm_templates=(template,))
        vm_port = InterfaceRow("rep2", 2, "dummy", (("iface-id", "vm-a"),))
        other = InterfaceRow("rep3", 3, "dummy")
        client.bridges["br0"] = bridge("br0", BEFORE, vm_port, other)
        doomed = host.store.add(parse_flow("in_port=3 actions=output:1", bridge="br0", origin="cli"))
        kept = host.store.add(parse_flow("in_port=3 actions=output:1", bridge="br0", origin="config"))
        await manager.start()
        await settle(lambda: any(r.origin == "vm" for _, r in host.rules()), "the VM rule active")
        [vm_rule] = [r for _, r in host.rules() if r.origin == "vm"]
        assert vm_rule.text == "priority=100,in_port=2,udp actions=output:1"

        row = client.bridges["br0"]
        client.bridges["br0"] = BridgeRow("br0", row.settings, (vm_port,))  # rep3 deleted
        client.publish()
        await settle(lambda: host.removed == [doomed], "the cli rule of port 3 purged")
        assert host.store.get(kept) is not None

        client.bridges["br0"] = BridgeRow("br0", row.settings, ())  # the VM stops
        client.publish()
        await settle(lambda: not any(r.origin == "vm" for _, r in host.rules()), "the VM rule gone")
        moved = InterfaceRow("rep7", 7, "dummy", (("iface-id", "vm-a"),))
        client.bridges["br0"] = BridgeRow("br0", row.settings, (moved,))
        client.publish()
        await settle(lambda: [r.text for _, r in host.rules() if r.origin == "vm"]
                     == ["priority=100,in_port=7,udp actions=output:1"], "the VM rule on port 7")
        await manager.stop()

    asyncio.run(scenario())


def test_connecting_retries_until_the_server_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager_module, "CONNECT_BACKOFF", (0.01, 0.02))

    async def scenario() -> None:
        manager, client, _ = make(tmp_path)
        attempts = []

        def connect() -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise manager_module.OvsdbUnavailable("down")
            client.publish()

        client.connect = connect  # type: ignore[method-assign]
        await manager.start()
        await settle(lambda: manager.connected, "connected on the third try")
        assert len(attempts) == 3
        await manager.stop()

    asyncio.run(scenario())


def test_a_bad_memory_file_is_reported_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "ovsdb-bridges.json").write_text("{not json")

    async def scenario() -> None:
        manager, _, _ = make(tmp_path)
        await manager.start()
        assert manager.attachments is not None and manager.attachments.saved == {}
        await manager.stop()

    asyncio.run(scenario())
    assert "ignoring the memory of attached bridges" in caplog.text


def test_offloaded_flows_are_counted_while_hw_offload_is_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dumps = []

    async def fake_dump(target: str) -> str:
        dumps.append(target)
        return ("ufid:1, recirc_id(0),in_port(rep1),eth_type(0x0800), packets:3, actions:rep2\n"
                "ufid:2, recirc_id(0),in_port(up0),eth_type(0x0800), packets:1, actions:rep1\n")

    monkeypatch.setattr(manager_module.offload, "dump_offloaded", fake_dump)

    async def scenario() -> None:
        host = Host()
        clients: list[FakeClient] = []
        manager = OvsdbManager(
            OvsdbConfig(remote="unix:/nowhere", bridges=(), vswitchd_ctl="/run/vswitchd.ctl"),
            ProxyConfig(listen=(parse_passive("ptcp:6653:127.0.0.1"),), state_dir=tmp_path),
            (), host, client_factory=lambda r, cb: clients.append(FakeClient(r, cb)) or clients[-1])
        client = clients[0]
        client.bridges["br0"] = bridge("br0", BEFORE, InterfaceRow("rep1", 1), InterfaceRow("rep2", 2))
        client.bridges["br-ex"] = bridge("br-ex", BEFORE, InterfaceRow("up0", 1))
        await manager.start()
        await settle(lambda: manager.connected, "connected")
        await asyncio.sleep(0.05)
        assert dumps == [] and manager.offloaded is None  # hw-offload is off
        client.other_config["hw-offload"] = "true"
        client.publish()
        await settle(lambda: manager.offloaded is not None, "a count")
        assert manager.offloaded == {"br0": 1, "br-ex": 1}
        assert dumps == ["/run/vswitchd.ctl"]
        report = {b["name"]: b for b in manager.report()["bridges"]}
        assert (report["br0"]["hw_offload"], report["br0"]["offloaded_flows"]) == (True, 1)
        await manager.stop()

    asyncio.run(scenario())


def test_ovsdb_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from ovs_sriov_proxy.metrics import ProxyCollector
    from ovs_sriov_proxy.proxy import Proxy

    class Stub:
        connected, connects = True, 2

        def report(self) -> dict[str, object]:
            return {"bridges": [
                {"name": "br-int", "status": "attached", "present": True, "hw_offload": True,
                 "tc_policy": None, "offloaded_flows": 4},
                {"name": "br-late", "status": "waiting", "present": False, "hw_offload": True,
                 "tc_policy": None, "offloaded_flows": None},
                {"name": "br-ex", "status": "detached", "present": True, "hw_offload": True,
                 "tc_policy": "skip_hw", "offloaded_flows": 0},
            ]}

    registry = CollectorRegistry()
    registry.register(ProxyCollector(Proxy(RuleStore()), None, Stub()))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    for line in ('ovs_sriov_proxy_ovsdb_connected 1.0', 'ovs_sriov_proxy_ovsdb_connects_total 2.0',
                 'ovs_sriov_proxy_bridge_attached{bridge="br-int"} 1.0',
                 'ovs_sriov_proxy_bridge_attached{bridge="br-late"} 0.0',
                 'ovs_sriov_proxy_hw_offload{bridge="br-int",tc_policy=""} 1.0',
                 'ovs_sriov_proxy_hw_offload{bridge="br-ex",tc_policy="skip_hw"} 1.0',
                 'ovs_sriov_proxy_offloaded_flows{bridge="br-int"} 4.0',
                 'ovs_sriov_proxy_offloaded_flows{bridge="br-ex"} 0.0'):
        assert line + "\n" in text, line
    assert 'bridge_attached{bridge="br-ex"}' not in text
    assert 'hw_offload{bridge="br-late"' not in text
