"""Classifier and cache-safety tests against a brute-force reference.

The key universe is small enough to enumerate (4 ports x 16 addresses x 4 UDP ports), so the
central safety property — every packet an installed flow would match classifies to the same rule
— is checked exhaustively for each generated rule set.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ovs_sriov_proxy.rules.classifier import Classifier
from ovs_sriov_proxy.rules.fields import pack
from ovs_sriov_proxy.rules.model import FlowRule, Match, Output

UDP_BASE = {"eth_type": (0x0800, 0xFFFF), "ip_proto": (17, 0xFF)}
UNIVERSE = [
    pack({"in_port": p, "eth_type": 0x0800, "ip_proto": 17, "ipv4_dst": d, "udp_dst": u})
    for p, d, u in itertools.product(range(4), range(16), range(4))
]


def rule(priority: int, port: int | None = None, dst: tuple[int, int] | None = None,
         udp: tuple[int, int] | None = None, out: int = 1) -> FlowRule:
    fields = dict(UDP_BASE)
    if port is not None:
        fields["in_port"] = (port, 0xFFFFFFFF)
    if dst is not None:
        fields["ipv4_dst"] = dst
    if udp is not None:
        fields["udp_dst"] = udp
    return FlowRule(Match.from_fields(fields), (Output(out),), priority=priority)


def brute_force(rules: list[tuple[int, FlowRule]], key: int) -> int | None:
    best: tuple[int, int] | None = None
    best_id = None
    for order, (rule_id, r) in enumerate(rules):
        if r.match.matches(key):
            rank = (r.priority, -order)
            if best is None or rank > best:
                best, best_id = rank, rule_id
    return best_id


def loaded(generated: list[FlowRule]) -> tuple[Classifier, list[tuple[int, FlowRule]]]:
    classifier = Classifier()
    numbered = list(enumerate(generated, start=1))
    for rule_id, r in numbered:
        classifier.add(rule_id, r)
    return classifier, numbered


rules_strategy = st.lists(
    st.builds(
        rule,
        priority=st.integers(0, 5),
        port=st.one_of(st.none(), st.integers(0, 3)),
        dst=st.one_of(st.none(), st.tuples(st.integers(0, 15), st.integers(1, 15))),
        udp=st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(1, 3))),
        out=st.integers(1, 9),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(rules_strategy)
def test_lookup_agrees_with_brute_force(generated: list[FlowRule]) -> None:
    classifier, numbered = loaded(generated)
    for key in UNIVERSE:
        hit = classifier.lookup(key)
        assert (hit[0] if hit else None) == brute_force(numbered, key)


@settings(max_examples=300, deadline=None)
@given(rules_strategy)
def test_cached_flow_never_disagrees_with_the_rules(generated: list[FlowRule]) -> None:
    classifier, numbered = loaded(generated)
    for key in UNIVERSE:
        hit = classifier.lookup(key)
        if hit is None:
            continue
        rule_id, winner = hit
        cached = classifier.cache_match(rule_id, key)
        assert cached.matches(key)
        assert winner.match.covers(cached), "the cached flow must lie inside the rule"
        for other in UNIVERSE:
            if cached.matches(other):
                assert brute_force(numbered, other) == rule_id


def test_remove_restores_lower_rule_and_its_full_wildcard() -> None:
    classifier = Classifier()
    low = rule(10, udp=(1, 0xFFFF))
    high = rule(20, port=2)
    classifier.add(1, low)
    classifier.add(2, high)
    key = pack({"in_port": 3, "eth_type": 0x0800, "ip_proto": 17, "udp_dst": 1})
    assert classifier.lookup(key) == (1, low)
    narrowed = classifier.cache_match(1, key)
    assert narrowed != low.match and narrowed.field_mask("in_port") == 0xFFFFFFFF
    classifier.remove(2)
    assert classifier.overlapping_above(1) == ()
    assert classifier.cache_match(1, key) == low.match


def test_equal_priority_first_added_wins_and_later_flow_excludes_it() -> None:
    classifier = Classifier()
    first = rule(5, port=1, out=1)
    second = rule(5, udp=(2, 0xFFFF), out=2)
    classifier.add(1, first)
    classifier.add(2, second)
    both = pack({"in_port": 1, "eth_type": 0x0800, "ip_proto": 17, "udp_dst": 2})
    assert classifier.lookup(both) == (1, first)
    only_second = pack({"in_port": 3, "eth_type": 0x0800, "ip_proto": 17, "udp_dst": 2})
    assert classifier.lookup(only_second) == (2, second)
    assert not classifier.cache_match(2, only_second).matches(both)


def test_distinguishing_field_brings_its_prerequisites() -> None:
    classifier = Classifier()
    port_rule = FlowRule(Match.from_fields({"in_port": (1, 0xFFFFFFFF)}), (Output(2),), priority=1)
    udp_rule = rule(9, udp=(53, 0xFFFF))
    classifier.add(1, port_rule)
    classifier.add(2, udp_rule)
    key = pack({"in_port": 1, "eth_type": 0x0800, "ip_proto": 17, "udp_dst": 54})
    assert classifier.lookup(key) == (1, port_rule)
    cached = classifier.cache_match(1, key).fields()
    # 54 = 0b110110 and 53 = 0b110101 first differ at bit 1: the prefix down to it is enough.
    assert cached["udp_dst"] == (54, 0xFFFE)
    assert cached["ip_proto"] == (17, 0xFF) and cached["eth_type"] == (0x0800, 0xFFFF)


def test_narrowing_pins_a_prefix_so_high_ports_share_one_flow() -> None:
    classifier = Classifier()
    classifier.add(1, rule(1, port=1))
    classifier.add(2, FlowRule(Match.from_fields({**UDP_BASE, "udp_dst": (53, 0xFFFF)}),
                               (Output(3),), priority=9))
    flows = {classifier.cache_match(1, pack({"in_port": 1, "eth_type": 0x0800, "ip_proto": 17,
                                             "udp_dst": port}))
             for port in (40000, 50000, 61000)}
    assert len(flows) == 1
    (flow,) = flows
    assert flow.fields()["udp_dst"] == (0x8000, 0x8000)


def test_no_match_returns_none() -> None:
    classifier = Classifier()
    classifier.add(1, rule(1, port=1))
    assert classifier.lookup(pack({"in_port": 2})) is None
