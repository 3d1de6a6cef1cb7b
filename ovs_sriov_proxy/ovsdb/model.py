"""What the proxy reads from and writes to OVSDB, as immutable values.

The IDL thread (ovsdb/idl.py) turns the rows it holds into an `OvsState` after every change and
hands that value to the event loop; nothing else crosses the thread boundary. Everything the
proxy decides is computed from these values (ovsdb/plan.py), so it is tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

IFACE_ID = "iface-id"
ATTACHED_MAC = "attached-mac"
VM_UUID = "vm-uuid"


@dataclass(frozen=True, slots=True)
class ControllerSpec:
    """The columns of one Controller row that the proxy sets, or restores on detach.

    None means the column is empty (OVS's default applies). Times are in milliseconds, as
    OVSDB keeps them.
    """

    target: str
    connection_mode: str | None = None
    inactivity_probe: int | None = None
    max_backoff: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "connection_mode": self.connection_mode,
                "inactivity_probe": self.inactivity_probe, "max_backoff": self.max_backoff}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ControllerSpec:
        return cls(str(data["target"]), _optional(data.get("connection_mode"), str),
                   _optional(data.get("inactivity_probe"), int), _optional(data.get("max_backoff"), int))


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """A bridge's control settings: its controllers, fail_mode and allowed OpenFlow versions.

    Controllers and protocols are kept sorted, so two settings compare equal when OVSDB would
    hold the same sets.
    """

    controllers: tuple[ControllerSpec, ...] = ()
    fail_mode: str | None = None
    protocols: tuple[str, ...] = ()

    @classmethod
    def of(cls, controllers: Iterable[ControllerSpec] = (), fail_mode: str | None = None,
           protocols: Iterable[str] = ()) -> BridgeSettings:
        specs = sorted(controllers, key=lambda c: (c.target, repr(c)))
        return cls(tuple(specs), fail_mode or None, tuple(sorted(set(protocols))))

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(c.target for c in self.controllers)

    def to_json(self) -> dict[str, Any]:
        return {"controllers": [c.to_json() for c in self.controllers],
                "fail_mode": self.fail_mode, "protocols": list(self.protocols)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BridgeSettings:
        controllers = [ControllerSpec.from_json(c) for c in data.get("controllers", [])]
        return cls.of(controllers, _optional(data.get("fail_mode"), str),
                      [str(p) for p in data.get("protocols", [])])

    def describe(self) -> str:
        targets = ",".join(self.targets) or "none"
        protocols = ",".join(self.protocols) or "default"
        return f"controller {targets}, fail_mode {self.fail_mode or 'default'}, protocols {protocols}"


@dataclass(frozen=True, slots=True)
class InterfaceRow:
    """One Interface of a bridge (a VF representor, an uplink, a VM's tap)."""

    name: str
    ofport: int | None  # None until ovs-vswitchd assigns one, and when it failed (-1)
    type: str = ""
    external_ids: tuple[tuple[str, str], ...] = ()
    mac_in_use: str = ""

    def external_id(self, key: str) -> str | None:
        for name, value in self.external_ids:
            if name == key:
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ofport": self.ofport, "type": self.type,
                "external_ids": dict(self.external_ids)}


@dataclass(frozen=True, slots=True)
class BridgeRow:
    name: str
    settings: BridgeSettings
    interfaces: tuple[InterfaceRow, ...] = ()
    connected: tuple[str, ...] = ()  # targets of controllers with is_connected=true
    datapath_type: str = ""

    def interface(self, name: str) -> InterfaceRow | None:
        for interface in self.interfaces:
            if interface.name == name:
                return interface
        return None


@dataclass(frozen=True, slots=True)
class OvsState:
    """The part of the Open_vSwitch database the proxy cares about, at one moment."""

    bridges: Mapping[str, BridgeRow] = field(default_factory=dict)
    other_config: tuple[tuple[str, str], ...] = ()  # of the Open_vSwitch row

    def setting(self, key: str) -> str | None:
        for name, value in self.other_config:
            if name == key:
                return value
        return None

    @property
    def hw_offload(self) -> bool:
        return (self.setting("hw-offload") or "").lower() == "true"

    @property
    def tc_policy(self) -> str | None:
        return self.setting("tc-policy")


def _optional(value: object, kind: type) -> Any:
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"expected {kind.__name__}, got {value!r}")
    return value
