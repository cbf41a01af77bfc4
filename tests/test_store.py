"""The experiment database: journal mode by filesystem, migrations, transactions, read-only readers, the
row types against the migrated schema, and the named reads that reporting uses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from hpo_slurm.core.errors import UserError
from hpo_slurm.experiment.rows import (EventRow, ExperimentRow, MetricRow, RunRow, RunStateTotals, SearcherEventRow,
                                       TrialRow, TrialStateTotals, TrialTotals, new_run_row, new_trial_row)
from hpo_slurm.experiment.store import (MIGRATIONS, SCHEMA_VERSION, Store, StoreError, filesystem_type,
                                        is_network_filesystem)

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
nfs-server:/export/home /home nfs4 rw,vers=4.2 0 0
lustre@o2ib:/scratch /scratch lustre rw,flock 0 0
tmpfs /scratch/tmp tmpfs rw 0 0
"""


def test_network_filesystems_are_recognised_by_the_longest_mount_point():
    assert filesystem_type(Path("/home/alice/runs"), MOUNTS) == "nfs4"
    assert filesystem_type(Path("/scratch/alice"), MOUNTS) == "lustre"
    assert filesystem_type(Path("/scratch/tmp/x"), MOUNTS) == "tmpfs"
    assert filesystem_type(Path("/homework"), MOUNTS) == "ext4"  # a prefix of the name is not a parent
    assert is_network_filesystem(Path("/home/alice"), MOUNTS)
    assert is_network_filesystem(Path("/scratch/alice"), MOUNTS)
    assert not is_network_filesystem(Path("/var/tmp"), MOUNTS)


def journal_mode(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]  # the mode lives in the file, not the connection
    finally:
        conn.close()


def test_wal_on_a_local_disk_while_a_writer_has_it_open_and_no_wal_files_after(tmp_path):
    path = tmp_path / "experiment.db"
    store = Store.open(path)
    assert journal_mode(path) == ("delete" if is_network_filesystem(tmp_path) else "wal")
    store.close()
    # a reader who may not create files in the folder can open it read-only now
    assert journal_mode(path) == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.db"]


def test_a_writer_closing_beside_a_reader_leaves_wal_on(tmp_path):
    path = tmp_path / "experiment.db"
    store = Store.open(path)
    reader = Store.open(path, readonly=True)
    with reader.snapshot_read():  # a read transaction the mode change would have to wait for
        assert reader.trial_totals().count == 0
        store.close()
    reader.close()
    assert journal_mode(path) == "wal"
    Store.open(path).close()  # the next writer that closes alone removes the WAL files
    assert journal_mode(path) == "delete"


def test_an_old_database_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "experiment.db"
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    MIGRATIONS[0](db)
    conn.execute("PRAGMA user_version=1")
    db["trials"].insert({"id": 7, "hparams": "{}", "state": "PENDING"})
    conn.commit()
    conn.close()
    store = Store.open(path)
    assert user_version(path) == SCHEMA_VERSION
    assert [t["id"] for t in store.trials()] == [7]
    assert store.searcher_events() == [] and store.snapshot_event_seq() == 0
    store.close()


def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "experiment.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(UserError, match="newer than this hpo-slurm knows"):
        Store.open(path)


def test_a_failed_transaction_writes_nothing_and_readers_cannot_write(tmp_path):
    path = tmp_path / "experiment.db"
    store = Store.open(path)
    with pytest.raises(ZeroDivisionError):
        with store.transaction():
            store.insert_trials([{"id": 1, "hparams": "{}", "state": "PENDING"}])
            1 / 0
    assert store.trials() == []
    store.close()
    reader = Store.open(path, readonly=True)
    with pytest.raises(StoreError, match="readonly"):
        reader.insert_trials([{"id": 2, "hparams": "{}", "state": "PENDING"}])
    with pytest.raises(StoreError, match="readonly"):
        reader.update_run("t2-r1", state="FAILED")
    reader.use_page_cache(1024)  # a reader's own setting, not a write
    assert reader.trials() == []
    reader.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def columns(path: Path, table: str):
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute(f"PRAGMA table_info([{table}])")]
    finally:
        conn.close()


@pytest.mark.parametrize("table, row_type", [
    ("experiment", ExperimentRow), ("trials", TrialRow), ("runs", RunRow), ("metrics", MetricRow),
    ("events", EventRow), ("searcher_events", SearcherEventRow),
])
def test_the_row_types_name_every_column_the_migrations_create_in_order(tmp_path, row_type, table):
    path = tmp_path / "experiment.db"
    Store.open(path).close()
    assert columns(path, table) == list(row_type.__annotations__)


def test_new_rows_are_complete_and_read_back_as_written(tmp_path):
    store = Store.open(tmp_path / "experiment.db")
    trial = new_trial_row(3, {"lr": 0.1, "arch": {"depth": 2}}, parent=1, parent_checkpoint="t1/length-4",
                          created_at=12.5)
    run = new_run_row("t3-r1", 3, seq=1, from_length=4, to_length=8, recorded_at=13.0)
    assert set(trial) == set(TrialRow.__annotations__) and set(run) == set(RunRow.__annotations__)
    assert trial["hparams"] == '{"arch": {"depth": 2}, "lr": 0.1}'  # keys sorted: equal hparams, equal text
    assert (trial["state"], trial["validated_length"], trial["trained_length"]) == ("PENDING", 0, 0)
    assert (run["state"], run["job_id"], run["submitted_at"]) == ("SUBMITTED", None, None)
    with store.transaction():
        store.insert_trials([trial])
        store.insert_runs([run])
    assert store.trial(3) == trial and store.trial(4) is None
    assert store.runs(3) == [run]
    with store.transaction():
        store.update_trials([(3, {"state": "RUNNING", "target_length": 8}), (4, {"state": "RUNNING"})])
        store.update_runs([("t3-r1", {"job_id": "42", "submitted_at": 14.0})])
    assert store.trial(3) == {**trial, "state": "RUNNING", "target_length": 8}
    assert store.runs(3) == [{**run, "job_id": "42", "submitted_at": 14.0}]
    store.close()


@pytest.fixture
def filled(tmp_path):
    """A database with an experiment, five trials and their runs, a few events; its path."""
    path = tmp_path / "experiment.db"
    store = Store.open(path)
    assert store.experiment_state() is None  # no experiment row yet
    store.create_experiment(name="e", uid="u", state="RUNNING", searcher="asha", executor="local", config="",
                            created_at=0.0, ended_at=None, message=None)
    trials = [new_trial_row(i, {"x": i}, None, None, created_at=float(i)) for i in range(1, 6)]
    for trial, (state, best, saved, restarts) in zip(trials, [
            ("COMPLETED", 0.5, 100, 1), ("COMPLETED", 0.2, 50, 0), ("RUNNING", 0.5, 7, 2),
            ("PENDING", None, 0, 0), ("ERRORED", 0.9, 0, 3)]):
        trial.update(state=state, best_metric=best, checkpoint_bytes=saved, restarts=restarts, preemptions=1)
    runs = [new_run_row(f"t{t}-r{s}", t, s, 0, 4, recorded_at=float(10 * t + s))
            for t, s in [(5, 1), (1, 1), (1, 2), (2, 1), (3, 1), (4, 1)]]  # recorded (rowid) order != id order
    done = {"state": "SUCCEEDED", "job_id": "9", "started_at": 100.0, "ended_at": 160.0}
    for run, fields in zip(runs, [{"state": "FAILED", "job_id": "8", "started_at": 50.0, "ended_at": 80.0},
                                  done, done, done, {"state": "RUNNING", "job_id": "7", "started_at": 200.0},
                                  {}]):
        run.update(fields)
    with store.transaction():
        store.insert_trials(trials)
        store.insert_runs(runs)
        store.append_events([{"time": 1.0, "kind": "created", "trial_id": i, "data": {}} for i in range(1, 4)])
    store.close()
    return path


def test_the_named_reads_agree_with_the_rows(filled):
    store = Store.open(filled, readonly=True)
    with store.snapshot_read():
        assert store.experiment_state() == "RUNNING"
        assert sorted(store.trial_totals_by_state(), key=lambda t: t.state) == [
            TrialStateTotals("COMPLETED", 2, 150), TrialStateTotals("ERRORED", 1, 0),
            TrialStateTotals("PENDING", 1, 0), TrialStateTotals("RUNNING", 1, 7)]
        assert sorted(store.run_totals_by_state(), key=lambda r: r.state) == [
            RunStateTotals("FAILED", 1, 30.0, 0), RunStateTotals("RUNNING", 1, 0.0, 0),
            RunStateTotals("SUBMITTED", 1, 0.0, 1), RunStateTotals("SUCCEEDED", 3, 180.0, 0)]
        assert store.trial_totals() == TrialTotals(5, 6, 5, 0)
        assert [t["id"] for t in store.best_trials(3, smaller_is_better=True)] == [2, 1, 3]  # ties: lower id first
        assert [t["id"] for t in store.best_trials(2, smaller_is_better=False)] == [5, 1]
        assert [t["id"] for t in store.latest_trials(2)] == [4, 5]
        assert [t["id"] for t in store.latest_trials(50)] == [1, 2, 3, 4, 5]
        by_trial = store.runs_by_trial([1, 4, 6])
        assert {t: [r["id"] for r in runs] for t, runs in by_trial.items()} == {1: ["t1-r1", "t1-r2"], 4: ["t4-r1"]}
        assert store.runs_by_trial([]) == {}
        assert {t: len(runs) for t, runs in store.runs_by_trial().items()} == {1: 2, 2: 1, 3: 1, 4: 1, 5: 1}
        assert [r["id"] for r in store.runs_in_states(["SUBMITTED", "RUNNING"], 10)] == ["t3-r1", "t4-r1"]
        assert [r["id"] for r in store.runs_in_states(["SUCCEEDED", "FAILED"], 2)] == ["t5-r1", "t1-r1"]
        assert store.event_count() == 3 and store.last_event_seq() == 3
    store.close()


def test_an_empty_database_reads_as_empty(tmp_path):
    store = Store.open(tmp_path / "experiment.db")
    assert store.trial_totals_by_state() == [] and store.run_totals_by_state() == []
    assert store.trial_totals() == TrialTotals(0, 0, 0, 0)
    assert store.best_trials(10, True) == [] and store.latest_trials(10) == []
    assert store.event_count() == 0 and store.last_event_seq() == 0
    store.close()


def test_a_status_probe_of_the_driver_lock_never_makes_a_driver_start_fail(tmp_path):
    """``driver_alive`` takes the lock for a moment to see whether it is held; a driver starting in that
    moment waits it out instead of reporting "a driver is already running"."""
    import fcntl
    import os
    import threading

    from hpo_slurm.experiment.lock import DriverLock, driver_alive

    path = tmp_path / "driver.lock"
    path.write_text("")
    probe = os.open(path, os.O_RDWR)
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a probe caught holding it
    threading.Timer(0.2, lambda: os.close(probe)).start()
    lock = DriverLock(path)
    lock.acquire()
    try:
        assert driver_alive(path)["alive"] is True
        with pytest.raises(UserError, match="already running"):
            DriverLock(path).acquire()  # a real driver holds it: refused after the grace
    finally:
        lock.release()


def test_what_a_live_driver_waits_for_reaches_status_through_its_heartbeat(tmp_path):
    from hpo_slurm.experiment.lock import DriverLock, driver_alive

    path = tmp_path / "driver.lock"
    lock = DriverLock(path)
    lock.acquire()
    try:
        assert driver_alive(path)["waiting"] is None
        lock.heartbeat("sacct does not answer (for 61 s)")
        shown = driver_alive(path)
        assert shown["alive"] and shown["waiting"] == "sacct does not answer (for 61 s)"
        lock.heartbeat()  # it answers again
        assert driver_alive(path)["waiting"] is None
        lock.heartbeat("slurmctld does not answer (for 9 s)")
    finally:
        lock.release()
    assert driver_alive(path)["waiting"] is None  # a driver that is gone waits for nothing
