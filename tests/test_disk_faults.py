"""A full disk and damaged job files, on real searches: the real command line, local processes, real
files. The full disk is a size-limited tmpfs mounted by the test (needs root), filled by a filler file
once the search runs; the results are compared with the same search run without the fault."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Dict

import pytest

from driver_helpers import cli, copy_example, kill_all_trials, start_cli, status, trial_processes, wait_for, write_config

SEARCH = {"searcher": {"max_trials": 4, "max_concurrent_trials": 2}, "max_restarts": 2}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Dict[int, float]:
    """The search every test here damages, run without a fault: each trial's validation metric at 64
    (how fast trials train does not change what they report)."""
    work = tmp_path_factory.mktemp("baseline")
    quadratic = copy_example("quadratic", work)
    config = write_config(quadratic / "random.yaml", quadratic / "clean.yaml", name="clean",
                          data={"sleep_per_unit": 0.0}, **SEARCH)
    done = cli("launch", str(config), "--root", str(work / "runs"), "--executor", "local", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_metrics(work / "runs", "clean")


@pytest.fixture
def quadratic(tmp_path):
    return copy_example("quadratic", tmp_path)


@pytest.fixture
def small_disk(tmp_path):
    """An empty 8 MiB tmpfs, unmounted after the test (its trials killed first)."""
    if os.geteuid() != 0:
        pytest.skip("a size-limited tmpfs is mounted with `mount -t tmpfs`, which needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        kill_all_trials(disk)
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full; returns it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * (64 * 1024))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def final_metrics(root: Path, name: str) -> Dict[int, float]:
    summary = status(root, name)
    assert summary["state"] == "COMPLETED", summary["state"]
    assert all(t["state"] == "COMPLETED" for t in summary["trials"]), [(t["id"], t["state"]) for t in summary["trials"]]
    return {t["id"]: t["best_metric"] for t in summary["trials"]}


def integrity(experiment: Path) -> str:
    conn = sqlite3.connect(str(experiment / "experiment.db"))
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def validations_per_trial(experiment: Path) -> Dict[int, int]:
    conn = sqlite3.connect(f"file:{experiment / 'experiment.db'}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT trial_id, COUNT(*) FROM metrics WHERE kind = 'validation' GROUP BY trial_id"))
    finally:
        conn.close()


def fill_disk_mid_search(quadratic: Path, small_disk: Path, name: str, sleep: float, wait: str):
    """Launch the search ``name`` on ``small_disk`` (``data.sleep_per_unit`` ``sleep``, the driver
    waiting up to ``wait`` seconds for room) and fill the disk once a trial has reported: (the
    driver's process, the experiment folder, the filler file)."""
    config = write_config(quadratic / "random.yaml", quadratic / f"{name}.yaml", name=name,
                          data={"sleep_per_unit": sleep}, **SEARCH)
    process = start_cli("launch", str(config), "--root", str(small_disk), "--executor", "local",
                        env={"HPO_SLURM_DISK_FULL_WAIT": wait})
    experiment = small_disk / name
    wait_for(lambda: list(experiment.glob("trials/*/metrics.jsonl")), what="a first metrics line")
    return process, experiment, fill(small_disk)


def test_a_full_disk_is_waited_out_and_the_search_finishes_as_without_it(quadratic, small_disk, baseline):
    process, experiment, filler = fill_disk_mid_search(quadratic, small_disk, "full", sleep=0.02, wait="120")
    time.sleep(3)  # trials keep reporting: the driver meets the full disk and waits
    assert process.poll() is None, process.communicate()[1][-3000:]
    filler.unlink()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "Logging error" not in err, err[-3000:]
    log = (experiment / "driver.log").read_text()
    assert log.count("the disk is full") == 1, log
    assert "free space is back" in log
    assert integrity(experiment) == "ok"
    assert final_metrics(small_disk, "full") == baseline
    assert validations_per_trial(experiment) == {trial: 1 for trial in baseline}  # nothing ingested twice
    for trial in status(small_disk, "full")["trials"]:  # a run that failed on the full disk says so
        assert all(r["state"] == "SUCCEEDED" or "disk was full" in r["reason"] for r in trial["runs"]), trial


def test_a_disk_that_stays_full_stops_the_driver_with_one_line_and_resume_finishes(quadratic, small_disk, baseline):
    # trials are slow enough to outlive the outage, so they finish on their own once space is back
    process, experiment, filler = fill_disk_mid_search(quadratic, small_disk, "stays-full", sleep=0.07, wait="0.5")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err[-3000:]
    assert "Traceback" not in err and "Logging error" not in err, err[-3000:]
    (line,) = [line for line in err.splitlines() if "disk is full" in line]
    assert line.startswith(f"hpo-slurm: {experiment}: the disk is full"), err
    assert "hpo-slurm resume stays-full" in line
    # a resume while the disk is still full: the same one line, at once
    again = cli("resume", "stays-full", "--root", str(small_disk), env={"HPO_SLURM_DISK_FULL_WAIT": "0"}, timeout=60)
    assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert len(again.stderr.strip().splitlines()) == 1 and "the disk is full" in again.stderr, again.stderr
    filler.unlink()
    assert integrity(experiment) == "ok"
    done = cli("resume", "stays-full", "--root", str(small_disk), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert integrity(experiment) == "ok"
    assert final_metrics(small_disk, "stays-full") == baseline
    assert validations_per_trial(experiment) == {trial: 1 for trial in baseline}


def test_damaged_metrics_and_result_files_give_their_trial_a_clear_state(quadratic, tmp_path, baseline):
    """Results and metric lines are damaged while the driver is paused (SIGSTOP) and its trials end: a
    result that is truncated JSON and garbage metric lines (trial 1), and a validation line cut short,
    as when a job dies mid-write (trial 2)."""
    config = write_config(quadratic / "random.yaml", quadratic / "damaged.yaml", name="damaged",
                          data={"sleep_per_unit": 0.02}, **SEARCH)
    root = tmp_path / "runs"
    process = start_cli("launch", str(config), "--root", str(root), "--executor", "local")
    experiment = root / "damaged"
    try:
        wait_for(lambda: len(trial_processes(experiment)) == 2, what="two running trials")
        os.kill(process.pid, signal.SIGSTOP)
        wait_for(lambda: all((experiment / "runs" / run / "result.json").exists() for run in ("t1-r1", "t2-r1")),
                 timeout=60, what="the first two runs to end")
        (experiment / "runs/t1-r1/result.json").write_text('{"status": "exi')
        metrics_1 = experiment / "trials/1/metrics.jsonl"
        with open(metrics_1, "ab") as handle:
            handle.write(b'\x00\xffnot json\n[1, 2]\n{"kind": "validation", "length": "four"}\n')
        metrics_2 = experiment / "trials/2/metrics.jsonl"
        data = metrics_2.read_bytes()
        assert data.rstrip().splitlines()[-1].startswith(b'{"kind": "validation"')
        metrics_2.write_bytes(data[:-30])  # its validation line cut short
    finally:
        os.kill(process.pid, signal.SIGCONT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert final_metrics(root, "damaged") == baseline
    trials = {t["id"]: t for t in status(root, "damaged")["trials"]}
    assert [r["state"] for r in trials[1]["runs"]] == ["SUCCEEDED"]  # it validated: the result is not needed
    assert trials[2]["restarts"] == 1
    assert [r["state"] for r in trials[2]["runs"]] == ["FAILED", "SUCCEEDED"]
    assert "without reporting validation at length 64" in trials[2]["runs"][0]["reason"]
    log = (experiment / "driver.log").read_text()
    assert log.count("run t1-r1: result ignored") == 1 and "not JSON" in log
    assert log.count("trials/1/metrics.jsonl: byte") == 3  # each malformed line, once
    assert "trials/2/metrics.jsonl: byte" in log  # the cut line, once the next run started a new line
    assert validations_per_trial(experiment) == {trial: 1 for trial in baseline}
    assert integrity(experiment) == "ok"


DELETING_TRAIN = '''
"""train.py, then each trial's first run deletes the checkpoint it saved (as a user might)."""
import shutil

import train
from hpo_slurm import trial

ctx = trial.init()
train.train(ctx)
marker = ctx.trial_dir / "checkpoint-deleted"
if ctx.latest_checkpoint is not None and not marker.exists():
    marker.write_text(ctx.run_id)
    shutil.rmtree(ctx.latest_checkpoint)
'''


def test_a_deleted_checkpoint_is_said_and_the_continuation_trains_again_from_the_start(quadratic, tmp_path):
    search = {"searcher": {"max_trials": 6, "max_concurrent_trials": 1}, "data": {"sleep_per_unit": 0.0}}
    (quadratic / "train_deleting.py").write_text(DELETING_TRAIN)
    clean = write_config(quadratic / "adaptive.yaml", quadratic / "clean.yaml", name="clean", **search)
    deleting = write_config(quadratic / "adaptive.yaml", quadratic / "deleting.yaml", name="deleting",
                            entrypoint="python3 train_deleting.py", **search)
    root = tmp_path / "runs"
    for config in (clean, deleting):
        done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
    expected = {t["id"]: (t["state"], t["best_metric"], t["length_done"]) for t in status(root, "clean")["trials"]}
    trials = status(root, "deleting")["trials"]
    assert {t["id"]: (t["state"], t["best_metric"], t["length_done"]) for t in trials} == expected
    continued = [t for t in trials if len(t["runs"]) > 1]
    assert continued, "the search promoted no trial"
    log = (root / "deleting" / "driver.log").read_text()
    for trial in continued:
        second = trial["runs"][1]
        line = (f"trial {trial['id']}: its checkpoint at length {second['from_length']} is gone; "
                f"run {second['run_id']} trains again from the start")
        assert log.count(line) == 1, log
        assert all(r["state"] == "SUCCEEDED" for r in trial["runs"])
    assert integrity(root / "deleting") == "ok"
