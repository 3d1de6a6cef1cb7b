"""Rule lifetimes do not jump with the system clock (ovs_sriov_proxy/rules/clock.py)."""

from __future__ import annotations

import time

import pytest

from ovs_sriov_proxy.rules import clock
from ovs_sriov_proxy.rules.model import FlowRule
from ovs_sriov_proxy.rules.store import RuleStore


def test_the_clock_starts_at_the_wall_time_and_ignores_later_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert abs(clock.now() - time.time()) < 1.0
    before = clock.now()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # NTP steps an hour ahead
    assert 0 <= clock.now() - before < 1.0


def test_a_clock_step_neither_expires_learned_rules_nor_keeps_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ovs_sriov_proxy.rules.flowparse import parse_flow

    store = RuleStore()
    rule: FlowRule = parse_flow("priority=5,in_port=1 actions=output:2")
    added = store.add(rule, expires_at=clock.now() + 300)  # as a hard_timeout=300 is learned
    real_time, real_monotonic = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # stepped an hour ahead
    assert store.expire(clock.now()).removed == ()
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)  # and an hour back
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 301)  # 301 s later
    assert [rule_id for rule_id, _ in store.expire(clock.now()).removed] == [added]
