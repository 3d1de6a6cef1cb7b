"""Network policies: traffic that is dropped whatever the controllers program.

A policy (`[[policies]]`, config.PolicyConfig) names traffic by the tags of the ports it enters
on (`from_tag`), the tags of the ports whose VM it is addressed to (`to_tag`) and an optional
match. Tags are written on OVSDB Interface rows, where the orchestration that plugs a VM
already writes `iface-id` and `attached-mac`:

    ovs-vsctl set Interface vf3_rep external_ids:policy-tags=pci,tenant-a

Each policy becomes drop rules of the proxy at priority 65535, one per (entering port, target
MAC) pair on each bridge, with origin "policy". Unlike other rules of the proxy, which go on
a bridge when a miss asks for them, these stand on the bridge from the moment it connects
(Proxy pins them), in table 0, which every packet goes through first. Nothing a controller
sends can get past them:
- every controller's flows rank below (bands.py keeps priority 65535 for the proxy);
- a controller's deletes and modifies reach only its own cookies;
- a controller's PACKET_OUT whose frame a policy would drop is refused (northbound.py).

Pure logic: config and OVSDB state in, rules out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from .config import POLICY_PRIORITY, PolicyConfig
from .ovsdb.model import ATTACHED_MAC, InterfaceRow, OvsState
from .rules.flowparse import format_flow
from .rules.model import POLICY_ORIGIN, FlowRule, Match

TAGS_KEY = "policy-tags"  # Interface external_ids key: tags separated by commas or spaces
_PORT_MASK = 0xFFFFFFFF
_MAC_MASK = 0xFFFFFFFFFFFF


def interface_tags(interface: InterfaceRow) -> frozenset[str]:
    text = interface.external_id(TAGS_KEY) or ""
    return frozenset(tag for tag in text.replace(",", " ").split() if tag)


def _mac_value(text: str) -> int | None:
    digits = text.strip().lower().replace(":", "")
    if len(digits) != 12:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


def ports_by_mac(state: OvsState) -> dict[str, dict[int, tuple[int, ...]]]:
    """Per bridge, the OpenFlow ports of each interface's attached-mac (a VM's port; two while
    a VM moves between ports, or when a hook wrote one MAC twice)."""
    found: dict[str, dict[int, tuple[int, ...]]] = {}
    for bridge in state.bridges.values():
        for interface in bridge.interfaces:
            mac = _mac_value(interface.external_id(ATTACHED_MAC) or "")
            if mac is not None and interface.ofport is not None and interface.ofport > 0:
                ports = found.setdefault(bridge.name, {})
                ports[mac] = (*ports.get(mac, ()), interface.ofport)
    return found


def policy_rules(policies: Sequence[PolicyConfig], state: OvsState | None) -> list[FlowRule]:
    """The drop rules that enforce `policies` given OVSDB's `state` (None: not read yet, so
    only the policies without tags apply). In policy order, without duplicates."""
    rules: list[FlowRule] = []
    seen: set[tuple[object, ...]] = set()
    for rule in _all_rules(policies, state):
        key = (rule.match.value, rule.match.mask, rule.bridge)
        if key not in seen:
            seen.add(key)
            rules.append(rule)
    return rules


def policy_name(rule: FlowRule) -> str | None:
    """The name of the policy a rule enforces, from its text ("policy NAME: FLOW"), which the
    backup keeps: a restored rule still says where it came from."""
    head, separator, _ = rule.text.partition(": ")
    return head.removeprefix("policy ") if separator and head.startswith("policy ") else None


def _all_rules(policies: Sequence[PolicyConfig], state: OvsState | None) -> Iterable[FlowRule]:
    for policy in policies:
        if not policy.uses_tags:
            yield _rule(policy, policy.bridge, None, None)
            continue
        if state is None:
            continue
        # A VM is reached by its MAC wherever its port is: on this bridge, or behind a patch
        # port on another one of the host.
        targets: Sequence[int | None] = [None]
        if policy.to_tag is not None:
            targets = sorted({mac for bridge in state.bridges.values()
                              for interface in bridge.interfaces
                              if policy.to_tag in interface_tags(interface)
                              and (mac := _mac_value(interface.external_id(ATTACHED_MAC) or ""))
                              is not None})
        for bridge in sorted(state.bridges.values(), key=lambda b: b.name):
            if policy.bridge not in (None, bridge.name):
                continue
            sources: Sequence[int | None] = [None]
            if policy.from_tag is not None:
                sources = sorted({interface.ofport for interface in bridge.interfaces
                                  if interface.ofport is not None and interface.ofport > 0
                                  and policy.from_tag in interface_tags(interface)})
            for in_port in sources:
                for mac in targets:
                    yield _rule(policy, bridge.name, in_port, mac)


def _rule(policy: PolicyConfig, bridge: str | None, in_port: int | None,
          mac: int | None) -> FlowRule:
    fields = dict(policy.match.fields()) if policy.match is not None else {}
    if in_port is not None:
        fields["in_port"] = (in_port, _PORT_MASK)
    if mac is not None:
        fields["eth_dst"] = (mac, _MAC_MASK)
    rule = FlowRule(Match.from_fields(fields), (), priority=POLICY_PRIORITY, bridge=bridge,
                    origin=POLICY_ORIGIN)
    return replace(rule, text=f"policy {policy.name}: {format_flow(rule)}")
