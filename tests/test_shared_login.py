"""A shared login node: who may read an experiment, and that no hyperparameter value or experiment name
ever reaches a shell.

Modes are checked under a umask that would let others in (002) and one that would shut the group out
(077), so they prove what hpo-slurm sets, not what the environment gives. As root, another user's view
is checked too (``setpriv``), from a folder that user may pass through. Hostile values and names run
on local processes, on the local Slurm cluster (``launch --executor slurm``) and as a sweep's job
array; each trial writes the hyperparameters it received to a file, compared byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from driver_helpers import cli, copy_example, write_config
from slurm_cluster import require_cluster, slurm, wait_until_idle
from hpo_slurm.core.fsio import GROUP_READABLE, PRIVATE, append_line, write_json_atomic
from hpo_slurm.experiment.folder import make_root

NOBODY = 65534
# what hpo-slurm writes at the experiment's top when it creates it, and the job protocol's files
TOP_FILES = ("config.yaml", "experiment.db", "experiment.db-wal", "experiment.db-shm", "driver.log", "driver.lock")
PROTOCOL_FILES = ("spec.json", "result.json", "attempts.jsonl", "metrics.jsonl", "hpo_checkpoint.json")
JOB_FILES = ("manifest.json", "task.pkl", "array.sbatch", "submitted.json")  # Slurm batches, sweep arrays
# categorical values a shell would act on: each would create the marker file if a shell ever saw it
HOSTILE = ("$(touch {m})", "`touch {m}`", '"; touch {m} #', "'; touch {m} #", "a\nb; touch {m}",
           "x\n$(touch {m})\n", "'", '"', "|", "&", "*", "; touch {m}", "$HOME ${{PATH}}", "\\", "a b",
           "-n", "%j %A %x", "{m} && touch {m}")
HOSTILE_NAME = "exp $(touch {m}) 'q' \"d\" ; touch {m} # `id` | & *"
HOSTILE_KEY = "key $(touch {m}); 'k'"
PROBE = '''\
import json
from pathlib import Path

from hpo_slurm import trial

ctx = trial.init()
Path(ctx.data["received"], f"{ctx.trial_id}.json").write_text(json.dumps(ctx.hparams))
ctx.report_validation(ctx.target_length, {"loss": float(ctx.trial_id)})
'''


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask() -> Iterator[Any]:
    """``umask(value)`` sets this process's umask (the commands it runs inherit it) until the test ends."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A folder that any user may pass through (0711), outside pytest's own 0700 folders."""
    base = Path(tempfile.mkdtemp(prefix="hpo-shared-login-"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def as_user(uid: int, gid: int, *command: str) -> subprocess.CompletedProcess:
    """``command`` run as user ``uid`` in group ``gid`` only (needs root and setpriv)."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *command],
                          capture_output=True, text=True, timeout=30)


def can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def launch_local(config: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def quadratic_with_a_script(base: Path) -> Path:
    """The quadratic example, with an executable script in a subfolder of its model folder."""
    example = copy_example("quadratic", base)
    (example / "tools").mkdir()
    script = example / "tools" / "run.sh"
    script.write_text("#!/bin/sh\necho run\n")
    os.chmod(script, 0o775)
    return example


# ---- who may read an experiment -------------------------------------------------------------------

def test_a_root_hpo_slurm_makes_takes_the_experiments_mode_and_an_existing_one_is_left_alone(tmp_path, umask):
    umask(0o002)
    make_root(tmp_path / "private" / "root", PRIVATE)
    assert mode(tmp_path / "private" / "root") == 0o700
    umask(0o077)
    make_root(tmp_path / "shared", GROUP_READABLE)
    assert mode(tmp_path / "shared") == 0o750
    existing = tmp_path / "existing"
    existing.mkdir()
    os.chmod(existing, 0o755)
    make_root(existing, PRIVATE)
    assert mode(existing) == 0o755


def test_files_written_for_jobs_are_the_owners_only_whatever_the_umask(tmp_path, umask):
    umask(0)
    write_json_atomic(tmp_path / "spec.json", {"hparams": {"lr": 0.1}})
    append_line(tmp_path / "metrics.jsonl", "{}")
    append_line(tmp_path / "metrics.jsonl", "{}")
    stale = tmp_path / f".result.json.tmp-{os.getpid()}"  # left by an earlier process of this pid
    stale.write_text("")
    os.chmod(stale, 0o666)
    write_json_atomic(tmp_path / "result.json", {"status": "exited"})
    assert [mode(tmp_path / name) for name in ("spec.json", "metrics.jsonl", "result.json")] == [0o600] * 3
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n{}\n"


def test_a_search_is_readable_by_its_owner_only_under_a_permissive_umask(open_base, umask):
    umask(0o002)
    example = quadratic_with_a_script(open_base)
    config = write_config(example / "single.yaml", example / "private.yaml", name="private",
                          searcher={"max_length": {"batches": 8}})
    launch_local(config, open_base / "made-root")  # a root hpo-slurm makes
    root = open_base / "open-root"  # a root the user made, that others may list
    root.mkdir()
    launch_local(config, root)
    assert mode(open_base / "made-root") == 0o700 and mode(root) == 0o775
    for experiment in (open_base / "made-root" / "private", root / "private"):
        assert mode(experiment) == 0o700
        for name in TOP_FILES:
            if (experiment / name).exists():
                assert mode(experiment / name) == 0o600, name
        context = experiment / "context"
        assert mode(context) == 0o700 and mode(context / "tools") == 0o700
        assert mode(context / "tools" / "run.sh") == 0o700 and mode(context / "train.py") == 0o600
        assert all(mode(path) & 0o077 == 0 for path in context.rglob("*") if not path.is_symlink())
        written = [path for name in PROTOCOL_FILES for path in experiment.rglob(name)]
        assert {path.name for path in written} == set(PROTOCOL_FILES)
        assert {path: mode(path) for path in written} == {path: 0o600 for path in written}
    if can_switch_user():
        experiment = root / "private"
        assert as_user(NOBODY, NOBODY, "ls", str(root)).stdout.split() == ["private"]
        for command in (["ls", str(experiment)], ["head", "-c", "15", str(experiment / "experiment.db")],
                        ["cat", str(experiment / "driver.log")], ["ls", str(experiment / "runs")]):
            denied = as_user(NOBODY, experiment.stat().st_gid, *command)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, command


def test_share_with_group_lets_the_group_read_whatever_the_umask(open_base, umask):
    example = quadratic_with_a_script(open_base)  # readable by all: the copy never gives more than that
    config = write_config(example / "single.yaml", example / "shared.yaml", name="shared", share_with_group=True,
                          searcher={"max_length": {"batches": 8}})
    umask(0o077)
    root = open_base / "team"
    root.mkdir()
    done = launch_local(config, root)
    assert f"share_with_group: your group cannot enter {root} (mode 0700)" in done.stderr
    os.chmod(root, 0o710)  # as the warning says
    experiment = root / "shared"
    assert mode(experiment) == 0o750 and mode(experiment / "context" / "tools") == 0o750
    assert mode(experiment / "context" / "tools" / "run.sh") == 0o750
    assert mode(experiment / "context" / "train.py") == 0o640
    for name in TOP_FILES:
        if (experiment / name).exists():
            assert mode(experiment / name) == 0o640, name
    assert {mode(path) for name in PROTOCOL_FILES for path in experiment.rglob(name)} == {0o600}
    if can_switch_user():
        group = experiment.stat().st_gid
        assert as_user(NOBODY, group, "head", "-c", "15", str(experiment / "experiment.db")).stdout == "SQLite format 3"
        assert "context" in as_user(NOBODY, group, "ls", str(experiment)).stdout.split()
        # the driver has ended: a group member, who may not create the -wal and -shm files, reads the
        # database as hpo-slurm's readers do (read-only)
        query = ("import sqlite3, sys; db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True); "
                 "print(db.execute('SELECT COUNT(*), MAX(state) FROM trials').fetchone())")
        read = as_user(NOBODY, group, "/usr/bin/python3", "-c", query, str(experiment / "experiment.db"))
        assert read.returncode == 0 and read.stdout.strip() == "(1, 'COMPLETED')", read.stderr
        other = as_user(NOBODY, NOBODY, "ls", str(experiment))
        assert other.returncode != 0 and "Permission denied" in other.stderr


# ---- nothing reaches a shell ----------------------------------------------------------------------

def hostile_search(base: Path, marker: Path, **changes: Any) -> Dict[str, Any]:
    """A grid over one categorical hyperparameter of HOSTILE values (and a const one under a hostile
    name); each trial writes what it received to ``base/received/<trial>.json``. Returns the config's
    path, the name, the values and the received folder."""
    example = copy_example("quadratic", base)
    (example / "probe.py").write_text(PROBE)
    received = base / "received"
    received.mkdir()
    values = [value.format(m=marker) for value in HOSTILE]
    name = HOSTILE_NAME.format(m=marker)
    key = HOSTILE_KEY.format(m=marker)
    config = write_config(
        example / "single.yaml", example / "hostile.yaml", name=name, entrypoint="python3 probe.py",
        hyperparameters={"choice": {"type": "categorical", "vals": values}, key: f"$(touch {marker})"},
        searcher={"name": "grid", "max_length": {"batches": 1}, "max_trials": len(values),
                  "max_concurrent_trials": 6},
        data={"received": str(received)}, **changes)
    return {"config": config, "name": name, "values": values, "key": key, "received": received}


def received_hparams(received: Path) -> List[Dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(received.glob("*.json"))]


def check_untouched(search: Dict[str, Any], root: Path, marker: Path, executor: str) -> None:
    """The search completed under its hostile name, every trial got its value byte for byte, and no
    shell ran any of them."""
    done = cli("status", search["name"], "--root", str(root), "--json", "--trials", "all")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["name"] == search["name"] and summary["state"] == "COMPLETED" and summary["executor"] == executor
    assert [t["state"] for t in summary["trials"]] == ["COMPLETED"] * len(search["values"])
    got = received_hparams(search["received"])
    assert sorted(hp["choice"] for hp in got) == sorted(search["values"])
    assert all(hp[search["key"]] == f"$(touch {marker})" for hp in got)
    assert not marker.exists()
    (experiment,) = [path for path in root.iterdir() if not path.name.startswith(".")]
    assert mode(experiment) == 0o700 and mode(experiment / "experiment.db") == 0o600
    written = [path for name in PROTOCOL_FILES + JOB_FILES for path in experiment.rglob(name)]
    assert len(written) >= 3 * len(search["values"])
    assert {path: mode(path) for path in written} == {path: 0o600 for path in written}


def test_hostile_values_and_name_never_reach_a_shell_on_local_processes(tmp_path):
    marker = tmp_path / "pwned"
    search = hostile_search(tmp_path, marker)
    root = tmp_path / "runs"
    launch_local(search["config"], root)
    check_untouched(search, root, marker, "local")


def test_a_name_with_a_newline_is_refused_with_one_line(tmp_path):
    marker = tmp_path / "pwned"
    search = hostile_search(tmp_path, marker)
    done = cli("launch", str(search["config"]), "--root", str(tmp_path / "runs"), "--executor", "local",
               "--name", f"two\nlines $(touch {marker})")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--name: expected a name without control characters" in done.stderr
    assert not (tmp_path / "runs").exists() and not marker.exists()


@pytest.fixture
def cluster(tmp_path):
    require_cluster()
    wait_until_idle()
    yield
    # cancel what this test's searches left queued, nothing else
    uids = [experiment_uid(db) for db in tmp_path.glob("runs/*/experiment.db")]
    queued = slurm("squeue", "-h", "-o", "%A|%j").splitlines()
    ids = [line.split("|")[0] for line in queued if any(f".{uid[:8]}." in line for uid in uids)]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def experiment_uid(db: Path) -> str:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT uid FROM experiment").fetchone()[0]
    finally:
        conn.close()


SLURM = {"poll_interval": 1, "partition": "debug", "mem": "500M", "cpus_per_task": 1, "time": 5}


@pytest.mark.slurm
def test_hostile_values_and_name_never_reach_a_shell_on_slurm(tmp_path, cluster):
    marker = tmp_path / "pwned"
    search = hostile_search(tmp_path, marker, slurm=SLURM)
    root = tmp_path / "runs"
    done = cli("launch", str(search["config"]), "--root", str(root), "--executor", "slurm", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    check_untouched(search, root, marker, "slurm")
    assert_not_in_scripts(search, marker, "".join(path.read_text() for path in root.rglob("*.sh")))


@pytest.mark.slurm
def test_hostile_values_and_name_never_reach_a_shell_in_a_sweep(tmp_path, cluster):
    marker = tmp_path / "pwned"
    search = hostile_search(tmp_path, marker, slurm=SLURM)
    root = tmp_path / "runs"
    done = cli("sweep", str(search["config"]), "--root", str(root), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    deadline = time.monotonic() + 240
    while len(received_hparams(search["received"])) < len(search["values"]) or not sweep_finished(search, root):
        assert time.monotonic() < deadline, "the sweep did not finish in 240 s"
        time.sleep(2)
    check_untouched(search, root, marker, "array")
    scripts = "".join(path.read_text() for path in root.rglob("*.sbatch"))
    assert "#SBATCH --array=" in scripts
    assert_not_in_scripts(search, marker, scripts)


def assert_not_in_scripts(search: Dict[str, Any], marker: Path, scripts: str) -> None:
    """The rendered job scripts hold neither the name nor any value (only the folder's safe spelling)."""
    assert scripts and search["name"] not in scripts and str(marker) not in scripts
    assert not [value for value in search["values"] if len(value) > 3 and value in scripts]


def sweep_finished(search: Dict[str, Any], root: Path) -> bool:
    done = cli("status", search["name"], "--root", str(root), "--json", "--trials", "all")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    return summary["state"] != "RUNNING" and all(r["state"] not in ("SUBMITTED", "RUNNING")
                                                 for t in summary["trials"] for r in t["runs"])
