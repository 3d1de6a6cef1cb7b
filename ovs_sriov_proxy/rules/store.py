"""The proxy's rule store: every rule it holds, with ids, and a classifier per bridge.

Rule ids are small integers that never get reused while the process lives; each rule's flows on a
bridge carry the cookie `PROXY_COOKIE_TAG | rule_id`, so the proxy recognises its own flows (and
which rule they came from) in FLOW_REMOVED and flow dumps, and can delete exactly them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .classifier import Classifier
from .model import FlowRule

PROXY_COOKIE_TAG = 0x5052 << 48  # "PR": flows the proxy installed from its own rules
COOKIE_TAG_MASK = 0xFFFF << 48
RULE_ID_MASK = 0xFFFFFFFF


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


class RuleStore:
    def __init__(self) -> None:
        self._rules: dict[int, FlowRule] = {}
        self._next_id = 1
        self._classifiers: dict[str, Classifier] = {}

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

    def add(self, rule: FlowRule) -> int:
        rule_id = self._next_id
        self._next_id += 1
        self._rules[rule_id] = rule
        for bridge, classifier in self._classifiers.items():
            if rule.applies_to(bridge):
                classifier.add(rule_id, rule)
        return rule_id

    def remove(self, rule_id: int) -> FlowRule:
        rule = self._rules.pop(rule_id)
        for classifier in self._classifiers.values():
            if rule_id in classifier:
                classifier.remove(rule_id)
        return rule

    def replace_origin(self, origin: str, rules: Iterable[FlowRule]) -> RuleChange:
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
        added = [(self.add(rule), rule) for _, rule in added]
        return RuleChange(tuple(added), tuple(removed))
