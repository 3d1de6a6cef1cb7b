"""OVSDB decisions without a server: targets, attach/detach/drift planning, ports, VM rules."""

from __future__ import annotations

import pytest

from ovs_sriov_proxy.config import OvsdbConfig, VmRule
from ovs_sriov_proxy.ovsdb.model import (
    BridgeRow,
    BridgeSettings,
    ControllerSpec,
    InterfaceRow,
    OvsState,
)
from ovs_sriov_proxy.ovsdb.plan import (
    Apply,
    Attachments,
    controller_target,
    desired_settings,
    interface_changes,
    references_port,
    rules_to_purge,
    vm_rules,
)
from ovs_sriov_proxy.rules.flowparse import format_flow, parse_flow
from ovs_sriov_proxy.targets import parse_passive

PROXY = ControllerSpec("tcp:127.0.0.1:6653", "out-of-band", 5000, 8000)
DESIRED = BridgeSettings.of([PROXY], "secure", ["OpenFlow13"])
BEFORE = BridgeSettings.of([ControllerSpec("tcp:10.0.0.9:6633")], "standalone", ["OpenFlow10"])


def state(*bridges: BridgeRow, other_config: dict[str, str] | None = None) -> OvsState:
    return OvsState({b.name: b for b in bridges}, tuple(sorted((other_config or {}).items())))


def bridge(name: str, settings: BridgeSettings = BEFORE, *interfaces: InterfaceRow) -> BridgeRow:
    return BridgeRow(name, settings, tuple(interfaces))


def iface(name: str, ofport: int | None, **external_ids: str) -> InterfaceRow:
    return InterfaceRow(name, ofport, "dummy",
                        tuple(sorted((k.replace("_", "-"), v) for k, v in external_ids.items())))


@pytest.mark.parametrize(("listen", "target"), [
    ("ptcp:6653:127.0.0.1", "tcp:127.0.0.1:6653"),
    ("ptcp:6653", "tcp:127.0.0.1:6653"),  # listening on every address: reach it on loopback
    ("ptcp:6653:[::]", "tcp:[::1]:6653"),
    ("ptcp:6633:[fd00::1]", "tcp:[fd00::1]:6633"),
    ("pssl:6654:192.0.2.1", "ssl:192.0.2.1:6654"),
    ("punix:/var/run/openvswitch/proxy.sock", "unix:/var/run/openvswitch/proxy.sock"),
])
def test_the_bridge_side_target_of_each_listen_target(listen: str, target: str) -> None:
    assert controller_target(parse_passive(listen)) == target


def test_an_ephemeral_port_cannot_be_a_bridge_target() -> None:
    with pytest.raises(ValueError, match="ephemeral"):
        controller_target(parse_passive("ptcp:0:127.0.0.1"))


def test_desired_settings_come_from_the_config() -> None:
    settings = desired_settings(OvsdbConfig(fail_mode="standalone", inactivity_probe=10.0, max_backoff=1.5),
                                parse_passive("ptcp:6653:127.0.0.1"), ["OpenFlow15", "OpenFlow13"])
    assert settings == BridgeSettings(
        (ControllerSpec("tcp:127.0.0.1:6653", "out-of-band", 10000, 1500),), "standalone",
        ("OpenFlow13", "OpenFlow15"))


def test_settings_compare_as_sets_and_survive_json() -> None:
    a = BridgeSettings.of([ControllerSpec("tcp:b:1"), ControllerSpec("tcp:a:1")], "", ["OpenFlow13", "OpenFlow10"])
    b = BridgeSettings.of([ControllerSpec("tcp:a:1"), ControllerSpec("tcp:b:1")], None, ["OpenFlow10", "OpenFlow13"])
    assert a == b and a.fail_mode is None
    assert BridgeSettings.from_json(a.to_json()) == a
    assert BridgeSettings.from_json(DESIRED.to_json()) == DESIRED


def test_attach_saves_what_was_there_then_settles() -> None:
    attachments = Attachments(DESIRED, ["br0"])
    [action] = attachments.plan(state(bridge("br0")))
    assert action == Apply("br0", DESIRED, "attach", BEFORE)
    assert attachments.saved == {"br0": BEFORE} and attachments.dirty
    # In flight: the same state (or a reconnect handing it in again) gives no second transaction.
    assert attachments.plan(state(bridge("br0"))) == []
    attachments.done(action, ok=True)
    assert attachments.plan(state(bridge("br0", DESIRED))) == []
    assert attachments.status("br0", state(bridge("br0", DESIRED))) == "attached"


def test_a_change_by_someone_else_after_attaching_is_drift() -> None:
    attachments = Attachments(DESIRED, ["br0"])
    assert attachments.plan(state(bridge("br0", DESIRED))) == []  # attached in an earlier run
    drifted = BridgeSettings.of([ControllerSpec("tcp:10.1.1.1:6653")], "secure", ["OpenFlow13"])
    [action] = attachments.plan(state(bridge("br0", drifted)))
    assert (action.reason, action.settings, action.before) == ("repair", DESIRED, drifted)
    # The memory is not overwritten with the drifted settings.
    assert attachments.saved["br0"] == BridgeSettings.of((), "secure", ["OpenFlow13"])


def test_a_failed_attach_is_tried_again_and_is_not_drift() -> None:
    attachments = Attachments(DESIRED, ["br0"])
    [action] = attachments.plan(state(bridge("br0")))
    attachments.done(action, ok=False)
    [again] = attachments.plan(state(bridge("br0")))
    assert again.reason == "attach"


def test_a_bridge_that_does_not_exist_waits_for_its_row() -> None:
    attachments = Attachments(DESIRED, ["br-late"])
    assert attachments.plan(state()) == []
    assert attachments.status("br-late", state()) == "waiting"
    assert attachments.saved == {}
    [action] = attachments.plan(state(bridge("br-late")))
    assert (action.bridge, action.reason) == ("br-late", "attach")


def test_detach_restores_and_forgets() -> None:
    attachments = Attachments(DESIRED, [], saved={"br0": BEFORE})
    assert attachments.wanted == {"br0"}  # remembered from an earlier run: still attached
    assert attachments.plan(state(bridge("br0", DESIRED))) == []
    assert attachments.detach("br0")
    attachments.dirty = False
    [action] = attachments.plan(state(bridge("br0", DESIRED)))
    assert action == Apply("br0", BEFORE, "detach", DESIRED)
    assert attachments.status("br0", None) == "detaching"
    attachments.done(action, ok=True)
    assert attachments.saved == {} and attachments.dirty
    assert attachments.status("br0", None) == "detached"
    assert not attachments.detach("br0")


def test_detach_of_a_bridge_that_is_gone_or_restored_needs_no_transaction() -> None:
    attachments = Attachments(DESIRED, ["br0", "br1"], saved={"br0": BEFORE, "br1": BEFORE})
    attachments.detach("br0")
    attachments.detach("br1")
    assert attachments.plan(state(bridge("br1", BEFORE))) == []
    assert attachments.saved == {}


def test_attach_during_a_detach_cancels_it() -> None:
    attachments = Attachments(DESIRED, ["br0"], saved={"br0": BEFORE})
    attachments.detach("br0")
    attachments.attach("br0")
    assert attachments.plan(state(bridge("br0", DESIRED))) == []
    assert attachments.saved == {"br0": BEFORE}


def test_interface_changes_ignore_ports_without_a_number_and_see_renumbering() -> None:
    before = state(bridge("br0", BEFORE, iface("p1", 1), iface("p2", 2), iface("new", None)))
    after = state(bridge("br0", BEFORE, iface("p1", 1), iface("p2", 5), iface("new", None)))
    assert interface_changes(None, before) == ([], [("br0", "p1", 1), ("br0", "p2", 2)])
    assert interface_changes(before, after) == ([("br0", "p2", 2)], [("br0", "p2", 5)])
    assert interface_changes(after, after) == ([], [])
    assert interface_changes(after, state()) == ([("br0", "p1", 1), ("br0", "p2", 5)], [])


def test_rules_referencing_a_port() -> None:
    assert references_port(parse_flow("in_port=3,udp actions=output:1"), 3)
    assert references_port(parse_flow("udp actions=output:1,output:3"), 3)
    assert not references_port(parse_flow("in_port=4 actions=output:1"), 3)
    assert not references_port(parse_flow("udp actions=output:30"), 3)


def test_only_bridge_scoped_rules_the_config_does_not_own_are_purged() -> None:
    rules = [
        (1, parse_flow("in_port=3 actions=output:1", bridge="br0", origin="cli")),
        (2, parse_flow("in_port=1 actions=output:3", bridge="br0", origin="faucet")),  # learned
        (3, parse_flow("in_port=3 actions=output:1", bridge="br0", origin="config")),
        (4, parse_flow("in_port=3 actions=output:1", bridge="br0", origin="vm")),
        (5, parse_flow("in_port=3 actions=output:1", origin="cli")),  # every bridge
        (6, parse_flow("in_port=3 actions=output:1", bridge="br1", origin="cli")),
        (7, parse_flow("in_port=4 actions=output:1", bridge="br0", origin="cli")),
    ]
    assert rules_to_purge(rules, "br0", 3) == [1, 2]


def test_vm_rules_follow_their_interfaces() -> None:
    templates = [
        VmRule(parse_flow("priority=100,udp actions=output:1", origin="vm"), "iface-id", "vm-a"),
        VmRule(parse_flow("priority=50 actions=drop", bridge="br1", origin="vm"), "attached-mac",
               "fa:16:3e:00:00:01"),
        VmRule(parse_flow("priority=40 actions=drop", origin="vm"), "vm-uuid", "uuid-1"),
    ]
    now = state(
        bridge("br0", BEFORE, iface("rep1", 4, iface_id="vm-a", attached_mac="FA:16:3E:00:00:01"),
               iface("rep2", 5, vm_uuid="uuid-1"), iface("rep3", 6, vm_uuid="uuid-1"),
               iface("pending", None, iface_id="vm-a")),
        bridge("br1", BEFORE, iface("rep9", 9, attached_mac="FA:16:3E:00:00:01")),
    )
    rules = vm_rules(templates, now)
    assert [(r.bridge, r.origin, format_flow(r)) for r in rules] == [
        ("br0", "vm", "priority=100,in_port=4,udp actions=output:1"),
        ("br1", "vm", "priority=50,in_port=9 actions=drop"),  # the MAC compares case-insensitively
        ("br0", "vm", "priority=40,in_port=5 actions=drop"),
        ("br0", "vm", "priority=40,in_port=6 actions=drop"),
    ]
    assert all(r.text == format_flow(r) for r in rules)
    assert vm_rules(templates, state()) == []
