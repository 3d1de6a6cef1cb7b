"""Miss resolution across controllers, with the clock injected."""

from __future__ import annotations

import datetime

import pytest

from ovs_sriov_proxy.arbiter import Arbiter, Policy
from ovs_sriov_proxy.config import TimeWindow
from ovs_sriov_proxy.resolver import MissResolver, UnknownBuffer

NOON = datetime.time(12)
ARBITER = Arbiter([Policy("default", 10, 0), Policy("voip", 50, 1)])


def resolver(**kwargs) -> MissResolver[str, str]:
    return MissResolver(ARBITER, miss_timeout=0.2, **kwargs)


def test_a_lower_answer_waits_for_the_better_one_and_loses_to_it() -> None:
    r = resolver()
    buffer_id, _ = r.open("br0", 1, b"frame", 0, ("default", "voip"), now=0, local_time=NOON)
    assert r.answer("default", buffer_id, "flood it", now=0.01, local_time=NOON) is None
    resolution = r.answer("voip", buffer_id, "to the voice VF", now=0.02, local_time=NOON)
    assert resolution is not None and not resolution.timed_out
    assert (resolution.winner, resolution.answer) == ("voip", "to the voice VF")
    assert len(r) == 0


def test_the_best_answer_alone_decides_at_once() -> None:
    r = resolver()
    buffer_id, _ = r.open("br0", 1, b"frame", 0, ("default", "voip"), now=0, local_time=NOON)
    resolution = r.answer("voip", buffer_id, "v", now=0.01, local_time=NOON)
    assert resolution is not None and resolution.winner == "voip"
    with pytest.raises(UnknownBuffer):  # a late answer to a decided miss
        r.answer("default", buffer_id, "d", now=0.02, local_time=NOON)


def test_timeout_applies_whatever_answered_and_nothing_if_nobody_did() -> None:
    r = resolver()
    answered, _ = r.open("br0", 1, b"a", 0, ("default", "voip"), now=0, local_time=NOON)
    silent, _ = r.open("br0", 1, b"b", 0, ("default", "voip"), now=0.1, local_time=NOON)
    r.answer("default", answered, "d", now=0.05, local_time=NOON)
    assert r.next_deadline() == pytest.approx(0.2)
    assert r.expire(now=0.19, local_time=NOON) == []
    (first,) = r.expire(now=0.2, local_time=NOON)
    assert first.timed_out and (first.winner, first.answer) == ("default", "d")
    (second,) = r.expire(now=0.31, local_time=NOON)
    assert second.miss.buffer_id == silent and second.winner is None and second.answer is None


def test_hours_can_make_the_lower_priority_answer_the_best_possible() -> None:
    arbiter = Arbiter([Policy("day", 10, 0),
                       Policy("night", 50, 1, hours=(TimeWindow(datetime.time(22), datetime.time(6)),))])
    r: MissResolver[str, str] = MissResolver(arbiter, miss_timeout=0.2)
    buffer_id, _ = r.open("br0", 1, b"f", 0, ("day", "night"), now=0, local_time=NOON)
    resolution = r.answer("day", buffer_id, "d", now=0.01, local_time=NOON)
    assert resolution is not None and resolution.winner == "day"


def test_answers_must_name_a_pending_miss_asked_of_that_controller() -> None:
    r = resolver()
    buffer_id, _ = r.open("br0", 1, b"f", 0, ("default",), now=0, local_time=NOON)
    with pytest.raises(UnknownBuffer):
        r.answer("voip", buffer_id, "x", now=0, local_time=NOON)  # never asked
    with pytest.raises(UnknownBuffer):
        r.answer("default", 12345, "x", now=0, local_time=NOON)  # never given


def test_a_controller_going_away_stops_misses_waiting_for_it() -> None:
    r = resolver()
    only_voip, _ = r.open("br0", 1, b"a", 0, ("voip",), now=0, local_time=NOON)
    both, _ = r.open("br0", 1, b"b", 0, ("default", "voip"), now=0, local_time=NOON)
    r.answer("default", both, "d", now=0.01, local_time=NOON)
    decided = r.forget_controller("voip", now=0.02, local_time=NOON)
    by_id = {d.miss.buffer_id: d for d in decided}
    assert by_id[only_voip].winner is None and by_id[only_voip].timed_out
    assert by_id[both].winner == "default" and not by_id[both].timed_out
    assert len(r) == 0


def test_pending_misses_are_bounded() -> None:
    r = resolver(max_pending=2)
    first, _ = r.open("br0", 1, b"a", 0, ("default",), now=0, local_time=NOON)
    r.open("br0", 1, b"b", 0, ("default",), now=0, local_time=NOON)
    _, evicted = r.open("br0", 1, b"c", 0, ("default",), now=0, local_time=NOON)
    assert [e.miss.buffer_id for e in evicted] == [first] and evicted[0].timed_out
    assert len(r) == 2
