"""Version-neutral rules: a match, an action list, a priority and timeouts.

Rules come from the config file (ovs-ofctl syntax) or, later, from controllers. They are kept in
OpenFlow-1.3 terms (OXM field names, 32-bit port numbers) and encoded for each bridge's version
only when a flow is sent (see openflow/flows.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .fields import FIELDS, pack, unpack

# Reserved port numbers, OpenFlow 1.3 numbering (the 1.0 ones are these minus 0xffff0000).
OFPP_MAX = 0xFFFFFF00
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_NORMAL = 0xFFFFFFFA
OFPP_FLOOD = 0xFFFFFFFB
OFPP_ALL = 0xFFFFFFFC
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE
OFPP_ANY = 0xFFFFFFFF

RESERVED_PORT_NAMES = {
    "in_port": OFPP_IN_PORT,
    "table": OFPP_TABLE,
    "normal": OFPP_NORMAL,
    "flood": OFPP_FLOOD,
    "all": OFPP_ALL,
    "controller": OFPP_CONTROLLER,
    "local": OFPP_LOCAL,
}

DEFAULT_PRIORITY = 0x8000  # what ovs-ofctl uses when a flow names no priority


@dataclass(frozen=True, slots=True)
class Match:
    """A conjunction of masked field tests, packed into two integers (see fields.py)."""

    value: int = 0  # always equal to value & mask
    mask: int = 0

    @classmethod
    def from_fields(cls, fields: dict[str, tuple[int, int]]) -> Match:
        """Build from {oxm_name: (value, mask)}; a field with an all-zero mask is left out."""
        values = {name: v & m for name, (v, m) in fields.items()}
        masks = {name: m for name, (_, m) in fields.items()}
        mask = pack(masks)
        return cls(pack(values) & mask, mask)

    def fields(self) -> dict[str, tuple[int, int]]:
        """{oxm_name: (value, mask)} for every field this match tests."""
        values = unpack(self.value, self.mask)
        masks = unpack(self.mask, self.mask)
        return {name: (values[name], masks[name]) for name in values}

    def matches(self, key: int) -> bool:
        return key & self.mask == self.value

    def overlaps(self, other: Match) -> bool:
        """Whether some packet matches both."""
        return (self.value ^ other.value) & self.mask & other.mask == 0

    def covers(self, other: Match) -> bool:
        """Whether every packet matching `other` also matches self."""
        return self.mask & other.mask == self.mask and other.value & self.mask == self.value

    def field_mask(self, name: str) -> int:
        f = FIELDS[name]
        return (self.mask >> f.offset) & f.full_mask


@dataclass(frozen=True, slots=True)
class Output:
    port: int  # 32-bit numbering; reserved ports as OFPP_* above
    max_len: int = 0xFFFF  # bytes sent to the controller, for port CONTROLLER


@dataclass(frozen=True, slots=True)
class SetField:
    field: str  # OXM name, one of fields.FIELDS
    value: int


@dataclass(frozen=True, slots=True)
class PushVlan:
    ethertype: int = 0x8100


@dataclass(frozen=True, slots=True)
class PopVlan:
    pass


@dataclass(frozen=True, slots=True)
class SetQueue:
    queue_id: int


Action = Output | SetField | PushVlan | PopVlan | SetQueue


def canonical_actions(actions: tuple[Action, ...]) -> tuple[Action, ...]:
    """Actions with max_len kept only where it means something (output to CONTROLLER):
    switches and controllers fill it as they please elsewhere (os-ken 0xffe5, OVS 0), and two
    rules that differ only there are the same rule."""
    if all(not isinstance(a, Output) or a.port == OFPP_CONTROLLER or a.max_len == 0xFFFF
           for a in actions):
        return actions
    return tuple(Output(a.port) if isinstance(a, Output) and a.port != OFPP_CONTROLLER else a
                 for a in actions)


POLICY_ORIGIN = "policy"  # the origin of the rules that enforce [[policies]]


@dataclass(frozen=True, slots=True)
class FlowRule:
    """One rule of the proxy's store.

    `bridge` scopes a rule to one bridge (None: every bridge). `origin` says where the rule came
    from: "config" for local rules, a controller's name for learned ones. `text` keeps the
    operator's ovs-ofctl spelling for messages and listings.
    """

    match: Match
    actions: tuple[Action, ...]
    priority: int = DEFAULT_PRIORITY
    idle_timeout: int = 0
    hard_timeout: int = 0
    bridge: str | None = None
    origin: str = "config"
    text: str = field(default="", compare=False)

    def applies_to(self, bridge: str) -> bool:
        return self.bridge is None or self.bridge == bridge

    @property
    def pinned(self) -> bool:
        """Stands on the bridge from the moment it connects, instead of when a miss asks for it
        (a policy's drop, policies.py)."""
        return self.origin == POLICY_ORIGIN

    def __hash__(self) -> int:
        # Over a subset of the compared fields (equal rules still hash equal): the generated
        # hash also hashes every action dataclass, which made it a fifth of a restore's time.
        return hash((self.match.value, self.match.mask, self.priority, self.bridge, self.origin))
