"""A priority classifier with OpenFlow semantics, and the safe flow to cache for a hit.

Lookup is tuple-space search: rules are grouped into subtables by mask; a packet's packed key
ANDed with a subtable's mask is one dict probe. Subtables are visited in order of the best rule
they hold, and the search stops as soon as no remaining subtable can beat the best hit.

Ranking: higher priority wins; among equal priorities the rule added first wins (OpenFlow leaves
overlapping equal priorities undefined; we make it deterministic and never install two overlapping
flows of equal priority on a bridge, see `cache_match`).

Caching a hit on the bridge is the rule-dependency problem (CacheFlow, HotSDN 2014): installing
rule R's wildcard match could shadow a higher-ranked rule H that overlaps R but is not installed.
`cache_match` narrows R's match just enough to exclude every such H for the packet at hand: for
each higher-ranked overlapping H, one field where the packet differs from H is added to the match
(with H's mask on that field, and H's prerequisite fields). The result always lies inside R and
outside every H that ranks above R, so any packet it matches classifies to R — the installed flow
can never disagree with the proxy, whatever else is or is not on the bridge, and no flow depends
on another being present (expiry of one never uncovers another). When R has no higher-ranked
overlapping rule — the common case — the cached flow is R itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .fields import FIELD_ORDER, FIELDS
from .model import FlowRule, Match


@dataclass(slots=True)
class _Entry:
    rule_id: int
    rule: FlowRule
    rank: tuple[int, int]  # (priority, -insertion order): bigger ranks first


@dataclass(slots=True)
class _Subtable:
    mask: int
    buckets: dict[int, list[_Entry]] = field(default_factory=dict)  # masked value -> by rank desc
    count: int = 0
    best_rank: tuple[int, int] = (-1, 0)

    def recompute_best(self) -> None:
        self.best_rank = max((b[0].rank for b in self.buckets.values()), default=(-1, 0))


class Classifier:
    """Rules for one bridge. Not thread-safe; owned by the proxy's event loop."""

    def __init__(self) -> None:
        self._subtables: dict[int, _Subtable] = {}
        self._ordered: list[_Subtable] = []  # by best_rank, descending
        self._entries: dict[int, _Entry] = {}
        self._sequence = 0
        self._dependents: dict[int, tuple[_Entry, ...]] = {}
        self._stale_order = False  # subtables re-sorted on the next lookup, not on every add
        self._pinned: dict[int, FlowRule] = {}  # the pinned rules (policies), by id

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rule_id: int) -> bool:
        return rule_id in self._entries

    def rules(self) -> Iterator[tuple[int, FlowRule]]:
        for entry in self._entries.values():
            yield entry.rule_id, entry.rule

    @property
    def pinned(self) -> int:
        """How many pinned rules (policies) apply here."""
        return len(self._pinned)

    def pinned_rules(self) -> list[tuple[int, FlowRule]]:
        return list(self._pinned.items())

    def pinned_match(self, key: int) -> FlowRule | None:
        """The first pinned rule that a packet key matches (they are few: a plain scan)."""
        for rule in self._pinned.values():
            if rule.match.matches(key):
                return rule
        return None

    def get(self, rule_id: int) -> FlowRule | None:
        entry = self._entries.get(rule_id)
        return entry.rule if entry else None

    def add(self, rule_id: int, rule: FlowRule) -> None:
        if rule_id in self._entries:
            raise KeyError(f"rule {rule_id} is already in the classifier")
        self._sequence += 1
        entry = _Entry(rule_id, rule, (rule.priority, -self._sequence))
        subtable = self._subtables.get(rule.match.mask)
        if subtable is None:
            subtable = self._subtables[rule.match.mask] = _Subtable(rule.match.mask)
        bucket = subtable.buckets.setdefault(rule.match.value, [])
        bucket.append(entry)
        bucket.sort(key=lambda e: e.rank, reverse=True)
        subtable.count += 1
        if entry.rank > subtable.best_rank:
            subtable.best_rank = entry.rank
        self._entries[rule_id] = entry
        if rule.pinned:
            self._pinned[rule_id] = rule
        self._reorder()

    def remove(self, rule_id: int) -> FlowRule:
        entry = self._entries.pop(rule_id)
        self._pinned.pop(rule_id, None)
        subtable = self._subtables[entry.rule.match.mask]
        bucket = subtable.buckets[entry.rule.match.value]
        bucket.remove(entry)
        if not bucket:
            del subtable.buckets[entry.rule.match.value]
        subtable.count -= 1
        if subtable.count == 0:
            del self._subtables[subtable.mask]
        else:
            subtable.recompute_best()
        self._reorder()
        return entry.rule

    def _reorder(self) -> None:
        self._stale_order = True
        self._dependents.clear()

    def _ordered_subtables(self) -> list[_Subtable]:
        if self._stale_order:
            self._ordered = sorted(self._subtables.values(), key=lambda s: s.best_rank,
                                   reverse=True)
            self._stale_order = False
        return self._ordered

    def lookup(self, key: int) -> tuple[int, FlowRule] | None:
        """The highest-ranked rule matching a packed packet key, as (rule_id, rule)."""
        best: _Entry | None = None
        for subtable in self._ordered if not self._stale_order else self._ordered_subtables():
            if best is not None and subtable.best_rank < best.rank:
                break
            bucket = subtable.buckets.get(key & subtable.mask)
            if bucket is not None and (best is None or bucket[0].rank > best.rank):
                best = bucket[0]
        return (best.rule_id, best.rule) if best is not None else None

    def overlapping_above(self, rule_id: int) -> tuple[FlowRule, ...]:
        """Rules ranked above `rule_id` that some packet matching it could also match."""
        return tuple(e.rule for e in self._dependents_of(self._entries[rule_id]))

    def overlapping_below(self, match: Match, priority: int) -> Iterator[tuple[int, FlowRule]]:
        """Rules of priority <= `priority` whose match overlaps `match` (for invalidation)."""
        for entry in self._entries.values():
            if entry.rule.priority <= priority and entry.rule.match.overlaps(match):
                yield entry.rule_id, entry.rule

    def _dependents_of(self, entry: _Entry) -> tuple[_Entry, ...]:
        cached = self._dependents.get(entry.rule_id)
        if cached is not None:
            return cached
        match = entry.rule.match
        found: list[_Entry] = []
        for subtable in self._ordered_subtables():
            if subtable.best_rank <= entry.rank:
                break
            common = subtable.mask & match.mask
            if common == subtable.mask:
                # The subtable tests only bits the rule pins: one bucket can overlap, found by hash.
                bucket = subtable.buckets.get(match.value & common)
                candidates: tuple[list[_Entry], ...] = (bucket,) if bucket else ()
            else:
                candidates = tuple(b for v, b in subtable.buckets.items()
                                   if not (v ^ match.value) & common)
            for bucket in candidates:
                # A pinned rule is always on the bridge, above: no flow can hide it.
                found.extend(e for e in bucket if e.rank > entry.rank and not e.rule.pinned)
        result = tuple(found)
        self._dependents[entry.rule_id] = result
        return result

    def cache_match(self, rule_id: int, key: int) -> Match:
        """The widest match, around `key`, that is safe to install for a hit on `rule_id`."""
        entry = self._entries[rule_id]
        mask = entry.rule.match.mask
        for above in self._dependents_of(entry):
            differing = (key ^ above.rule.match.value) & above.rule.match.mask
            if differing & mask:
                continue  # already told apart by the bits we match on
            mask |= _distinguishing_mask(above.rule.match, differing)
        return Match(key & mask, mask)


def _distinguishing_mask(above: Match, differing: int) -> int:
    """Bits that tell a packet apart from `above`: in the first field (in prerequisite order) on
    which they differ, the prefix of that field down to its most significant differing bit —
    every packet sharing that prefix differs from `above` on that bit — plus the prerequisites
    of the field. A prefix rather than the whole field keeps one flow for, say, all high L4
    ports, and stays expressible as a CIDR for addresses. Earlier fields agree with `above`, so
    pinning the prerequisites keeps the installed match valid OpenFlow."""
    for name in FIELD_ORDER:
        f = FIELDS[name]
        field_bits = f.full_mask << f.offset
        field_differing = differing & field_bits
        if field_differing:
            lowest_pinned = 1 << (field_differing.bit_length() - 1)
            mask = field_bits & ~(lowest_pinned - 1)
            for prerequisite_name, _ in f.prerequisite:
                p = FIELDS[prerequisite_name]
                mask |= above.mask & (p.full_mask << p.offset)
            return mask
    raise AssertionError("a packet that does not match a rule differs from it in some field")
