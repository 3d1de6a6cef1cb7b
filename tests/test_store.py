"""The rule store's bookkeeping: ids, lifetimes, the listener that the backup is."""

from __future__ import annotations

from ovs_sriov_proxy.rules.flowparse import parse_flow
from ovs_sriov_proxy.rules.store import RuleMeta, RuleStore, is_learned


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def rule_saved(self, rule_id, rule, meta) -> None:
        self.events.append(("saved", rule_id, meta.expires_at))

    def rule_deleted(self, rule_id) -> None:
        self.events.append(("deleted", rule_id))

    def times_shifted(self, step) -> None:
        self.events.append(("shifted", step))


def flow(n: int, origin: str = "ctl") -> object:
    return parse_flow(f"priority={n},udp actions=output:2", origin=origin)


def test_rules_expire_in_order_and_a_changed_expiry_wins() -> None:
    recorder = Recorder()
    store = RuleStore(listener=recorder)
    a = store.add(flow(1), now=0, expires_at=10)
    b = store.add(flow(2), now=0, expires_at=20)
    c = store.add(flow(3), now=0)
    store.set_expiry(a, 30)  # the heap still holds a's old expiry: it must not count
    assert store.next_expiry() == 10
    assert store.expire(15).removed == ()
    assert [rule_id for rule_id, _ in store.expire(25).removed] == [b]
    assert [rule_id for rule_id, _ in store.expire(35).removed] == [a]
    assert store.get(c) is not None and store.meta(c) == RuleMeta(0, None)
    assert recorder.events == [("saved", a, 10), ("saved", b, 20), ("saved", c, None),
                               ("saved", a, 30), ("deleted", b), ("deleted", a)]


def test_restore_keeps_ids_tells_no_listener_and_new_ids_follow() -> None:
    recorder = Recorder()
    store = RuleStore(listener=recorder)
    store.restore(7, flow(1), RuleMeta(5.0, None))
    assert recorder.events == []
    assert store.add(flow(2)) == 8
    assert store.find(flow(1)) == 7 and store.find(flow(1, origin="other")) is None
    store.remove(7)
    assert store.find(flow(1)) is None


def test_learned_means_not_made_by_the_operator() -> None:
    assert is_learned(flow(1, origin="ctl-a"))
    assert not any(is_learned(flow(1, origin=o)) for o in ("config", "cli", "import", "vm"))


def test_renewing_restarts_a_hard_timeout_and_flapping_expiries_do_not_pile_up() -> None:
    store = RuleStore()
    rule_id = store.add(parse_flow("priority=1,hard_timeout=30,udp actions=output:2",
                                   origin="ctl"), now=100, expires_at=130)
    store.renew(rule_id, 200)
    assert store.meta(rule_id) == RuleMeta(200, 230)
    assert store.expire(180).removed == ()  # the old expiry no longer counts
    for n in range(1000):
        store.set_expiry(rule_id, 300 + n)
    assert len(store._expiries) <= 2 * len(store) + 65
    assert store.expire(1298).removed == () and len(store.expire(1299).removed) == 1


def test_ids_after_pages_in_id_order() -> None:
    store = RuleStore()
    store.restore_many([(3, flow(1), RuleMeta(0)), (9, flow(2), RuleMeta(0))])
    new = store.add(flow(3))
    assert new == 10
    assert store.ids_after(0) == [3, 9, 10] and store.ids_after(3, 1) == [9]


def test_a_rule_held_twice_is_still_found_after_either_copy_goes() -> None:
    store = RuleStore()
    first = store.add(flow(1))
    second = store.add(flow(1))  # an import or a restore can bring a rule that is there already
    third = store.add(flow(1))
    assert store.find(flow(1)) == first
    store.remove(first)
    assert store.find(flow(1)) == second
    store.remove(third)
    assert store.find(flow(1)) == second
    store.remove(second)
    assert store.find(flow(1)) is None


def test_restore_many_matches_restore_one_by_one() -> None:
    records = [(3, flow(1), RuleMeta(1.0, 50.0)), (4, flow(2), RuleMeta(1.0, None)),
               (9, flow(1), RuleMeta(2.0, 20.0)), (12, flow(3, origin="x"), RuleMeta(3.0, 40.0))]
    for batch in (records[1:2], records):  # without a duplicate rule, and with one
        one_by_one, at_once = RuleStore(), RuleStore()
        for record in batch:
            one_by_one.restore(*record)
        at_once.restore_many(iter(batch))
        assert list(at_once.items()) == list(one_by_one.items())
        for rule_id, rule, meta in batch:
            assert at_once.meta(rule_id) == meta
            assert at_once.find(rule) == one_by_one.find(rule)
        assert at_once.next_expiry() == one_by_one.next_expiry()
        assert at_once.add(flow(7)) == one_by_one.add(flow(7)) == batch[-1][0] + 1
    at_once.remove(3)
    assert at_once.find(flow(1)) == 9
    assert [rule_id for rule_id, _ in at_once.expire(45).removed] == [9, 12]


def test_restore_many_refuses_ids_out_of_order() -> None:
    store = RuleStore()
    store.restore(5, flow(1), RuleMeta(0.0))
    for ids in ((4, 6), (6, 6), (7, 6)):
        try:
            store.restore_many([(i, flow(10 + n), RuleMeta(0.0)) for n, i in enumerate(ids)])
        except ValueError:
            continue
        raise AssertionError(f"ids {ids} were accepted")
