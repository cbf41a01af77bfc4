"""The experiment database: journal mode by filesystem, migrations, transactions, read-only readers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from hpo_slurm.core.errors import UserError
from hpo_slurm.experiment.store import MIGRATIONS, SCHEMA_VERSION, Store, filesystem_type, is_network_filesystem

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


def test_wal_on_a_local_disk(tmp_path):
    store = Store.open(tmp_path / "experiment.db")
    mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
    store.close()
    assert mode == ("delete" if is_network_filesystem(tmp_path) else "wal")


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
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
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
    with pytest.raises(sqlite3.OperationalError):
        reader.conn.execute("INSERT INTO trials (id, hparams, state) VALUES (2, '{}', 'PENDING')")
    reader.close()
