"""The proxy's rule store: every rule it holds, with ids, and a classifier per bridge.

Rule ids are small integers that are never reused; each rule's flows on a bridge carry the cookie
`PROXY_COOKIE_TAG | rule_id`, so the proxy recognises its own flows (and which rule they came
from) in FLOW_REMOVED and flow dumps, and can delete exactly them. Ids survive restarts through
the rules backup (rules/backup.py), which is what lets a restarted proxy recognise the flows its
previous run left on a bridge.

Every change is reported to an optional `RuleListener` (the backup), and each rule carries
`RuleMeta`: when it was inserted and, for rules with a lifetime (a learned rule's hard timeout),
when it expires. Both are wall-clock times, because they must mean the same after a restart.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter, lt
from typing import NamedTuple, Protocol

from . import clock
from .classifier import Classifier
from .model import POLICY_ORIGIN, FlowRule

PROXY_COOKIE_TAG = 0x5052 << 48  # "PR": flows the proxy installed from its own rules
COOKIE_TAG_MASK = 0xFFFF << 48
RULE_ID_MASK = (1 << 48) - 1  # the cookie's low 48 bits: ids never run out, nor wrap
# Origins of rules the operator made; any other origin is the controller a rule was learned from.
LOCAL_ORIGINS = frozenset({"config", "cli", "import", "vm", POLICY_ORIGIN})


def is_learned(rule: FlowRule) -> bool:
    return rule.origin not in LOCAL_ORIGINS


def cookie_for(rule_id: int) -> int:
    return PROXY_COOKIE_TAG | rule_id


def rule_id_from_cookie(cookie: int) -> int | None:
    """The rule id behind a cookie, or None if the flow is not one of the proxy's."""
    if cookie & COOKIE_TAG_MASK != PROXY_COOKIE_TAG:
        return None
    return cookie & RULE_ID_MASK


@dataclass(frozen=True, slots=True)
class RuleChange:
    added: tuple[tuple[int, FlowRule], ...]
    removed: tuple[tuple[int, FlowRule], ...]


class RuleMeta(NamedTuple):  # a tuple: a million of them are built at restore (half the cost)
    inserted_at: float  # clock.now() when the rule entered the store (first, for restored rules)
    expires_at: float | None = None  # clock.now() after which the rule leaves the store


class RuleListener(Protocol):
    """Told of every change of the store, in order (implemented by the rules backup)."""

    def rule_saved(self, rule_id: int, rule: FlowRule, meta: RuleMeta) -> None: ...
    def rule_deleted(self, rule_id: int) -> None: ...

    def times_shifted(self, step: float) -> None:
        """Every rule with a lifetime had `step` added to its insertion and expiry times (one
        call, not one per rule: a million learned rules would be a million writes)."""
        ...


class RuleStore:
    def __init__(self, listener: RuleListener | None = None) -> None:
        self._rules: dict[int, FlowRule] = {}
        self._meta: dict[int, RuleMeta] = {}
        self._next_id = 1
        self._classifiers: dict[str, Classifier] = {}
        self._expiries: list[tuple[float, int]] = []  # heap; entries may be stale (see expire)
        self._ids_by_rule: dict[FlowRule, int] = {}  # the first id of each distinct rule
        # The later ids of rules held more than once (rare: a restore or an import can bring
        # a rule that is already there), so that removing the first one leaves find() right.
        self._duplicate_ids: dict[FlowRule, list[int]] = {}
        self.listener = listener

    def __len__(self) -> int:
        return len(self._rules)

    def items(self) -> Iterator[tuple[int, FlowRule]]:
        return iter(self._rules.items())

    def get(self, rule_id: int) -> FlowRule | None:
        return self._rules.get(rule_id)

    def classifier(self, bridge: str) -> Classifier:
        """The classifier holding every rule that applies to `bridge` (built on first use)."""
        classifier = self._classifiers.get(bridge)
        if classifier is None:
            classifier = self._classifiers[bridge] = Classifier()
            for rule_id in sorted(self._rules):  # id order keeps equal-priority ties stable
                rule = self._rules[rule_id]
                if rule.applies_to(bridge):
                    classifier.add(rule_id, rule)
        return classifier

    def ids_after(self, after: int, limit: int | None = None) -> list[int]:
        """Rule ids above `after`, ascending, at most `limit` (export pages: rules are kept in
        insertion order, which is id order, so one page costs its own size plus a bisection)."""
        ordered = list(self._rules)
        start = bisect.bisect_right(ordered, after)
        return ordered[start:] if limit is None else ordered[start:start + limit]

    def find(self, rule: FlowRule) -> int | None:
        """The id of a rule equal to `rule` (same bridge and origin too), if there is one."""
        return self._ids_by_rule.get(rule)

    def meta(self, rule_id: int) -> RuleMeta:
        return self._meta[rule_id]

    def add(self, rule: FlowRule, *, now: float | None = None,
            expires_at: float | None = None) -> int:
        """Insert a new rule under a new id; `now` is the wall-clock time of insertion."""
        rule_id = self._next_id
        meta = RuleMeta(clock.now() if now is None else now, expires_at)
        self._insert(rule_id, rule, meta)
        if self.listener is not None:
            self.listener.rule_saved(rule_id, rule, meta)
        return rule_id

    def restore(self, rule_id: int, rule: FlowRule, meta: RuleMeta) -> None:
        """Put back a rule from the backup under its old id (the listener already has it).
        Ids must come in ascending order, above every id in use: the store keeps id order."""
        if rule_id < self._next_id:
            raise ValueError(f"rule id {rule_id} is not above the ids in use")
        self._insert(rule_id, rule, meta)

    def reserve_ids(self, next_id: int) -> None:
        """Never give out ids below `next_id` (they were used before a restart)."""
        self._next_id = max(self._next_id, next_id)

    def restore_many(self, records: Iterable[tuple[int, FlowRule, RuleMeta]]) -> None:
        """restore() for a whole backup, before any bridge has a classifier. A million rules:
        every step iterates in C (zip, map, dict.update) where a loop per rule in Python took a
        third of the time."""
        if self._classifiers:
            for rule_id, rule, meta in records:
                self.restore(rule_id, rule, meta)
            return
        records = records if isinstance(records, list) else list(records)
        if not records:
            return
        ids = list(map(itemgetter(0), records))
        rules = list(map(itemgetter(1), records))
        metas = list(map(itemgetter(2), records))
        # Ascending, above the ids in use: _rules stays in id order (see ids_after).
        if ids[0] < self._next_id or not all(map(lt, ids, islice(ids, 1, None))):
            raise ValueError("restored rule ids must ascend, above the ids in use")
        self._rules.update(zip(ids, rules, strict=True))
        self._meta.update(zip(ids, metas, strict=True))
        first_ids = dict(zip(reversed(rules), reversed(ids), strict=True))  # each rule's first id
        if self._ids_by_rule or len(first_ids) != len(ids):
            for rule_id, rule in zip(ids, rules, strict=True):  # duplicates: the general path
                self._index(rule, rule_id)
        else:
            self._ids_by_rule = first_ids
        expiry_times = list(map(itemgetter(1), metas))
        if None in expiry_times:
            self._expiries += [(at, rule_id) for at, rule_id in zip(expiry_times, ids, strict=True)
                               if at is not None]
        else:  # every rule expires (learned rules): no test per rule
            self._expiries += zip(expiry_times, ids, strict=True)
        heapq.heapify(self._expiries)
        self._next_id = ids[-1] + 1

    def _index(self, rule: FlowRule, rule_id: int) -> None:
        first = self._ids_by_rule.setdefault(rule, rule_id)
        if first != rule_id:
            self._duplicate_ids.setdefault(rule, []).append(rule_id)

    def _unindex(self, rule: FlowRule, rule_id: int) -> None:
        later = self._duplicate_ids.get(rule)
        if self._ids_by_rule.get(rule) == rule_id:
            if later:
                self._ids_by_rule[rule] = later.pop(0)
            else:
                del self._ids_by_rule[rule]
        elif later and rule_id in later:
            later.remove(rule_id)
        if later is not None and not later:
            del self._duplicate_ids[rule]

    def _insert(self, rule_id: int, rule: FlowRule, meta: RuleMeta) -> None:
        self._next_id = max(self._next_id, rule_id + 1)
        self._rules[rule_id] = rule
        self._meta[rule_id] = meta
        self._index(rule, rule_id)
        if meta.expires_at is not None:
            heapq.heappush(self._expiries, (meta.expires_at, rule_id))
        for bridge, classifier in self._classifiers.items():
            if rule.applies_to(bridge):
                classifier.add(rule_id, rule)

    def remove(self, rule_id: int) -> FlowRule:
        rule = self._rules.pop(rule_id)
        del self._meta[rule_id]
        self._unindex(rule, rule_id)
        for classifier in self._classifiers.values():
            if rule_id in classifier:
                classifier.remove(rule_id)
        if self.listener is not None:
            self.listener.rule_deleted(rule_id)
        return rule

    def set_expiry(self, rule_id: int, expires_at: float | None) -> None:
        """Give a rule a new end of life (None: none); e.g. a retain policy shortening it."""
        meta = self._meta[rule_id]
        if meta.expires_at == expires_at:
            return
        meta = self._meta[rule_id] = RuleMeta(meta.inserted_at, expires_at)
        if expires_at is not None:
            self._push_expiry(expires_at, rule_id)
        if self.listener is not None:
            self.listener.rule_saved(rule_id, self._rules[rule_id], meta)

    def renew(self, rule_id: int, now: float) -> None:
        """The rule was given again at `now` (a controller re-sent its flow): its lifetime, a
        hard timeout, starts over."""
        rule = self._rules[rule_id]
        meta = self._meta[rule_id] = RuleMeta(
            now, now + rule.hard_timeout if rule.hard_timeout else None)
        if meta.expires_at is not None:
            self._push_expiry(meta.expires_at, rule_id)
        if self.listener is not None:
            self.listener.rule_saved(rule_id, rule, meta)

    def shift_times(self, step: float) -> int:
        """The clock stepped by `step` seconds (rules/clock.py): every rule with a lifetime
        keeps what it had left, and so does its backup copy. Rules without one keep their
        insertion time (it only informs). Returns how many rules moved."""
        moved = 0
        for rule_id, meta in list(self._meta.items()):
            if meta.expires_at is None:
                continue
            self._meta[rule_id] = RuleMeta(meta.inserted_at + step, meta.expires_at + step)
            moved += 1
        if moved and self.listener is not None:
            self.listener.times_shifted(step)
        self._expiries = [(m.expires_at, i) for i, m in self._meta.items()
                          if m.expires_at is not None]
        heapq.heapify(self._expiries)
        return moved

    def _push_expiry(self, expires_at: float, rule_id: int) -> None:
        heapq.heappush(self._expiries, (expires_at, rule_id))
        if len(self._expiries) > 2 * len(self._meta) + 64:  # stale entries (flapping links)
            self._expiries = [(m.expires_at, i) for i, m in self._meta.items()
                              if m.expires_at is not None]
            heapq.heapify(self._expiries)

    def next_expiry(self) -> float | None:
        return self._expiries[0][0] if self._expiries else None

    def expire(self, now: float) -> RuleChange:
        """Remove every rule whose expiry has passed."""
        removed: list[tuple[int, FlowRule]] = []
        while self._expiries and self._expiries[0][0] <= now:
            when, rule_id = heapq.heappop(self._expiries)
            meta = self._meta.get(rule_id)
            if meta is None or meta.expires_at != when:
                continue  # removed meanwhile, or its expiry changed (a newer heap entry exists)
            removed.append((rule_id, self.remove(rule_id)))
        return RuleChange(added=(), removed=tuple(removed))

    def replace_origin(self, origin: str, rules: Iterable[FlowRule], *,
                       now: float | None = None) -> RuleChange:
        """Make the rules of one origin (e.g. "config") exactly `rules`; unchanged rules keep
        their ids (and so their flows on the bridges)."""
        wanted = list(rules)
        current = {rid: r for rid, r in self._rules.items() if r.origin == origin}
        kept: set[int] = set()
        added: list[tuple[int, FlowRule]] = []
        by_rule: dict[FlowRule, list[int]] = {}
        for rid, rule in current.items():
            by_rule.setdefault(rule, []).append(rid)
        for rule in wanted:
            ids = by_rule.get(rule)
            if ids:
                kept.add(ids.pop(0))
            else:
                added.append((-1, rule))
        removed = [(rid, self.remove(rid)) for rid in current if rid not in kept]
        added = [(self.add(rule, now=now), rule) for _, rule in added]
        return RuleChange(tuple(added), tuple(removed))
