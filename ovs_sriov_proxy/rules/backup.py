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
import dataclasses
import logging
import os
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
from .records import DecodeCache, RecordError, RuleRecord, decode_rows, record_row
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
_SHIFT = ("UPDATE rules SET inserted_at = inserted_at + ?, expires_at = expires_at + ? "
          "WHERE expires_at IS NOT NULL")  # RuleStore.shift_times, in the file
_TAIL = {_UPSERT_HEAD: "", _DELETE_HEAD: ")"}
_NEXT_ID = ("INSERT INTO meta (key, value) VALUES ('next_id', ?) ON CONFLICT (key) "
            "DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))")
CHUNK_ROWS = 2000  # x 13 columns: within SQLite's 32,766 bound parameters per statement
EAGER_FLUSH = 4096  # pending changes that wake the writer before its interval is up
SALVAGE_CHUNK = 512


class BackupError(Exception):
    """The backup cannot be used at all (e.g. written by a newer version); str() says why."""


class _Damaged(Exception):
    """The file is damaged (SQLite says corrupt or not a database, or the check fails)."""


SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26
MAX_ID = 1 << 48  # rule ids fit in the cookie's low 48 bits
_SALVAGE_SUFFIX = ".salvaging"


@dataclass(frozen=True, slots=True)
class LoadResult:
    records: list[RuleRecord]
    problem: str | None = None  # why the file could not be read as it was, if it could not
    set_aside: Path | None = None  # where the unreadable file now is
    unreadable_rows: int = 0  # rows found but not decodable (bad values, not bad pages)
    next_id: int = 1  # ids below this were used before: never given again


class RuleBackup(Protocol):
    """What the daemon asks of a rules backup (also the store's RuleListener)."""

    failures: int  # commits that failed (and are retried)
    last_error: str | None  # why the last commit failed; None once one succeeds again

    def load(self) -> LoadResult: ...
    def start(self) -> None: ...
    def rule_saved(self, rule_id: int, rule: FlowRule, meta: RuleMeta) -> None: ...
    def rule_deleted(self, rule_id: int) -> None: ...
    def times_shifted(self, step: float) -> None: ...
    def is_acknowledged(self, rule_id: int) -> bool: ...
    def pending(self) -> int: ...
    def flush(self, timeout: float) -> bool: ...
    def close(self, timeout: float) -> None: ...


@dataclass(frozen=True, slots=True)
class _Shift:
    """Queued like a save or a delete, in order: every rule with a lifetime moves by `step`."""

    step: float


_Operation = tuple[int, int, "RuleRecord | _Shift | None"]  # (seq, rule id, what); None: delete


@dataclass(slots=True)
class _Queue:
    operations: list[_Operation] = field(default_factory=list)
    unacknowledged: dict[int, int] = field(default_factory=dict)  # rule id -> its last seq
    seq: int = 0
    committed: int = 0
    shift_seq: int = 0  # the last clock step queued: until committed, no rule is backed up as is


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
        """Every rule in the file; a damaged file is set aside and salvaged (see module doc).
        Errors that are not damage (permissions, a full disk, a lock, a newer schema) raise
        BackupError: the file is left alone and the proxy does not start half-restored."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{self.path}{_SALVAGE_SUFFIX}").unlink(missing_ok=True)  # an interrupted salvage
        try:
            result = self._read_checked()
        except _Damaged as exc:
            return self._set_aside_and_salvage(str(exc))
        except sqlite3.Error as exc:
            raise BackupError(f"cannot read {self.path}: {exc}") from None
        try:
            with contextlib.closing(_connect(self.path)) as connection:
                _prepare(connection)  # a new file gets its schema; an existing one is unchanged
                next_id = _stored_next_id(connection)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot write {self.path}: {exc}") from None
        return dataclasses.replace(result, next_id=max(next_id, result.next_id))

    def _read_checked(self) -> LoadResult:
        """Read every rule without writing a byte (mode=ro: not even the checkpoint SQLite runs
        when a read-write connection closes), so a damaged file is set aside as it was found."""
        if not self.path.exists():
            return LoadResult([])
        try:
            connection = _connect_read_only(self.path)
        except sqlite3.Error as exc:
            _raise_if_damage(exc)
            raise
        with contextlib.closing(connection):
            try:
                tables = {row[0] for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:
                    return LoadResult([])  # an empty file: nothing was ever written
                if not {"meta", "rules"} <= tables:
                    raise _Damaged(f"not a rules backup (tables: {', '.join(sorted(tables))})")
                _check_schema_version(connection)
                # The integrity check reads the whole file in one SQLite call, which releases
                # the GIL: run on its own connection, it costs a restore no time where a second
                # core is free (a tenth of restoring a million rules otherwise).
                check = _IntegrityCheck(self.path)
                try:
                    records, bad = _decode_rows(connection.execute(_SELECT + " ORDER BY id"))
                finally:  # never leave a reader on a file that may be set aside next
                    problem = check.result()
                if problem is not None:
                    raise _Damaged(problem)
            except sqlite3.Error as exc:
                _raise_if_damage(exc)
                raise
        highest = records[-1].rule_id if records else 0
        return LoadResult(records, unreadable_rows=bad, next_id=highest + 1)

    def _set_aside_and_salvage(self, problem: str) -> LoadResult:
        """Copy the damaged file (and its WAL) aside, salvage what reads into a new file built
        beside it, and only then put the new file in place. A kill at any step leaves the
        damaged file where it was (the next start does this again) or the new one complete."""
        aside = _unused_name(self.path)
        for suffix in ("", "-wal"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                shutil.copyfile(source, f"{aside}{suffix}")
                _fsync(Path(f"{aside}{suffix}"))
        records, bad = _salvage(aside)
        salvaged = Path(f"{self.path}{_SALVAGE_SUFFIX}")
        with contextlib.closing(_connect(salvaged)) as connection:
            _prepare(connection)
            _write(connection, [(0, r.rule_id, r) for r in records])
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _fsync(salvaged)
        for suffix in ("-wal", "-shm"):  # the damaged file's WAL must never meet the new file
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            Path(f"{salvaged}{suffix}").unlink(missing_ok=True)
        os.replace(salvaged, self.path)
        _fsync(self.path.parent)
        highest = max((r.rule_id for r in records), default=0)
        return LoadResult(records, problem, aside, bad, next_id=highest + 1)

    # ---- writing ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rules-backup", daemon=True)
        self._thread.start()

    def rule_saved(self, rule_id: int, rule: FlowRule, meta: RuleMeta) -> None:
        self._enqueue(rule_id, RuleRecord(rule_id, rule, meta))

    def rule_deleted(self, rule_id: int) -> None:
        self._enqueue(rule_id, None)

    def times_shifted(self, step: float) -> None:
        with self._lock:  # no rule id to acknowledge: one statement moves them all
            queue = self._queue
            queue.seq += 1
            queue.operations.append((queue.seq, 0, _Shift(step)))
            queue.shift_seq = queue.seq
            if len(queue.operations) == EAGER_FLUSH:
                self._wake.notify_all()

    def _enqueue(self, rule_id: int, record: RuleRecord | _Shift | None) -> None:
        with self._lock:
            queue = self._queue
            queue.seq += 1
            queue.operations.append((queue.seq, rule_id, record))
            queue.unacknowledged[rule_id] = queue.seq
            if len(queue.operations) == EAGER_FLUSH:
                self._wake.notify_all()  # one Condition wakes the writer and flushers alike

    def is_acknowledged(self, rule_id: int) -> bool:
        queue = self._queue  # dict and int reads; the GIL makes each atomic
        return rule_id not in queue.unacknowledged and queue.shift_seq <= queue.committed

    def pending(self) -> int:
        queue = self._queue
        return len(queue.unacknowledged) + (queue.shift_seq > queue.committed)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is committed; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._queue.seq
            self._wake.notify_all()
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
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                with self._lock:
                    if not self._queue.operations and not self._closing:
                        self._wake.wait(self.flush_interval)
                    operations = self._queue.operations
                    self._queue.operations = []
                    closing = self._closing
                if operations:
                    connection = self._commit(connection, operations)
                if closing:
                    return
        finally:
            if connection is not None:
                connection.close()

    def _commit(self, connection: sqlite3.Connection | None,
                operations: list[_Operation]) -> sqlite3.Connection | None:
        """Write one batch; on any failure keep it (in order, ahead of newer changes) for the
        next round, and start over with a new connection. Returns the connection to go on with."""
        try:
            if connection is None:
                connection = _connect(self.path)
                _prepare(connection)
            _write(connection, operations)
        except Exception as exc:  # noqa: BLE001 - disk full, I/O error, a bug: never lose the batch
            if connection is not None:
                connection.close()
            connection = None
            self.failures += 1
            if str(exc) != self.last_error:
                log.error("rules backup: cannot write %s (will retry): %s", self.path, exc)
            self.last_error = str(exc)
            with self._lock:
                self._queue.operations[:0] = operations
            time.sleep(min(1.0, self.flush_interval * 2 ** min(self.failures, 5)))
            return None
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
        return connection


def read_records(path: Path) -> Iterator[RuleRecord]:
    """The rules of a backup file, read-only (for `rules export` when the daemon is down)."""
    connection = _connect_read_only(path)
    try:
        for row in connection.execute(_SELECT + " ORDER BY id"):
            try:
                yield decode_rows([row])[0]
            except RecordError as exc:
                log.warning("%s: skipping rule %s: %s", path, row[0], exc)
    finally:
        connection.close()


def _connect_read_only(path: Path) -> sqlite3.Connection:
    # as_uri() escapes what a URI would misread in a path ("?", "#", "%").
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)


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
           operations: list[_Operation]) -> None:
    """Apply operations in order, in one transaction; runs of saves and deletes go in batches,
    a clock step is one UPDATE (applied once: a failed transaction rolls it back too)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        start = 0
        while start < len(operations):
            what = operations[start][2]
            if isinstance(what, _Shift):
                connection.execute(_SHIFT, (what.step, what.step))
                start += 1
                continue
            saving = what is not None
            end = start
            while end < len(operations) and (operations[end][2] is not None) == saving and \
                    not isinstance(operations[end][2], _Shift):
                end += 1
            batch = operations[start:end]
            if saving:
                _execute_in_chunks(connection, _UPSERT_HEAD, _ROW_PLACEHOLDERS,
                                   [record_row(r) for _, _, r in batch
                                    if isinstance(r, RuleRecord)])
                # Ids are never given twice, even after the highest ones are deleted.
                connection.execute(_NEXT_ID, (max(rule_id for _, rule_id, _ in batch) + 1,))
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


class _IntegrityCheck:
    """PRAGMA quick_check of a file in a thread of its own; result() waits for its verdict."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._verdict: str | None = None
        self._error: sqlite3.Error | None = None
        self._thread = threading.Thread(target=self._run, name="backup-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with contextlib.closing(_connect_read_only(self._path)) as c:
                self._verdict = c.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as exc:
            self._error = exc

    def result(self) -> str | None:
        """None when the file is sound, else what is wrong; raises the check's sqlite3.Error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._verdict == "ok":
            return None
        lines = (self._verdict or "no verdict").splitlines()
        return (f"integrity check failed: {lines[0]}"
                + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""))


def _decode_rows(rows: Any) -> tuple[list[RuleRecord], int]:
    """Decode in chunks; a chunk with a bad row is redone row by row to skip just that row."""
    records: list[RuleRecord] = []
    bad = 0
    cache = DecodeCache()
    while chunk := rows.fetchmany(10_000) if hasattr(rows, "fetchmany") else rows:
        try:
            records += decode_rows(chunk, cache)
        except (RecordError, ValueError, TypeError):
            for row in chunk:
                try:
                    records += decode_rows([row], cache)
                except (RecordError, ValueError, TypeError) as exc:
                    bad += 1
                    log.error("rules backup: rule %s cannot be read back: %s", row[0], exc)
        if not hasattr(rows, "fetchmany"):
            break
    return records, bad


def _salvage(aside: Path) -> tuple[list[RuleRecord], int]:
    """Every row still readable in a damaged file, read from a scratch copy (the file set aside
    stays exactly as it was found), in id order by chunks. Past a chunk that hits a bad page
    it finds the next readable id by probing ever further ahead, then narrowing down, so one
    bad page costs the rows on it and a few dozen queries, however sparse the ids are; a cut
    (truncated) file yields everything before the cut."""
    records: list[RuleRecord] = []
    bad = 0
    with tempfile.TemporaryDirectory(prefix="rules-salvage-") as scratch:
        copy = Path(scratch) / "copy.db"
        for suffix in ("", "-wal"):
            if Path(f"{aside}{suffix}").exists():
                shutil.copyfile(f"{aside}{suffix}", f"{copy}{suffix}")
        _pad_to_header_size(copy)
        try:
            connection = sqlite3.connect(copy)
            connection.execute("SELECT 1 FROM rules LIMIT 0")
        except sqlite3.Error as exc:
            log.error("rules backup: nothing salvageable in %s: %s", aside, exc)
            return [], 0
        with contextlib.closing(connection):
            last = 0  # rows up to this id are read or lost
            while True:
                rows: list[tuple[Any, ...]] | None
                try:
                    rows = _ascending(connection.execute(
                        _SELECT + " WHERE id > ? ORDER BY id LIMIT ?",
                        (last, SALVAGE_CHUNK)).fetchall(), last)
                except sqlite3.Error:
                    rows = _first_row_after(connection, last)
                    if not rows:
                        found = _next_readable_id(connection, last)
                        if found is None:
                            break
                        last = max(found - 1, last + 1)  # always forward
                        continue
                if not rows:
                    break
                got, bad_rows = _decode_rows(rows)
                records += got
                bad += bad_rows
                last = rows[-1][0]
    return records, bad


def _pad_to_header_size(copy: Path) -> None:
    """A cut file is shorter than its header says, which SQLite refuses as a whole; zero pages
    in place of the missing ones read as damaged pages instead, which salvage skips."""
    with open(copy, "r+b") as file:
        header = file.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
            return
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        wanted = page_size * int.from_bytes(header[28:32], "big")
        if wanted > os.fstat(file.fileno()).st_size:
            file.truncate(wanted)


def _ascending(rows: list[tuple[Any, ...]], last: int) -> list[tuple[Any, ...]]:
    """Rows up to the first whose id does not go up (a damaged page can read as nonsense rows;
    salvage must still only move forward). Raises sqlite3.DatabaseError if none goes up while
    some were returned, so the caller probes past them."""
    good = []
    for row in rows:
        if not isinstance(row[0], int) or row[0] <= last:
            break
        good.append(row)
        last = row[0]
    if rows and not good:
        raise sqlite3.DatabaseError("rows out of order")
    return good


def _first_row_after(connection: sqlite3.Connection, last: int) -> list[tuple[Any, ...]] | None:
    try:
        return _ascending(connection.execute(
            _SELECT + " WHERE id > ? ORDER BY id LIMIT 1", (last,)).fetchall(), last) or None
    except sqlite3.Error:
        return None


def _next_readable_id(connection: sqlite3.Connection, last: int) -> int | None:
    """The smallest id > last from which a read works (None: nothing further reads)."""
    def readable(start: int) -> list[tuple[Any, ...]] | None:
        try:
            return _ascending(connection.execute(  # whole rows: reading only ids can pass
                _SELECT + " WHERE id >= ? ORDER BY id LIMIT 1", (start,)).fetchall(), start - 1)
        except sqlite3.Error:
            return None

    step = 1
    while step <= MAX_ID:  # ever further ahead ...
        found = readable(last + 1 + step)
        if found is not None:
            break
        step *= 2
    else:
        return None
    if not found:
        return None  # readable, and nothing there: the end
    low, high = last + 1 + step // 2, last + 1 + step  # ... then the first start that reads
    while low < high:
        middle = (low + high) // 2
        if readable(middle) is None:
            low = middle + 1
        else:
            high = middle
    rows = readable(high)
    return rows[0][0] if rows else None


def _raise_if_damage(exc: sqlite3.Error) -> None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB):
        raise _Damaged(str(exc).splitlines()[0]) from None


def _unused_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidate = path.with_name(f"{path.name}.corrupt-{stamp}")
    number = 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
    return candidate


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stored_next_id(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
    return int(row[0]) if row is not None else 1
