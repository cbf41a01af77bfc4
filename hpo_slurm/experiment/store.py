"""The experiment database: SQLite through sqlite-utils. Only the driver writes, and this module (with
store_reads.py, the paged and streamed reads it inherits) is the only code that speaks SQL: everyone
else reads and writes through ``Store``'s named methods, in the row types of rows.py.

Everything one driver tick changes is written in ONE transaction (``with store.transaction():``), so a
reader (``hpo-slurm status``) sees the state before or after a tick, never half of one. The schema is
versioned with ``PRAGMA user_version`` and upgraded by the ordered ``MIGRATIONS`` to the columns that
rows.py names (``TrialRow``, ``RunRow``, ...; ``new_trial_row``/``new_run_row`` build complete rows). On network
filesystems (NFS, Lustre, GPFS, ...) the rollback journal is used, since WAL needs shared memory that
those cannot give; on a local disk WAL lets readers and the driver proceed without blocking each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from hpo_slurm.core.errors import UserError
from hpo_slurm.experiment.rows import (EventRow, ExperimentRow, MetricRow, RunRow, RunStateTotals, SearcherEventRow,
                                       TrialRow, TrialStateTotals, TrialTotals, dumps_sorted)
from hpo_slurm.experiment.store_reads import StoreReads

if TYPE_CHECKING:  # imported when first needed: it costs a third of a second, and reads do without it
    import sqlite_utils

StoreError = sqlite3.Error
"""What a ``Store`` method raises when SQLite cannot open, read or write the database (locked for longer
than the busy timeout, damaged, missing, or a write on a read-only store)."""

log = logging.getLogger(__name__)
CLOSE_WAIT_MS = 200  # how long a closing writer waits for readers before it leaves WAL mode on
_PLAIN = {str, int, float, bool, type(None)}  # anything else (dicts, lists, ...) takes sqlite-utils' path
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "fuse.beegfs", "cephfs", "ceph",
    "glusterfs", "fuse.glusterfs", "afs", "panfs", "fuse.sshfs", "9p", "wekafs", "orangefs",
}


# ---- the schema's history: each migration is frozen once released --------------------------------
def _migration_1(db: sqlite_utils.Database) -> None:
    db["experiment"].create(
        {"id": int, "name": str, "uid": str, "state": str, "searcher": str, "executor": str,
         "config": str, "created_at": float, "ended_at": float, "message": str},
        pk="id",
    )
    db["trials"].create(
        {"id": int, "hparams": str, "parent": int, "parent_checkpoint": str, "state": str,
         "target_length": int, "validated_length": int, "latest_metric": float, "best_metric": float,
         "best_length": int, "restarts": int, "preemptions": int, "closed": int, "exit_reason": str,
         "message": str, "metrics_offset": int, "checkpoint_bytes": int, "created_at": float,
         "ended_at": float},
        pk="id",
    )
    db["runs"].create(
        {"id": str, "trial_id": int, "seq": int, "from_length": int, "to_length": int, "state": str,
         "job_id": str, "gpus": str, "time_minutes": int, "recorded_at": float, "submitted_at": float,
         "started_at": float, "ended_at": float, "exit_code": int, "reason": str},
        pk="id",
    )
    db["runs"].create_index(["trial_id"])
    db["runs"].create_index(["job_id"])
    db["metrics"].create(
        {"id": int, "trial_id": int, "run_id": str, "kind": str, "length": int, "metrics": str,
         "time": float},
        pk="id",
    )
    db["metrics"].create_index(["trial_id"])
    db["events"].create({"seq": int, "time": float, "kind": str, "trial_id": int, "data": str}, pk="seq")
    db["searcher"].create({"id": int, "snapshot": str, "updated_at": float}, pk="id")


def _migration_2(db: sqlite_utils.Database) -> None:
    """Searcher inputs are logged; snapshots are taken now and then and say how far they cover."""
    db["searcher_events"].create({"seq": int, "kind": str, "args": str}, pk="seq")
    db["searcher"].add_column("event_seq", int)
    db["experiment"].add_column("progress", float)


def _migration_3(db: sqlite_utils.Database) -> None:
    """Trials record the longest length any of their reports reached (progress inside a rung)."""
    db["trials"].add_column("trained_length", int)


def _migration_4(db: sqlite_utils.Database) -> None:
    """Trials count the stops at their time limit apart from their preemptions."""
    db["trials"].add_column("time_limits", int)


MIGRATIONS: List[Callable[[sqlite_utils.Database], None]] = [_migration_1, _migration_2, _migration_3, _migration_4]
SCHEMA_VERSION = len(MIGRATIONS)


def is_network_filesystem(path: Path, mounts: Optional[str] = None) -> bool:
    """True when ``path`` lies on a filesystem type known to break SQLite's WAL mode. ``mounts`` is
    the text of /proc/mounts (read when not given); when it cannot be read, the safe answer is True."""
    if mounts is None:
        try:
            with open("/proc/mounts", encoding="utf-8") as handle:
                mounts = handle.read()
        except OSError:
            return True
    return filesystem_type(Path(path).resolve(), mounts) in NETWORK_FILESYSTEMS


def filesystem_type(path: Path, mounts: str) -> str:
    """The type of the filesystem whose mount point is the longest prefix of ``path``."""
    best, best_type = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        if (str(path) + "/").startswith(mount_point.rstrip("/") + "/") and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def _unreadable(path: Path, exc: Exception) -> UserError:
    return UserError(f"{path}: cannot read the experiment database ({exc})")


class Store(StoreReads):
    """One experiment's database. Open with ``Store.open(path)`` (the driver) or
    ``Store.open(path, readonly=True)`` (readers: every write then fails with ``StoreError``).

    Rows come back as dicts shaped as rows.py's row types, JSON columns as stored (text) unless a
    method says it decodes them. Reads that must agree with each other go inside ``snapshot_read()``."""

    def __init__(self, conn: sqlite3.Connection, readonly: bool):
        self._conn = conn
        self._db: Optional["sqlite_utils.Database"] = None
        self.readonly = readonly
        self.journal_mode = ""  # a writer's: "wal", or "delete" on a network file system

    def _database(self) -> "sqlite_utils.Database":
        """sqlite-utils on the same connection (for schema changes and the rare write)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self._conn)
        return self._db

    def _query(self, sql: str, params: Iterable[Any] = ()) -> List[Any]:
        """Rows as dicts, as ``db.query`` gives them, without sqlite-utils' per-row overhead."""
        cursor = self._conn.execute(sql, list(params))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> "Store":
        """Open (the driver: create and migrate) the database at ``path``; ``StoreError`` when SQLite
        cannot, ``UserError`` when its schema is newer than this hpo-slurm knows."""
        path = Path(path)
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=30)
        else:
            conn = sqlite3.connect(str(path), isolation_level=None, timeout=60)
            mode = "delete" if is_network_filesystem(path.parent) else "wal"
            conn.execute(f"PRAGMA journal_mode={mode}")
            conn.execute("PRAGMA synchronous=FULL" if mode == "delete" else "PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=60000")
        store = cls(conn, readonly)
        store.journal_mode = "" if readonly else mode
        if not readonly:
            try:
                store._migrate()
            except BaseException:
                conn.close()
                raise
        return store

    @classmethod
    def open_for_reading(cls, path: Path) -> "Store":
        """``open(path, readonly=True)``, or a UserError naming the file when it cannot be read."""
        try:
            return cls.open(path, readonly=True)
        except StoreError as exc:
            raise _unreadable(path, exc) from exc

    @classmethod
    @contextlib.contextmanager
    def reading(cls, path: Path) -> Iterator["Store"]:
        """The database opened read-only for the block, closed after it; a UserError naming the file
        when it cannot be opened or read (locked past the busy timeout, damaged)."""
        store = cls.open_for_reading(path)
        try:
            yield store
        except StoreError as exc:
            raise _unreadable(path, exc) from exc
        finally:
            store.close()

    def close(self) -> None:
        """Close the connection. A writer in WAL mode first turns the database back to a rollback
        journal, which removes its -wal and -shm files: a reader who may not create files in the
        experiment's folder (a group member of a shared experiment) can then open it read-only. The
        next writer turns WAL on again. Left in WAL mode, said in the log, when another connection is
        using the database at that moment."""
        if not self.readonly and self.journal_mode == "wal":
            try:
                self._conn.execute(f"PRAGMA busy_timeout={CLOSE_WAIT_MS}")
                self._conn.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error as exc:
                log.info("experiment.db left in WAL mode (%s): readers need write access to its folder", exc)
        self._conn.close()

    def use_page_cache(self, kib: int) -> None:
        """Let this connection cache up to ``kib`` KiB of database pages (SQLite's default is 2 MiB): a
        reader that scans a large table more than once keeps it in memory."""
        self._conn.execute(f"PRAGMA cache_size = -{int(kib)}")

    def _columns(self, table: str) -> List[str]:
        """The names of ``table``'s columns, as the database has them."""
        return [row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")]

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UserError(
                f"experiment.db has schema version {version}, newer than this hpo-slurm knows ({SCHEMA_VERSION}); "
                "upgrade hpo-slurm to use it"
            )
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                MIGRATIONS[number](self._database())
                self._conn.execute(f"PRAGMA user_version={number + 1}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all. When the block or the commit fails (a full
        disk: SQLite's "database or disk is full"), the transaction is rolled back, unless SQLite already
        did, and the error raised: the database stays as it was before the block."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def snapshot_read(self) -> Iterator[None]:
        """Reads inside see one consistent state of the database."""
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    # ---- experiment ---------------------------------------------------------------------------
    def create_experiment(self, **fields: Any) -> None:
        """Insert the experiment row (id 1); ``fields`` are the other columns of ``ExperimentRow``."""
        self._database()["experiment"].insert({"id": 1, **fields})

    def experiment(self) -> ExperimentRow:
        """The experiment row; sqlite-utils' ``NotFoundError`` when there is none yet."""
        rows = self._query("SELECT * FROM experiment WHERE id = ?", [1])
        if not rows:
            from sqlite_utils.db import NotFoundError

            raise NotFoundError
        return rows[0]

    def experiment_name(self) -> Optional[str]:
        """The name the experiment was launched with, or None when its row does not exist yet."""
        row = self._conn.execute("SELECT name FROM experiment WHERE id = 1").fetchone()
        return row[0] if row else None

    def experiment_state(self) -> Optional[str]:
        """The experiment's state, or None when its row does not exist yet."""
        row = self._conn.execute("SELECT state FROM experiment WHERE id = 1").fetchone()
        return row[0] if row else None

    def update_experiment(self, **fields: Any) -> None:
        self._update("experiment", "id", 1, fields)

    # ---- trials -------------------------------------------------------------------------------
    def insert_trials(self, rows: Iterable[Dict[str, Any]]) -> None:
        """Insert trial rows (``new_trial_row`` builds complete ones)."""
        self._insert_all("trials", rows)

    def update_trials(self, changes: Iterable[Tuple[int, Dict[str, Any]]]) -> None:
        """Write changed fields of trials: (trial id, {column: value}) pairs."""
        self._update_rows("trials", "id", changes)

    def trials(self) -> List[TrialRow]:
        """Every trial, in id order."""
        return self._query("SELECT * FROM trials ORDER BY id")

    def trial(self, trial_id: int) -> Optional[TrialRow]:
        """One trial, or None when there is no such trial."""
        rows = self._query("SELECT * FROM trials WHERE id = ?", [trial_id])
        return rows[0] if rows else None

    def latest_trials(self, limit: int) -> List[TrialRow]:
        """The ``limit`` trials with the highest ids, in id order."""
        return self._query("SELECT * FROM trials ORDER BY id DESC LIMIT ?", [limit])[::-1]

    def best_trials(self, limit: int, smaller_is_better: bool) -> List[TrialRow]:
        """At most ``limit`` trials that have a best metric, best first (ties: lower id first)."""
        order = "ASC" if smaller_is_better else "DESC"
        return self._query(f"SELECT * FROM trials WHERE best_metric IS NOT NULL "
                           f"ORDER BY best_metric {order}, id LIMIT ?", [limit])

    def trial_totals_by_state(self) -> List[TrialStateTotals]:
        """Count and checkpoint bytes of the trials in each state that has any, in one scan."""
        return [TrialStateTotals(state, count, int(saved)) for state, count, saved in self._conn.execute(
            "SELECT state, COUNT(*), TOTAL(checkpoint_bytes) FROM trials GROUP BY state")]

    def trial_totals(self) -> TrialTotals:
        """How many trials there are, with their restarts, preemptions and stops at the time limit summed."""
        # a reader may open a database of an older schema, from before trials counted time limits
        limits = "SUM(time_limits)" if "time_limits" in self._columns("trials") else "0"
        count, restarts, preemptions, time_limits = self._conn.execute(
            f"SELECT COUNT(*), SUM(restarts), SUM(preemptions), {limits} FROM trials").fetchone()
        return TrialTotals(count, restarts or 0, preemptions or 0, time_limits or 0)

    # ---- runs ---------------------------------------------------------------------------------
    def insert_runs(self, rows: Iterable[Dict[str, Any]]) -> None:
        """Insert run rows (``new_run_row`` builds complete ones)."""
        self._insert_all("runs", rows)

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._update("runs", "id", run_id, fields)

    def update_runs(self, changes: Iterable[Tuple[str, Dict[str, Any]]]) -> None:
        """Write changed fields of runs: (run id, {column: value}) pairs."""
        self._update_rows("runs", "id", changes)

    def runs(self, trial_id: Optional[int] = None) -> List[RunRow]:
        """Every run in (trial, seq) order, or the runs of one trial in seq order."""
        if trial_id is None:
            return self._query("SELECT * FROM runs ORDER BY trial_id, seq")
        return self._query("SELECT * FROM runs WHERE trial_id = ? ORDER BY seq", [trial_id])

    def runs_by_trial(self, trial_ids: Optional[Sequence[int]] = None) -> Dict[int, List[RunRow]]:
        """The runs of the given trials (every trial's when None), by trial id, each in seq order;
        trials without runs are left out. One query."""
        if trial_ids is None:
            rows = self.runs()
        elif not trial_ids:
            return {}
        else:
            rows = self._query(f"SELECT * FROM runs WHERE trial_id IN ({', '.join('?' * len(trial_ids))}) "
                               "ORDER BY trial_id, seq", trial_ids)
        grouped: Dict[int, List[RunRow]] = {}
        for run in rows:
            grouped.setdefault(run["trial_id"], []).append(run)
        return grouped

    def runs_in_states(self, states: Sequence[str], limit: int) -> List[RunRow]:
        """At most ``limit`` runs in one of ``states``, oldest recorded first."""
        return self._query(
            f"SELECT * FROM runs WHERE state IN ({', '.join('?' * len(states))}) ORDER BY rowid LIMIT ?",
            [*states, limit])

    def run_totals_by_state(self) -> List[RunStateTotals]:
        """Per state that has runs: their count, the wall seconds of those that started and ended, and
        how many have no job id; one scan of the runs."""
        return [RunStateTotals(state, count, seconds, int(jobless)) for state, count, seconds, jobless in
                self._conn.execute(
                    "SELECT state, COUNT(*), TOTAL(CASE WHEN started_at AND ended_at THEN ended_at - started_at END), "
                    "TOTAL(job_id IS NULL) FROM runs GROUP BY state")]

    # ---- metrics and events -------------------------------------------------------------------
    def insert_metrics(self, rows: Iterable[Dict[str, Any]]) -> None:
        """Insert metric rows without ``id``, ``metrics`` as JSON text."""
        self._insert_all("metrics", rows)

    def metrics(self, trial_id: Optional[int] = None, kind: Optional[str] = None) -> List[MetricRow]:
        """Metric rows in the order they were ingested, ``metrics`` decoded; all of them, or those of one
        trial and/or one kind."""
        where, params = [], []
        if trial_id is not None:
            where.append("trial_id = ?")
            params.append(trial_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = "SELECT * FROM metrics" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [{**row, "metrics": json.loads(row["metrics"])} for row in self._query(sql, params)]

    def append_events(self, rows: Iterable[Dict[str, Any]]) -> None:
        """Append event rows without ``seq``; ``data`` is stored as JSON."""
        self._insert_all("events", [{**row, "data": dumps_sorted(row.get("data"))} for row in rows])

    def events(self) -> List[EventRow]:
        """Every event in order, ``data`` decoded."""
        return [{**row, "data": json.loads(row["data"])}
                for row in self._query("SELECT * FROM events ORDER BY seq")]

    def event_count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def last_event_seq(self) -> int:
        """The seq of the latest event, 0 before any."""
        return self._conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0

    # ---- searcher: snapshot plus the events logged since --------------------------------------
    def save_snapshot(self, snapshot: Dict[str, Any], now: float, event_seq: int) -> None:
        """The searcher's state after its first ``event_seq`` logged events."""
        self._database()["searcher"].upsert(
            {"id": 1, "snapshot": json.dumps(snapshot, sort_keys=True), "updated_at": now, "event_seq": event_seq},
            pk="id",
        )

    def load_snapshot(self) -> Optional[Dict[str, Any]]:
        row = next(iter(self._query("SELECT snapshot FROM searcher WHERE id = 1")), None)
        return json.loads(row["snapshot"]) if row else None

    def snapshot_event_seq(self) -> int:
        row = next(iter(self._query("SELECT event_seq FROM searcher WHERE id = 1")), None)
        return (row["event_seq"] or 0) if row else 0

    def append_searcher_events(self, rows: Iterable[Dict[str, Any]]) -> None:
        """Rows of ``seq`` (1, 2, ...), ``kind`` and ``args`` (a JSON list)."""
        self._insert_all("searcher_events", rows)

    def searcher_events(self, after: int = 0) -> List[SearcherEventRow]:
        return self._query("SELECT * FROM searcher_events WHERE seq > ? ORDER BY seq", [after])

    def last_searcher_event(self) -> int:
        row = next(iter(self._query("SELECT MAX(seq) AS seq FROM searcher_events")), None)
        return (row["seq"] or 0) if row else 0

    # ---- writing rows -------------------------------------------------------------------------
    def _update_rows(self, table: str, key: str, items: Iterable[Tuple[Any, Dict[str, Any]]]) -> None:
        """Set fields of many rows: (key value, fields) pairs, one ``executemany`` per set of fields."""
        groups: Dict[Tuple[str, ...], List[List[Any]]] = {}
        for value, fields in items:
            if fields:
                groups.setdefault(tuple(fields), []).append([*fields.values(), value])
        for names, params in groups.items():
            assignments = ", ".join(f"[{name}] = ?" for name in names)
            self._conn.executemany(f"UPDATE [{table}] SET {assignments} WHERE [{key}] = ?", params)

    def _insert_all(self, table: str, rows: Iterable[Dict[str, Any]]) -> None:
        """``db[table].insert_all(rows)``; rows that all have the same keys and only plain values go
        through one ``executemany`` (sqlite-utils' per-row checks dominated the driver's tick)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return
        keys = rows[0].keys()
        if all(row.keys() == keys for row in rows) and {type(v) for row in rows for v in row.values()} <= _PLAIN:
            names = list(keys)
            sql = (f"INSERT INTO [{table}] ({', '.join(f'[{name}]' for name in names)}) "
                   f"VALUES ({', '.join('?' for _ in names)})")
            self._conn.executemany(sql, [[row[name] for name in names] for row in rows])
        else:
            self._database()[table].insert_all(rows)

    def _update(self, table: str, key: str, value: Any, fields: Dict[str, Any]) -> None:
        """Set ``fields`` of the row whose ``key`` is ``value``."""
        self._update_rows(table, key, [(value, fields)])
