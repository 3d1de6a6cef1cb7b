"""The rules backup on real SQLite files: round trips, batching, damage, a killed writer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovs_sriov_proxy.rules.backup import BackupError, SqliteBackup, read_records
from ovs_sriov_proxy.rules.flowparse import parse_flow
from ovs_sriov_proxy.rules.model import FlowRule, Output, PopVlan, PushVlan, SetField, SetQueue
from ovs_sriov_proxy.rules.records import (
    RecordError,
    RuleRecord,
    actions_from_text,
    actions_to_text,
    from_json_line,
    record_from_row,
    record_row,
    to_json_line,
)
from ovs_sriov_proxy.rules.store import RuleMeta, RuleStore

FLOWS = [
    "priority=100,in_port=1,udp,tp_dst=5060 actions=output:2",
    "priority=5,hard_timeout=30,ip,nw_dst=10.0.0.0/8 actions=mod_vlan_vid:5,output:3",
    "priority=7,dl_vlan=9 actions=strip_vlan,set_queue:3,output:controller",
    "priority=1 actions=drop",
]


def rule(n: int, origin: str = "ctl-a") -> FlowRule:
    return parse_flow(f"priority={n % 60000},udp,tp_dst={n % 65536},in_port={n % 7 + 1} "
                      "actions=output:2", bridge="br-int", origin=origin)


def open_backup(path: Path, interval: float = 0.01) -> SqliteBackup:
    backup = SqliteBackup(path, flush_interval=interval)
    backup.load()
    backup.start()
    return backup


def test_rules_come_back_with_their_ids_times_and_every_kind_of_action(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path)
    store = RuleStore(listener=backup)
    ids = [store.add(parse_flow(flow, origin="config"), now=100.0 + i) for i, flow in enumerate(FLOWS)]
    learned = store.add(rule(1), now=200.0, expires_at=230.0)
    assert backup.flush(5)
    backup.close(5)

    result = SqliteBackup(path).load()
    assert result.problem is None
    restored = {r.rule_id: r for r in result.records}
    assert sorted(restored) == [*ids, learned]
    for rule_id in ids + [learned]:
        assert restored[rule_id].rule == store.get(rule_id)
        assert restored[rule_id].rule.text == store.get(rule_id).text
        assert restored[rule_id].meta == store.meta(rule_id)


def test_deletes_and_expiry_changes_reach_the_file_in_order(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path)
    store = RuleStore(listener=backup)
    first = store.add(rule(1))
    second = store.add(rule(2), expires_at=50.0)
    store.remove(first)
    store.set_expiry(second, 80.0)
    third = store.add(rule(3))
    assert backup.flush(5)
    backup.close(5)
    records = {r.rule_id: r for r in SqliteBackup(path).load().records}
    assert sorted(records) == [second, third]
    assert records[second].meta.expires_at == 80.0


def test_a_clock_step_moves_every_lifetime_in_the_file_with_one_statement(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = SqliteBackup(path, flush_interval=3600)  # commits only on demand (and past
    # EAGER_FLUSH queued changes: this test stays below)
    backup.load()
    backup.start()
    store = RuleStore(listener=backup)
    local = store.add(rule(1, origin="config"), now=100.0)
    learned = [store.add(rule(n), now=100.0, expires_at=160.0) for n in range(2, 502)]
    assert backup.flush(5) and backup.pending() == 0 and backup.is_acknowledged(local)
    assert store.shift_times(3600.0) == 500
    # One operation for the step; until it is committed no rule's copy is current.
    assert backup.pending() == 1 and not backup.is_acknowledged(local)
    after = store.add(rule(5000), now=3800.0, expires_at=3860.0)  # written after the step: as is
    assert backup.flush(5)
    backup.close(5)
    records = {r.rule_id: r.meta for r in SqliteBackup(path).load().records}
    assert records[local] == store.meta(local) == (100.0, None)  # no lifetime: not moved
    assert all(records[i] == store.meta(i) == (3700.0, 3760.0) for i in learned)
    assert records[after] == (3800.0, 3860.0)


def test_a_rule_is_acknowledged_only_once_committed(tmp_path: Path) -> None:
    backup = SqliteBackup(tmp_path / "rules.db", flush_interval=3600)  # commits only on demand
    backup.load()
    store = RuleStore(listener=backup)
    rule_id = store.add(rule(1))
    assert not backup.is_acknowledged(rule_id) and backup.pending() == 1
    backup.start()
    assert backup.flush(5)
    assert backup.is_acknowledged(rule_id) and backup.pending() == 0
    backup.close(5)


def test_thousands_of_changes_are_batched_into_few_transactions(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path, interval=0.05)
    store = RuleStore(listener=backup)
    for n in range(20_000):
        store.add(rule(n))
    assert backup.flush(30)
    backup.close(5)
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT count(*) FROM rules").fetchone()[0] == 20_000
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_a_file_that_is_not_a_database_is_set_aside_untouched(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    garbage = b"this is not sqlite\n" * 300
    path.write_bytes(garbage)
    result = SqliteBackup(path).load()
    assert result.problem is not None and "not a database" in result.problem
    assert result.records == []
    assert result.set_aside is not None and result.set_aside.read_bytes() == garbage
    # The new file works.
    backup = open_backup(path)
    RuleStore(listener=backup).add(rule(1))
    assert backup.flush(5)
    backup.close(5)
    assert len(SqliteBackup(path).load().records) == 1


def test_a_damaged_page_costs_only_the_rules_on_it(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path)
    store = RuleStore(listener=backup)
    for n in range(3000):
        store.add(rule(n))
    assert backup.flush(30)
    backup.close(5)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.close()
    pages = path.stat().st_size // page_size
    data = bytearray(path.read_bytes())
    damaged = pages // 2
    data[damaged * page_size:(damaged + 1) * page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))

    result = SqliteBackup(path).load()
    assert result.problem is not None
    assert result.set_aside is not None and result.set_aside.read_bytes() == bytes(data)
    recovered = {r.rule_id for r in result.records}
    rows_per_page = 3000 / pages
    assert 3000 - 3 * rows_per_page <= len(recovered) < 3000
    for record in result.records:
        assert record.rule == store.get(record.rule_id)
    # What was recovered is in the new file.
    assert {r.rule_id for r in SqliteBackup(path).load().records} == recovered


def test_a_backup_of_a_newer_schema_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path)
    backup.close(5)
    connection = sqlite3.connect(path)
    connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    connection.commit()
    connection.close()
    before = path.read_bytes()
    with pytest.raises(BackupError, match="schema version 99"):
        SqliteBackup(path).load()
    assert path.read_bytes() == before


def test_a_killed_writer_leaves_every_acknowledged_rule(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    writer = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from ovs_sriov_proxy.rules.backup import SqliteBackup
        from ovs_sriov_proxy.rules.flowparse import parse_flow
        from ovs_sriov_proxy.rules.store import RuleStore
        backup = SqliteBackup(Path({str(path)!r}), flush_interval=0.005)
        backup.load()
        backup.start()
        store = RuleStore(listener=backup)
        last_acknowledged = 0
        n = 0
        while True:
            n += 1
            store.add(parse_flow(f"priority=1,udp,tp_dst={{n % 65536}} actions=output:2",
                                 origin="ctl"))
            if n % 50 == 0:
                acknowledged = max((i for i in range(last_acknowledged + 1, n + 1)
                                    if backup.is_acknowledged(i)), default=last_acknowledged)
                if acknowledged > last_acknowledged and all(
                        backup.is_acknowledged(i) for i in range(1, acknowledged + 1, 97)):
                    last_acknowledged = acknowledged
                    print(acknowledged, flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    acknowledged = 0
    deadline = time.monotonic() + 30
    while acknowledged < 2000 and time.monotonic() < deadline:
        acknowledged = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert acknowledged >= 2000
    result = SqliteBackup(path).load()
    assert result.problem is None
    ids = sorted(r.rule_id for r in result.records)
    assert ids[:acknowledged] == list(range(1, acknowledged + 1))
    assert ids == list(range(1, len(ids) + 1))  # a prefix: whole transactions or nothing


def test_read_records_reads_a_backup_without_changing_it(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path)
    RuleStore(listener=backup).add(rule(1))
    backup.close(5)
    assert [r.rule_id for r in read_records(path)] == [1]


# ---- the record codecs ----

ACTIONS = st.lists(st.one_of(
    st.builds(Output, st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF)),
    st.builds(SetField, st.sampled_from(["vlan_vid", "eth_dst", "ipv4_src", "udp_dst"]),
              st.integers(0, 2**48 - 1)),
    st.builds(PushVlan, st.sampled_from([0x8100, 0x88A8])),
    st.just(PopVlan()),
    st.builds(SetQueue, st.integers(0, 2**32 - 1)),
), max_size=6).map(tuple)


@given(ACTIONS)
@settings(max_examples=200)
def test_action_lists_survive_their_text_form(actions: tuple) -> None:
    assert actions_from_text(actions_to_text(actions)) == actions


@pytest.mark.parametrize("flow", FLOWS)
def test_rows_and_json_lines_round_trip(flow: str) -> None:
    record = RuleRecord(42, parse_flow(flow, bridge="br-int", origin="ctl-b"), RuleMeta(10.5, 99.0))
    assert record_from_row(record_row(record)) == record
    back = from_json_line(to_json_line(record))
    assert (back.rule_id, back.rule, back.meta) == (42, record.rule, record.meta)


@pytest.mark.parametrize(("line", "problem"), [
    ("nope", "not JSON"),
    ("[1]", "not a JSON object"),
    ('{"format": 2, "flow": "actions=drop", "origin": "x", "inserted_at": 1}', "format 2"),
    ('{"format": 1, "flow": "actions=bogus", "origin": "x", "inserted_at": 1}', "bad flow"),
    ('{"format": 1, "flow": "actions=drop", "origin": "x"}', "inserted_at"),
    ('{"format": 1, "flow": "actions=drop", "origin": "", "inserted_at": 1}', "origin"),
])
def test_bad_import_lines_say_what_is_wrong(line: str, problem: str) -> None:
    with pytest.raises(RecordError, match=problem):
        from_json_line(line)


def damaged_copy(path: Path, start: float, length: int | None) -> bytes:
    """Checkpoint the file, then overwrite `length` bytes at fraction `start` with junk, or cut
    the file there (length None). Returns the bytes left on disk."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    data = bytearray(path.read_bytes())
    at = int(len(data) * start)
    data = data[:at] if length is None else data[:at] + b"\x5a" * length + data[at + length:]
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_cut_file_gives_back_what_lies_before_the_cut(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path)
    store = RuleStore(listener=backup)
    for n in range(4000):
        store.add(rule(n))
    backup.close(30)
    left = damaged_copy(path, 0.6, None)
    result = SqliteBackup(path).load()
    assert result.problem is not None and result.set_aside is not None
    assert result.set_aside.read_bytes() == left
    assert 1500 <= len(result.records) < 4000  # pages before the cut (not all low ids: splits)
    assert all(record.rule == store.get(record.rule_id) for record in result.records)


def test_salvage_is_quick_however_sparse_the_ids(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path)
    store = RuleStore(listener=backup)
    for n in range(2000):
        store.add(rule(n))
    for rule_id in range(1001, 2001):  # learned rules that came and went ...
        store.remove(rule_id)
    store.reserve_ids(50_000_000)
    late = [store.add(rule(n)) for n in range(2000, 3000)]  # ... and ids far away
    backup.close(30)
    damaged_copy(path, 0.4, 4096)
    started = time.monotonic()
    result = SqliteBackup(path).load()
    assert time.monotonic() - started < 20
    ids = {r.rule_id for r in result.records}
    assert len(ids & set(late)) >= 900 and len(ids & set(range(1, 1001))) >= 700
    assert result.next_id >= late[-1] + 1


def test_ids_are_never_given_twice_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    backup = open_backup(path)
    store = RuleStore(listener=backup)
    ids = [store.add(rule(n)) for n in range(5)]
    store.remove(ids[-1])  # the highest id is gone from the file
    backup.close(5)
    result = SqliteBackup(path).load()
    restarted = RuleStore()
    restarted.restore_many(result.records)
    restarted.reserve_ids(result.next_id)
    assert restarted.add(rule(99)) == ids[-1] + 1


def test_an_unopenable_file_is_refused_not_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "rules.db"
    path.mkdir()  # not damage, and not ours to move: as a permission error would be
    (path / "keep").write_text("x")
    with pytest.raises(BackupError, match="cannot read"):
        SqliteBackup(path).load()
    assert not list(tmp_path.glob("rules.db.corrupt-*")) and (path / "keep").exists()


def test_a_failed_commit_keeps_the_batch_in_order_and_retries(tmp_path: Path,
                                                              monkeypatch) -> None:
    from ovs_sriov_proxy.rules import backup as backup_module

    real_write = backup_module._write
    calls = []

    def flaky(connection, operations):
        calls.append(len(operations))
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return real_write(connection, operations)

    monkeypatch.setattr(backup_module, "_write", flaky)
    path = tmp_path / "rules.db"
    backup = SqliteBackup(path, flush_interval=0.01)
    backup.load()
    store = RuleStore(listener=backup)
    first = store.add(rule(1))
    store.remove(first)  # a save then a delete of one id: the delete must come last
    kept = store.add(rule(2))
    backup.start()
    assert backup.flush(10)
    assert backup.failures == 2 and backup.last_error is None
    backup.close(5)
    assert [r.rule_id for r in SqliteBackup(path).load().records] == [kept]


def test_import_requests_stay_under_the_control_sockets_limit() -> None:
    from ovs_sriov_proxy.cli import _chunks
    from ovs_sriov_proxy.control import IMPORT_CHUNK, IMPORT_CHUNK_BYTES

    lines = ["x" * 5000] * 2000 + ["y"] * 12_000
    chunks = list(_chunks(lines))
    assert sum(chunks, []) == lines
    assert all(len(c) <= IMPORT_CHUNK and sum(len(x) + 1 for x in c) <= IMPORT_CHUNK_BYTES + 5001
               for c in chunks)


def test_learned_actions_export_and_import_as_the_same_rule() -> None:
    from ovs_sriov_proxy.rules.model import canonical_actions

    learned = parse_flow("priority=5,in_port=1 actions=output:2", origin="ctl")
    as_sent = (Output(2, 0xFFE5),)  # os-ken's default max_len, as a controller sends it
    rule = FlowRule(learned.match, canonical_actions(as_sent), 5, 0, 0, None, "ctl", "")
    back = from_json_line(to_json_line(RuleRecord(3, rule, RuleMeta(1.0)))).rule
    assert back == rule == learned


def test_a_backup_path_with_characters_a_uri_would_misread(tmp_path) -> None:
    path = tmp_path / "odd?#%name" / "rules.db"
    backup = SqliteBackup(path)
    assert backup.load().records == []
    backup.start()
    store = RuleStore(listener=backup)
    rule_id = store.add(parse_flow("priority=5,udp actions=output:2", origin="ctl"), now=1.0)
    assert backup.flush(10)
    backup.close(10)
    assert [r.rule_id for r in SqliteBackup(path).load().records] == [rule_id]
    assert [r.rule_id for r in read_records(path)] == [rule_id]
