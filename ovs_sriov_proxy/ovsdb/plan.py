"""Deciding what to change in OVSDB, and in the rule store, given what OVSDB holds. No I/O.

Attaching a bridge means making its control settings (`BridgeSettings`) exactly the proxy's:
one controller, the proxy's own listen target, out-of-band, with the configured inactivity probe
and backoff; the configured fail_mode; and the proxy's OpenFlow versions as the bridge's allowed
protocols. What the bridge had before is remembered (`Attachments.saved`, persisted by
ovsdb/memory.py) and put back on detach.

`Attachments.plan(state)` is called with every new `OvsState` and returns the transactions to
run. It is state-based: the same state gives no new work, so an OVSDB reconnect (which hands in
the whole database again) repeats nothing, and a bridge with a transaction in flight gets no
second one. A bridge that has been in the proxy's settings and then differs from them was
changed by someone else: that is drift, repaired with a warning.

Ports: `interface_changes` compares two states; `vm_rules` turns the VM-scoped [[rules]] into
the concrete rules of the interfaces that exist now; `rules_to_purge` finds the rules that
reference a port that went away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from ..config import VM_ORIGIN, OvsdbConfig, VmRule
from ..rules.flowparse import format_flow
from ..rules.model import POLICY_ORIGIN, FlowRule, Match, Output
from ..targets import PassiveTarget
from .model import ATTACHED_MAC, BridgeSettings, ControllerSpec, InterfaceRow, OvsState

OUT_OF_BAND = "out-of-band"
PROTECTED_ORIGINS = frozenset({"config", VM_ORIGIN, POLICY_ORIGIN})  # the config decides these

Reason = Literal["attach", "repair", "detach"]


def controller_target(listen: PassiveTarget) -> str:
    """The `ovs-vsctl set-controller` target that reaches a passive target of the proxy."""
    if listen.kind == "unix":
        return f"unix:{listen.path}"
    if listen.port == 0:
        raise ValueError(f"{listen}: a bridge cannot be pointed at an ephemeral port")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(listen.host or "", listen.host or "")
    rendered = f"[{host}]" if ":" in host else host
    return f"{listen.kind}:{rendered}:{listen.port}"


def desired_settings(ovsdb: OvsdbConfig, listen: PassiveTarget,
                     protocols: Iterable[str]) -> BridgeSettings:
    """The settings of an attached bridge."""
    controller = ControllerSpec(controller_target(listen), OUT_OF_BAND,
                                round(ovsdb.inactivity_probe * 1000), round(ovsdb.max_backoff * 1000))
    return BridgeSettings.of([controller], ovsdb.fail_mode, protocols)


@dataclass(frozen=True, slots=True)
class Apply:
    """Make a bridge's settings `settings` (one transaction)."""

    bridge: str
    settings: BridgeSettings
    reason: Reason
    before: BridgeSettings


BridgeStatus = Literal["attached", "attaching", "waiting", "detaching", "detached"]


class Attachments:
    """Which bridges the proxy manages, what they had before, and what to do next (sans-IO).

    `saved` maps each bridge the proxy has changed to its settings from before; the caller
    persists it whenever `plan` or `done` report a change (they return True in `.dirty`).
    """

    def __init__(self, desired: BridgeSettings, wanted: Iterable[str],
                 saved: Mapping[str, BridgeSettings] | None = None) -> None:
        self.desired = desired
        self.saved: dict[str, BridgeSettings] = dict(saved or {})
        # Bridges attached in an earlier run stay attached until detached.
        self.wanted: set[str] = set(wanted) | set(self.saved)
        self.detaching: set[str] = set()
        self.in_flight: set[str] = set()
        self.settled: set[str] = set()  # seen in the desired settings since attached
        self.dirty = False  # `saved` changed since the caller last persisted it

    def attach(self, bridge: str) -> None:
        self.wanted.add(bridge)
        self.detaching.discard(bridge)

    def detach(self, bridge: str) -> bool:
        """Stop managing `bridge`; False if it was not attached."""
        if bridge not in self.wanted and bridge not in self.saved:
            return False
        self.wanted.discard(bridge)
        self.settled.discard(bridge)
        if bridge in self.saved:
            self.detaching.add(bridge)
        return True

    def status(self, bridge: str, state: OvsState | None) -> BridgeStatus:
        if bridge in self.wanted:
            row = state.bridges.get(bridge) if state is not None else None
            if row is None:
                return "waiting"
            return "attached" if row.settings == self.desired else "attaching"
        return "detaching" if bridge in self.detaching else "detached"

    def plan(self, state: OvsState) -> list[Apply]:
        actions = []
        for bridge in sorted(self.wanted - self.in_flight):
            row = state.bridges.get(bridge)
            if row is None:
                continue  # attached when it appears
            current = row.settings
            if current == self.desired:
                self.settled.add(bridge)
                if bridge not in self.saved:  # set up by hand, or the memory was lost
                    self._save(bridge, BridgeSettings.of((), current.fail_mode, current.protocols))
                continue
            if bridge not in self.saved:
                self._save(bridge, current)
            reason: Reason = "repair" if bridge in self.settled else "attach"
            actions.append(Apply(bridge, self.desired, reason, current))
        for bridge in sorted(self.detaching - self.in_flight):
            row = state.bridges.get(bridge)
            before = self.saved[bridge]
            if row is None or row.settings == before:
                self._forget(bridge)  # gone, or already as it was: nothing to restore
                continue
            actions.append(Apply(bridge, before, "detach", row.settings))
        self.in_flight.update(action.bridge for action in actions)
        return actions

    def done(self, action: Apply, ok: bool) -> None:
        """A transaction of `plan` ended; the next `plan` looks at the bridge again."""
        self.in_flight.discard(action.bridge)
        if not ok:
            return
        if action.reason == "detach":
            if action.bridge not in self.wanted:
                self._forget(action.bridge)
        elif action.bridge in self.wanted:
            self.settled.add(action.bridge)

    def _save(self, bridge: str, settings: BridgeSettings) -> None:
        self.saved[bridge] = settings
        self.dirty = True

    def _forget(self, bridge: str) -> None:
        self.detaching.discard(bridge)
        if self.saved.pop(bridge, None) is not None:
            self.dirty = True


# ---- ports


PortKey = tuple[str, str, int]  # (bridge, interface name, ofport)


def interface_ports(state: OvsState) -> dict[PortKey, InterfaceRow]:
    """Every interface that has an OpenFlow port number, by (bridge, name, ofport)."""
    return {(bridge.name, interface.name, interface.ofport): interface
            for bridge in state.bridges.values() for interface in bridge.interfaces
            if interface.ofport is not None}


def interface_changes(before: OvsState | None, after: OvsState) -> tuple[list[PortKey], list[PortKey]]:
    """(removed, added) ports between two states; a renumbered interface is both.

    With no state before (the first one after start) nothing counts as removed.
    """
    new = interface_ports(after)
    if before is None:
        return [], sorted(new)
    old = interface_ports(before)
    return sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())


def references_port(rule: FlowRule, ofport: int) -> bool:
    """Whether the rule matches in_port=ofport or outputs to it."""
    fields = rule.match.fields()
    in_port = fields.get("in_port")
    if in_port is not None and in_port == (ofport, 0xFFFFFFFF):
        return True
    return any(isinstance(action, Output) and action.port == ofport for action in rule.actions)


def rules_to_purge(rules: Iterable[tuple[int, FlowRule]], bridge: str, ofport: int) -> list[int]:
    """Ids of the rules to delete when port `ofport` leaves `bridge`.

    Those are rules scoped to that bridge that reference the port and that the config file
    does not own: learned from controllers or added at run time. Config rules stay (a reload
    would bring them back anyway); VM-scoped ones follow their interface through `vm_rules`.
    """
    return [rule_id for rule_id, rule in rules
            if rule.bridge == bridge and rule.origin not in PROTECTED_ORIGINS
            and references_port(rule, ofport)]


def _matches(rule: VmRule, interface: InterfaceRow) -> bool:
    value = interface.external_id(rule.key)
    if value is None:
        return False
    return value.lower() == rule.value if rule.key == ATTACHED_MAC else value == rule.value


def vm_rules(templates: Iterable[VmRule], state: OvsState) -> list[FlowRule]:
    """The concrete rules of the VM-scoped [[rules]]: one per matching interface that has a port
    number, scoped to its bridge, with in_port set to that port."""
    rules = []
    for template in templates:
        for bridge in sorted(state.bridges.values(), key=lambda b: b.name):
            if template.rule.bridge not in (None, bridge.name):
                continue
            for interface in sorted(bridge.interfaces, key=lambda i: i.ofport or 0):
                if interface.ofport is None or not _matches(template, interface):
                    continue
                fields = dict(template.rule.match.fields())
                fields["in_port"] = (interface.ofport, 0xFFFFFFFF)
                rule = replace(template.rule, match=Match.from_fields(fields), bridge=bridge.name,
                               origin=VM_ORIGIN)
                rules.append(replace(rule, text=format_flow(rule)))
    return rules
