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


class Saved:
    def __init__(self) -> None:
        self.saved: dict[int, float | None] = {}

    def rule_saved(self, rule_id, rule, meta) -> None:
        self.saved[rule_id] = meta.expires_at

    def rule_deleted(self, rule_id) -> None:
        self.saved.pop(rule_id, None)

    def times_shifted(self, step: float) -> None:
        self.saved = {i: None if at is None else at + step for i, at in self.saved.items()}


def test_after_a_step_the_clock_takes_the_wall_time_again_and_lifetimes_move_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ovs_sriov_proxy.rules.flowparse import parse_flow

    backup = Saved()
    store = RuleStore(listener=backup)
    learned = store.add(parse_flow("priority=5,in_port=1 actions=output:2"),
                        expires_at=clock.now() + 300)
    local = store.add(parse_flow("priority=6,in_port=2 actions=output:1"))
    inserted_local = store.meta(local).inserted_at
    real_time, real_monotonic = time.time, time.monotonic
    try:
        monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # NTP, an hour ahead
        assert clock.drift() > clock.STEP_SECONDS
        step = clock.reanchor()
        assert 3599 < step < 3601 and abs(clock.drift()) < 1.0
        assert store.shift_times(step) == 1  # only the rule with a lifetime moves
        assert store.meta(local).inserted_at == inserted_local
        expires = store.meta(learned).expires_at
        assert expires is not None and 299 < expires - real_time() - 3600 <= 300
        assert backup.saved[learned] == expires  # the backup keeps true wall time
        assert store.expire(clock.now()).removed == ()
        monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 301)
        assert [rule_id for rule_id, _ in store.expire(clock.now()).removed] == [learned]
    finally:
        monkeypatch.undo()
        clock.reanchor()  # the other tests run on the real clock
    assert abs(clock.drift()) < 1.0
