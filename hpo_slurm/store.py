"""The experiment database: SQLite through sqlite-utils. Only the driver writes.

Everything one driver tick changes is written in ONE transaction (``with store.transaction():``), so a
reader (``hpo-slurm status``) sees the state before or after a tick, never half of one. The schema is
versioned with ``PRAGMA user_version`` and upgraded by the ordered ``MIGRATIONS``. On network
filesystems (NFS, Lustre, GPFS, ...) the rollback journal is used, since WAL needs shared memory that
those cannot give; on a local disk WAL lets readers and the driver proceed without blocking each other.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import sqlite_utils

NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "fuse.beegfs", "cephfs", "ceph",
    "glusterfs", "fuse.glusterfs", "afs", "panfs", "fuse.sshfs", "9p", "wekafs", "orangefs",
}

TRIAL_COLUMNS = {
    "id": int, "hparams": str, "parent": int, "parent_checkpoint": str, "state": str,
    "target_length": int, "validated_length": int, "latest_metric": float, "best_metric": float,
    "best_length": int, "restarts": int, "preemptions": int, "closed": int, "exit_reason": str,
    "message": str, "metrics_offset": int, "checkpoint_bytes": int, "created_at": float,
    "ended_at": float,
}
RUN_COLUMNS = {
    "id": str, "trial_id": int, "seq": int, "from_length": int, "to_length": int, "state": str,
    "job_id": str, "gpus": str, "time_minutes": int, "recorded_at": float, "submitted_at": float,
    "started_at": float, "ended_at": float, "exit_code": int, "reason": str,
}


def _migration_1(db: sqlite_utils.Database) -> None:
    db["experiment"].create(
        {"id": int, "name": str, "uid": str, "state": str, "searcher": str, "executor": str,
         "config": str, "created_at": float, "ended_at": float, "message": str},
        pk="id",
    )
    db["trials"].create(TRIAL_COLUMNS, pk="id")
    db["runs"].create(RUN_COLUMNS, pk="id")
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


MIGRATIONS: List[Callable[[sqlite_utils.Database], None]] = [_migration_1, _migration_2]
SCHEMA_VERSION = len(MIGRATIONS)


def is_network_filesystem(path: Path) -> bool:
    """True when ``path`` lies on a filesystem type known to break SQLite's WAL mode."""
    path = Path(path).resolve()
    best, best_type = "", ""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount_point = fields[1].replace("\\040", " ")
                if (str(path) + "/").startswith(mount_point.rstrip("/") + "/") and len(mount_point) >= len(best):
                    best, best_type = mount_point, fields[2]
    except OSError:
        return True  # unknown: take the safe journal
    return best_type in NETWORK_FILESYSTEMS


class Store:
    """One experiment's database. Open with ``Store.open(path)`` (the driver) or
    ``Store.open(path, readonly=True)`` (readers)."""

    def __init__(self, conn: sqlite3.Connection, readonly: bool):
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self.readonly = readonly

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> "Store":
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
        if not readonly:
            store._migrate()
        return store

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"experiment.db has schema version {version}, newer than this hpo-slurm knows ({SCHEMA_VERSION})"
            )
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                MIGRATIONS[number](self.db)
                self.conn.execute(f"PRAGMA user_version={number + 1}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot_read(self) -> Iterator[None]:
        """Reads inside see one consistent state of the database."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    # ---- experiment ---------------------------------------------------------------------------
    def create_experiment(self, **fields: Any) -> None:
        self.db["experiment"].insert({"id": 1, **fields})

    def experiment(self) -> Dict[str, Any]:
        return dict(self.db["experiment"].get(1))

    def update_experiment(self, **fields: Any) -> None:
        self._update("experiment", "id", 1, fields)

    # ---- trials and runs ----------------------------------------------------------------------
    def insert_trials(self, rows: Iterable[Dict[str, Any]]) -> None:
        self.db["trials"].insert_all(rows)

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        self._update("trials", "id", trial_id, fields)

    def trials(self) -> List[Dict[str, Any]]:
        return list(self.db.query("SELECT * FROM trials ORDER BY id"))

    def insert_runs(self, rows: Iterable[Dict[str, Any]]) -> None:
        self.db["runs"].insert_all(rows)

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._update("runs", "id", run_id, fields)

    def runs(self, trial_id: Optional[int] = None) -> List[Dict[str, Any]]:
        if trial_id is None:
            return list(self.db.query("SELECT * FROM runs ORDER BY trial_id, seq"))
        return list(self.db.query("SELECT * FROM runs WHERE trial_id = ? ORDER BY seq", [trial_id]))

    # ---- metrics and events -------------------------------------------------------------------
    def insert_metrics(self, rows: Iterable[Dict[str, Any]]) -> None:
        self.db["metrics"].insert_all(rows)

    def metrics(self, trial_id: Optional[int] = None, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        where, params = [], []
        if trial_id is not None:
            where.append("trial_id = ?")
            params.append(trial_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = "SELECT * FROM metrics" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [{**row, "metrics": json.loads(row["metrics"])} for row in self.db.query(sql, params)]

    def append_events(self, rows: Iterable[Dict[str, Any]]) -> None:
        self.db["events"].insert_all(
            {**row, "data": json.dumps(row.get("data"), sort_keys=True)} for row in rows
        )

    def events(self) -> List[Dict[str, Any]]:
        return [{**row, "data": json.loads(row["data"])} for row in self.db.query("SELECT * FROM events ORDER BY seq")]

    # ---- searcher: snapshot plus the events logged since --------------------------------------
    def save_snapshot(self, snapshot: Dict[str, Any], now: float, event_seq: int) -> None:
        """The searcher's state after its first ``event_seq`` logged events."""
        self.db["searcher"].upsert(
            {"id": 1, "snapshot": json.dumps(snapshot, sort_keys=True), "updated_at": now, "event_seq": event_seq},
            pk="id",
        )

    def load_snapshot(self) -> Optional[Dict[str, Any]]:
        row = next(self.db.query("SELECT snapshot FROM searcher WHERE id = 1"), None)
        return json.loads(row["snapshot"]) if row else None

    def snapshot_event_seq(self) -> int:
        row = next(self.db.query("SELECT event_seq FROM searcher WHERE id = 1"), None)
        return (row["event_seq"] or 0) if row else 0

    def append_searcher_events(self, rows: Iterable[Dict[str, Any]]) -> None:
        """Rows of ``seq`` (1, 2, ...), ``kind`` and ``args`` (a JSON list)."""
        self.db["searcher_events"].insert_all(rows)

    def searcher_events(self, after: int = 0) -> List[Dict[str, Any]]:
        return list(self.db.query("SELECT * FROM searcher_events WHERE seq > ? ORDER BY seq", [after]))

    def last_searcher_event(self) -> int:
        row = next(self.db.query("SELECT MAX(seq) AS seq FROM searcher_events"), None)
        return (row["seq"] or 0) if row else 0

    def _update(self, table: str, key: str, value: Any, fields: Dict[str, Any]) -> None:
        if not fields:
            return
        assignments = ", ".join(f"[{name}] = ?" for name in fields)
        self.conn.execute(f"UPDATE [{table}] SET {assignments} WHERE [{key}] = ?", [*fields.values(), value])

