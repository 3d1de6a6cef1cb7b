"""How controllers share one bridge's flow priorities, and who owns the floor of table 0.

Priority bands. Every controller programs the bridge as if it were alone, so two controllers'
proactive flows compete in the bridge's tables by raw priority: a low-primacy controller's
priority-40000 flow would beat a high-primacy controller's priority-100 flow on the same
packets. So each controller gets a band of the bridge's priorities, and bands are stacked in
the order of static primacy (`priority`, then config order): every flow of a controller ranks
above every flow of the controllers below it, and a controller's own flows keep their order
among themselves. A controller priority p is installed as `band.low + p`; what does not fit is
clamped to `band.high` (counted). Stats replies and FLOW_REMOVED show the controller its own
priorities again. With one controller the band is the whole range, so nothing is remapped
(Faucet sees and sets the priorities it expects). The whole range stops at 65534: priority
65535 belongs to the proxy's network policies (policies.py), which no controller's flow may
tie with, so a controller's 65535 is installed as 65534 (counted as clamped).

Table 0's floor. The proxy's table-miss flow (priority 0, empty match, output CONTROLLER) is
what brings misses to the proxy. A controller's own catch-all in table 0 (empty match, its
priority 0) says "everything else goes through my pipeline" (Faucet's drop, the neutron
agent's goto_table). One that only outputs to CONTROLLER is not installed: the proxy's does the
same without cutting the packet. Any other one is installed, and from then on that controller
owns the misses of table 0: packets that no higher flow matches go through its pipeline, not
to the proxy. `TableFloor` tracks those owners per bridge, and tells when the proxy must put
its own table-miss back: when the owner whose catch-all had replaced it (same match, same
priority 0) deletes it. While anyone owns the floor, the proxy's own rules are answered through
cover flows (`Proxy.cover_rules`).

Pure logic on raw FLOW_MOD, flow stats and FLOW_REMOVED bytes; no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from .openflow import actions

OFP10 = 0x01
OFP15 = 0x06
MAX_PRIORITY = 0xFFFF
TOP_CONTROLLER_PRIORITY = MAX_PRIORITY - 1  # 65535 is the policies' (policies.py)
OFPFC_ADD, OFPFC_MODIFY, OFPFC_MODIFY_STRICT, OFPFC_DELETE, OFPFC_DELETE_STRICT = range(5)
OFPTT_ALL = 0xFF
OFPP_ANY = 0xFFFFFFFF
OFPP10_NONE = 0xFFFF
OFPG_ANY = 0xFFFFFFFF
OFPFW10_ALL = 0x3FFFFF
BAND_MODES = ("auto", "off")

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
# Where the priority sits: in a FLOW_MOD, a FLOW_REMOVED, and one flow-stats entry.
_FLOW_MOD_PRIORITY = {OFP10: 62}  # 1.3, 1.4 and 1.5: 30
_FLOW_REMOVED_PRIORITY = {OFP10: 56, OFP15: 10}  # 1.3, 1.4: 16
_FLOW_STATS_PRIORITY = {OFP10: 52, OFP15: 6}  # 1.3, 1.4: 12


@dataclass(frozen=True, slots=True)
class Band:
    """Bridge priorities low..high (inclusive) for one controller's flows."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high <= MAX_PRIORITY:
            raise ValueError(f"bad priority band {self.low}..{self.high}")

    @property
    def unshifted(self) -> bool:
        """Priorities keep their values (only those above `high` are clamped)."""
        return self.low == 0

    def to_bridge(self, priority: int) -> tuple[int, bool]:
        """The bridge priority for a controller's priority, and whether it had to be clamped."""
        mapped = self.low + priority
        if mapped > self.high:
            return self.high, True
        return mapped, False

    def from_bridge(self, priority: int) -> int:
        """The controller's view of one of its flows' bridge priority."""
        return max(0, priority - self.low)


WHOLE_RANGE = Band(0, TOP_CONTROLLER_PRIORITY)


def assign_bands(ranked: Sequence[str], mode: str = "auto") -> dict[str, Band]:
    """Bands for controllers listed best-first by static primacy.

    "auto": one controller gets the whole range; N controllers split it into N equal bands,
    the best-ranked on top (it also gets the remainder of the division). "off": everyone gets
    the whole range, so flows compete by raw priority, as if each controller were alone. The
    whole range is 0..65534 (65535 is the policies')."""
    if mode not in BAND_MODES:
        raise ValueError(f"unknown priority band mode {mode!r}")
    if mode == "off" or len(ranked) <= 1:
        return {name: WHOLE_RANGE for name in ranked}
    width = (MAX_PRIORITY + 1) // len(ranked)
    bands = {}
    for rank, name in enumerate(ranked):
        low = (len(ranked) - 1 - rank) * width
        bands[name] = Band(low, TOP_CONTROLLER_PRIORITY if rank == 0 else low + width - 1)
    return bands


# ---- raw messages ----


@dataclass(frozen=True, slots=True)
class FlowModView:
    """The fields of a FLOW_MOD that decide table 0's floor (priority as on the bridge)."""

    table_id: int
    command: int
    priority: int
    empty_match: bool
    any_out: bool  # no out_port / out_group filter (only deletes use them)

    def adds_catch_all(self, lowest: int) -> bool:
        """An ADD of the controller's catch-all in table 0: empty match at the lowest priority
        of its band (its own priority 0)."""
        return (self.command == OFPFC_ADD and self.table_id == 0 and self.empty_match
                and self.priority == lowest)

    def removes_catch_all(self, lowest: int) -> bool:
        """A delete that removes the controller's table-0 catch-all (a controller's deletes
        reach only its own flows: they are scoped by its cookie tag)."""
        if not (self.empty_match and self.any_out and self.table_id in (0, OFPTT_ALL)):
            return False
        return self.command == OFPFC_DELETE or (
            self.command == OFPFC_DELETE_STRICT and self.priority == lowest)


def view_flow_mod(version: int, raw: bytes) -> FlowModView | None:
    """None when the message is too short to be a FLOW_MOD of this version."""
    if version == OFP10:
        if len(raw) < 72:
            return None
        (wildcards,) = _U32.unpack_from(raw, 8)
        command, priority, out_port = struct.unpack_from("!H4xH4xH", raw, 56)
        return FlowModView(0, command, priority, wildcards & OFPFW10_ALL == OFPFW10_ALL,
                           out_port == OFPP10_NONE)
    if len(raw) < 56:
        return None
    table_id, command = raw[24], raw[25]
    (priority,) = _U16.unpack_from(raw, 30)
    out_port, out_group = struct.unpack_from("!II", raw, 36)
    (match_len,) = _U16.unpack_from(raw, 50)
    return FlowModView(table_id, command, priority, match_len == 4,
                       out_port == OFPP_ANY and out_group == OFPG_ANY)


def remap_flow_mod(version: int, raw: bytes, band: Band) -> tuple[bytes, bool]:
    """A controller's FLOW_MOD with its priority moved into `band`; whether it was clamped.
    Non-strict modifies and deletes ignore the priority, so moving it is harmless there."""
    at = _FLOW_MOD_PRIORITY.get(version, 30)
    (priority,) = _U16.unpack_from(raw, at)
    mapped, clamped = band.to_bridge(priority)
    if mapped == priority:  # one controller alone, below 65535: the common case, no copy
        return raw, False
    out = bytearray(raw)
    _U16.pack_into(out, at, mapped)
    return bytes(out), clamped


NXAST_LEARN, NXAST_LEARN2 = 16, 45  # learn(...): installs flows of its own when it runs
_LEARN_PRIORITY, _LEARN_COOKIE = 14, 16  # offsets in both forms (learn2 only adds at the end)
_U64 = struct.Struct("!Q")
_NX_VENDOR_BYTES = b"\x00\x00\x23\x20"


def scope_learns(raw: bytes, tag: int, tag_mask: int, band: Band,
                 actions_only: bool = False) -> bytes:
    """A controller's message whose learn() actions install flows the way its own FLOW_MODs
    are installed: with its cookie tag (`tag`, in the bits of `tag_mask`) and in its priority
    band. Otherwise a learned flow would escape both: another controller's flow could lose to
    it, and the controller's deletes and flow stats would not find it. `actions_only`: `raw`
    is a bare action list, not a message."""
    if _NX_VENDOR_BYTES not in raw:  # no Nicira action at all: the common case, no walk
        return raw
    buf = bytearray(raw)

    def visit(buf: bytearray, at: int, action_type: int, length: int) -> None:
        if (action_type != actions.OFPAT_EXPERIMENTER or length < 32
                or actions.nicira_subtype(buf, at, length) not in (NXAST_LEARN, NXAST_LEARN2)):
            return
        (cookie,) = _U64.unpack_from(buf, at + _LEARN_COOKIE)
        _U64.pack_into(buf, at + _LEARN_COOKIE, tag | cookie & ~tag_mask & 0xFFFFFFFFFFFFFFFF)
        (priority,) = _U16.unpack_from(buf, at + _LEARN_PRIORITY)
        _U16.pack_into(buf, at + _LEARN_PRIORITY, band.to_bridge(priority)[0])

    if actions_only:
        actions.walk_actions(buf, 0, len(buf), visit)
    else:
        actions.walk_message(buf, visit)
    return bytes(buf)


def unmap_flow_removed(version: int, raw: bytes, band: Band) -> bytes:
    """A FLOW_REMOVED of the controller's flow with the priority the controller gave it."""
    at = _FLOW_REMOVED_PRIORITY.get(version, 16)
    if band.unshifted or len(raw) < at + 2:
        return raw
    out = bytearray(raw)
    (priority,) = _U16.unpack_from(out, at)
    _U16.pack_into(out, at, band.from_bridge(priority))
    return bytes(out)


def unmap_flow_stats_entry(version: int, entry: bytearray, offset: int, band: Band) -> None:
    """In place: one flow-stats entry (starting at `offset`) of the controller's own flow."""
    at = offset + _FLOW_STATS_PRIORITY.get(version, 12)
    if band.unshifted or at + 2 > len(entry):
        return
    (priority,) = _U16.unpack_from(entry, at)
    _U16.pack_into(entry, at, band.from_bridge(priority))


# ---- table 0's floor ----


@dataclass(slots=True)
class TableFloor:
    """Which controllers have a catch-all in table 0 of one bridge, and whether the proxy's
    table-miss flow (priority 0) is still there or was replaced by one of them."""

    owners: dict[str, int] = field(default_factory=dict)  # controller -> its catch-all's priority

    @property
    def owned(self) -> bool:
        return bool(self.owners)

    def proxy_table_miss_present(self) -> bool:
        return 0 not in self.owners.values()

    def relayed(self, controller: str, view: FlowModView, band: Band) -> bool:
        """Record a FLOW_MOD the controller sent to the bridge (`view` as remapped into its
        band); True when the proxy must re-install its own table-miss flow right after it."""
        if view.adds_catch_all(band.low):
            self.owners[controller] = view.priority
            return False
        if controller in self.owners and view.removes_catch_all(band.low):
            priority = self.owners.pop(controller)
            return priority == 0 and self.proxy_table_miss_present()
        return False
