"""The rules backup: every rule of the store, persisted, restored at start.

`RuleBackup` is what the daemon needs of a backup (so a clustered backend, e.g. OVSDB, can
replace SQLite later); `SqliteBackup` implements it in one SQLite file in WAL mode.

Writes never block the miss path: the store's listener calls only append an operation to a
list under a lock (well under a microsecond); a writer thread commits what has accumulated once
per `flush_interval`, or sooner when much is pending, as one transaction. A rule is
*acknowledged* once the transaction that holds it has committed (with synchronous=FULL, so an
acknowledged rule survives a killed process and a power cut alike); `pending()` says how many
changes are not yet. SQLite's transactions make the file consistent at every instant, so a
process killed mid-write leaves the state of the last commit.

A file SQLite cannot read (not a database, a damaged page, a failed integrity check) is never
overwritten or deleted: it is renamed aside, every row still readable is salvaged into a new
file, and the caller learns what happened from `LoadResult` to say so loudly.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .model import FlowRule
from .records import RecordError, RuleRecord, decode_rows, record_row
from .store import RuleMeta

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
COLUMNS = ("id", "origin", "bridge", "priority", "idle_timeout", "hard_timeout", "cookie",
           "match_value", "match_mask", "actions", "text", "inserted_at", "expires_at")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rules (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    bridge TEXT,
    priority INTEGER NOT NULL,
    idle_timeout INTEGER NOT NULL,
    hard_timeout INTEGER NOT NULL,
    cookie INTEGER NOT NULL,
    match_value BLOB NOT NULL,
    match_mask BLOB NOT NULL,
    actions TEXT NOT NULL,
    text TEXT NOT NULL,
    inserted_at REAL NOT NULL,
    expires_at REAL
);
"""
# What a restore reads: the cookie is derived from the id (and stored for people and tools).
_SELECT = f"SELECT {', '.join(c for c in COLUMNS if c != 'cookie')} FROM rules"
_UPSERT_HEAD = f"INSERT OR REPLACE INTO rules ({', '.join(COLUMNS)}) VALUES "
_ROW_PLACEHOLDERS = f"({', '.join('?' * len(COLUMNS))})"
_DELETE_HEAD = "DELETE FROM rules WHERE id IN ("
_TAIL = {_UPSERT_HEAD: "", _DELETE_HEAD: ")"}
CHUNK_ROWS = 2000  # x 13 columns: within SQLite's 32,766 bound parameters per statement
EAGER_FLUSH = 4096  # pending changes that wake the writer before its interval is up
SALVAGE_CHUNK = 512


class BackupError(Exception):
    """The backup cannot be used at all (e.g. written by a newer version); str() says why."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    records: list[RuleRecord]
    problem: str | None = None  # why the file could not be read as it was, if it could not
    set_aside: Path | None = None  # where the unreadable file now is
    unreadable_rows: int = 0  # rows found but not decodable (bad values, not bad pages)


class RuleBackup(Protocol):
    """What the daemon asks of a rules backup (also the store's RuleListener)."""

    failures: int  # commits that failed (and are retried)
    last_error: str | None  # why the last commit failed; None once one succeeds again

    def load(self) -> LoadResult: ...
    def start(self) -> None: ...
    def rule_saved(self, rule_id: int, rule: FlowRule, meta: RuleMeta) -> None: ...
    def rule_deleted(self, rule_id: int) -> None: ...
    def is_acknowledged(self, rule_id: int) -> bool: ...
    def pending(self) -> int: ...
    def flush(self, timeout: float) -> bool: ...
    def close(self, timeout: float) -> None: ...


@dataclass(slots=True)
class _Queue:
    operations: list[tuple[int, int, RuleRecord | None]] = field(default_factory=list)
    unacknowledged: dict[int, int] = field(default_factory=dict)  # rule id -> its last seq
    seq: int = 0
    committed: int = 0


class SqliteBackup:
    def __init__(self, path: Path, *, flush_interval: float = 0.05) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self.failures = 0  # commits that failed (and will be retried)
        self.last_error: str | None = None
        self._queue = _Queue()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._thread: threading.Thread | None = None

    # ---- reading, before the writer starts ----

    def load(self) -> LoadResult:
        """Every rule in the file; an unreadable file is set aside and salvaged (see module doc).

        The file is only read (query_only) until it has passed SQLite's quick check, so that a
        damaged file is set aside exactly as it was found."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = self._read_checked()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise BackupError(f"{self.path} is locked by another process: {exc}") from None
            problem = str(exc).splitlines()
            summary = problem[0] + (f" (and {len(problem) - 1} more lines)" if len(problem) > 1 else "")
            return self._set_aside_and_salvage(summary)
        with contextlib.closing(_connect(self.path)) as connection:
            _prepare(connection)  # a new file gets its schema; an existing one is unchanged
        return result

    def _read_checked(self) -> LoadResult:
        if not self.path.exists():
            return LoadResult([])
        with contextlib.closing(_connect(self.path)) as connection:
            connection.execute("PRAGMA query_only=1")
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                return LoadResult([])  # an empty file: nothing was ever written
            if not {"meta", "rules"} <= tables:
                raise sqlite3.DatabaseError(f"not a rules backup (tables: {', '.join(sorted(tables))})")
            _check_schema_version(connection)
            check = connection.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            records, bad = _decode_rows(connection.execute(_SELECT + " ORDER BY id"))
        return LoadResult(records, unreadable_rows=bad)

    def _set_aside_and_salvage(self, problem: str) -> LoadResult:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(f"{aside}{suffix}")
        records, bad = _salvage(aside)
        with contextlib.closing(_connect(self.path)) as connection:  # a new file: what was saved
            _prepare(connection)
            _write(connection, [(0, r.rule_id, r) for r in records])
        return LoadResult(records, problem, aside, bad)

    # ---- writing ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rules-backup", daemon=True)
        self._thread.start()

    def rule_saved(self, rule_id: int, rule: FlowRule, meta: RuleMeta) -> None:
        self._enqueue(rule_id, RuleRecord(rule_id, rule, meta))

    def rule_deleted(self, rule_id: int) -> None:
        self._enqueue(rule_id, None)

    def _enqueue(self, rule_id: int, record: RuleRecord | None) -> None:
        with self._lock:
            queue = self._queue
            queue.seq += 1
            queue.operations.append((queue.seq, rule_id, record))
            queue.unacknowledged[rule_id] = queue.seq
            if len(queue.operations) == EAGER_FLUSH:
                self._wake.notify()

    def is_acknowledged(self, rule_id: int) -> bool:
        return rule_id not in self._queue.unacknowledged  # a dict read; the GIL makes it atomic

    def pending(self) -> int:
        return len(self._queue.unacknowledged)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is committed; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._queue.seq
            self._wake.notify()
            while self._queue.committed < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.wait(left)
        return True

    def close(self, timeout: float) -> None:
        if not self.flush(timeout):
            log.error("rules backup: %d changes not committed at shutdown (%s)",
                      self.pending(), self.last_error or "writer too slow")
        with self._lock:
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        connection = _connect(self.path)
        try:
            _prepare(connection)
            while True:
                with self._lock:
                    if not self._queue.operations and not self._closing:
                        self._wake.wait(self.flush_interval)
                    operations = self._queue.operations
                    self._queue.operations = []
                    closing = self._closing
                if operations:
                    self._commit(connection, operations)
                if closing:
                    return
        finally:
            connection.close()

    def _commit(self, connection: sqlite3.Connection,
                operations: list[tuple[int, int, RuleRecord | None]]) -> None:
        try:
            _write(connection, operations)
        except sqlite3.Error as exc:  # e.g. disk full: keep the changes and try again
            self.failures += 1
            if str(exc) != self.last_error:
                log.error("rules backup: cannot write %s (will retry): %s", self.path, exc)
            self.last_error = str(exc)
            with self._lock:
                self._queue.operations[:0] = operations
            time.sleep(min(1.0, self.flush_interval * 2 ** min(self.failures, 5)))
            return
        if self.last_error is not None:
            log.warning("rules backup: writing %s again", self.path)
        self.last_error = None
        last = operations[-1][0]
        with self._lock:
            queue = self._queue
            queue.committed = last
            for seq, rule_id, _ in operations:
                if queue.unacknowledged.get(rule_id) == seq:
                    del queue.unacknowledged[rule_id]
            self._wake.notify_all()


def read_records(path: Path) -> Iterator[RuleRecord]:
    """The rules of a backup file, read-only (for `rules export` when the daemon is down)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for row in connection.execute(_SELECT + " ORDER BY id"):
            try:
                yield decode_rows([row])[0]
            except RecordError as exc:
                log.warning("%s: skipping rule %s: %s", path, row[0], exc)
    finally:
        connection.close()


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _write).
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)


def _prepare(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.executescript(_SCHEMA)
    if _check_schema_version(connection) is None:
        connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def _check_schema_version(connection: sqlite3.Connection) -> str | None:
    """The file's schema version (None: not recorded yet); BackupError if it is not ours."""
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is not None and row[0] != str(SCHEMA_VERSION):
        raise BackupError(f"schema version {row[0]} is not {SCHEMA_VERSION} "
                          "(written by another version of ovs-sriov-proxy?)")
    return None if row is None else str(row[0])


def _write(connection: sqlite3.Connection,
           operations: list[tuple[int, int, RuleRecord | None]]) -> None:
    """Apply operations in order, in one transaction; runs of saves and deletes go in batches."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        start = 0
        while start < len(operations):
            saving = operations[start][2] is not None
            end = start
            while end < len(operations) and (operations[end][2] is not None) == saving:
                end += 1
            batch = operations[start:end]
            if saving:
                _execute_in_chunks(connection, _UPSERT_HEAD, _ROW_PLACEHOLDERS,
                                   [record_row(r) for _, _, r in batch if r])
            else:
                _execute_in_chunks(connection, _DELETE_HEAD, "?",
                                   [(rule_id,) for _, rule_id, _ in batch])
            start = end
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _execute_in_chunks(connection: sqlite3.Connection, head: str, placeholders: str,
                       rows: list[tuple[Any, ...]]) -> None:
    """One statement per CHUNK_ROWS rows, not executemany: sqlite3 lets go of the GIL around
    every statement step, and a writer thread that must win the GIL back from a busy event
    loop waits up to the 5 ms switch interval each time (measured: executemany fell behind
    10k learned rules/s; chunks keep up)."""
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        values = [value for row in chunk for value in row]
        connection.execute(head + ",".join([placeholders] * len(chunk)) + _TAIL[head], values)


def _decode_rows(rows: Any) -> tuple[list[RuleRecord], int]:
    """Decode in chunks; a chunk with a bad row is redone row by row to skip just that row."""
    records: list[RuleRecord] = []
    bad = 0
    while chunk := rows.fetchmany(10_000) if hasattr(rows, "fetchmany") else rows:
        try:
            records += decode_rows(chunk)
        except (RecordError, ValueError, TypeError):
            for row in chunk:
                try:
                    records += decode_rows([row])
                except (RecordError, ValueError, TypeError) as exc:
                    bad += 1
                    log.error("rules backup: rule %s cannot be read back: %s", row[0], exc)
        if not hasattr(rows, "fetchmany"):
            break
    return records, bad


def _salvage(aside: Path) -> tuple[list[RuleRecord], int]:
    """Every row still readable in a damaged file, read from a scratch copy (the file set
    aside stays exactly as it was found). Reads in id order by chunks; a chunk that hits a bad
    page is retried row by row, so one damaged page costs only the rows on it."""
    records: list[RuleRecord] = []
    bad = 0
    with tempfile.TemporaryDirectory(prefix="rules-salvage-") as scratch:
        copy = Path(scratch) / "copy.db"
        for suffix in ("", "-wal"):
            if Path(f"{aside}{suffix}").exists():
                shutil.copyfile(f"{aside}{suffix}", f"{copy}{suffix}")
        try:
            connection = sqlite3.connect(copy)
            highest = connection.execute("SELECT max(id) FROM rules").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            log.error("rules backup: nothing salvageable in %s: %s", aside, exc)
            return [], 0
        try:
            last = 0
            while highest is not None and last < highest:
                try:
                    rows = connection.execute(_SELECT + " WHERE id > ? ORDER BY id LIMIT ?",
                                              (last, SALVAGE_CHUNK)).fetchall()
                except sqlite3.DatabaseError:
                    rows = []
                    for rule_id in range(last + 1, min(last + SALVAGE_CHUNK, highest) + 1):
                        try:
                            rows += connection.execute(_SELECT + " WHERE id = ?",
                                                       (rule_id,)).fetchall()
                        except sqlite3.DatabaseError:
                            continue
                    last = min(last + SALVAGE_CHUNK, highest)
                    found, bad_rows = _decode_rows(rows)
                    records += found
                    bad += bad_rows
                    continue
                if not rows:
                    break
                found, bad_rows = _decode_rows(rows)
                records += found
                bad += bad_rows
                last = rows[-1][0]
        finally:
            connection.close()
    return records, bad
