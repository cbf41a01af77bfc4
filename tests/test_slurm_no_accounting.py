"""A real Slurm cluster without accounting (``scripts/local-slurm.sh up --no-accounting``:
AccountingStorageType=accounting_storage/none, no slurmdbd, sacct refuses): launch, status, resume
after driver kills, stop and sweep work from squeue and the jobs' own result files.

The module brings the cluster up without accounting once, and restores the default cluster (with
accounting) when it ends, also after a failure. Marked ``slurm``."""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from driver_helpers import cli, copy_example, launch_with_kills, start_cli, status, wait_for, write_config
from slurm_cluster import reconfigure, require_cluster, slurm, wait_until_idle

pytestmark = pytest.mark.slurm

SLURM = {"poll_interval": 1, "partition": "debug", "mem": "500M", "cpus_per_task": 1, "time": 5}


@pytest.fixture(scope="module", autouse=True)
def cluster_without_accounting():
    require_cluster()
    wait_until_idle()
    reconfigure("--no-accounting")
    try:
        refused = subprocess.run(["sacct", "-n", "-X", "-S", "now-1hours"], capture_output=True, text=True)
        assert refused.returncode != 0, "sacct still answers: the cluster keeps accounting"
        yield
    finally:
        try:
            wait_until_idle(timeout=120)  # every test waits for its own jobs; a failed one may leave some
        finally:
            reconfigure()


@pytest.fixture
def quadratic(tmp_path):
    return copy_example("quadratic", tmp_path)


def reference_metrics(quadratic: Path, config: str, root: Path, **changes):
    """Trial id -> best metric of the same search run on the local executor, uninterrupted."""
    path = write_config(quadratic / config, quadratic / f"reference-{config}", name=f"reference-{Path(config).stem}",
                        **{**changes, "data": {"sleep_per_unit": 0.0}})
    done = cli("launch", str(path), "--root", str(root), "--executor", "local", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {t["id"]: t["best_metric"] for t in status(root, f"reference-{Path(config).stem}")["trials"]}


def test_an_adaptive_search_resumed_after_driver_kills_loses_and_repeats_nothing(quadratic, tmp_path):
    changes = dict(searcher={"max_trials": 8, "max_concurrent_trials": 4})
    root = tmp_path / "runs"
    expected = reference_metrics(quadratic, "adaptive.yaml", root, **changes)
    config = write_config(quadratic / "adaptive.yaml", quadratic / "noacct.yaml", name="noacct", slurm=SLURM,
                          data={"sleep_per_unit": 0.05}, **changes)
    kills = launch_with_kills(config, root, "noacct", [], 4, random.Random(15), executor="slurm", window=(2.0, 6.0))
    assert kills >= 2, f"the search ended after {kills} kills"
    summary = status(root, "noacct")
    assert summary["state"] == "COMPLETED"
    trials = {t["id"]: t for t in summary["trials"]}
    assert {i: t["best_metric"] for i, t in trials.items()} == expected
    for trial in trials.values():
        assert trial["restarts"] == 0 and all(r["state"] == "SUCCEEDED" for r in trial["runs"]), trial
        spans = [(r["from_length"], r["to_length"]) for r in trial["runs"]]
        assert len(spans) == len(set(spans)), trial  # no rung run twice
    jobs = [r["job_id"] for t in trials.values() for r in t["runs"]]
    assert len(jobs) == len(set(jobs))
    for attempts in (root / "noacct").glob("runs/*/attempts.jsonl"):
        assert len(attempts.read_text().splitlines()) == 1, attempts  # every job started once


def test_stop_cancels_the_searchs_jobs(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "stopped.yaml", name="stopped", slurm=SLURM,
                          searcher={"max_trials": 4, "max_concurrent_trials": 4}, data={"sleep_per_unit": 1.0})
    root = tmp_path / "runs"
    driver = start_cli("launch", str(config), "--root", str(root), "--executor", "slurm")
    wait_for(lambda: (root / "stopped" / "experiment.db").exists() and sum(
        r["state"] == "RUNNING" for t in status(root, "stopped")["trials"] for r in t["runs"]) >= 2,
        timeout=120, what="runs to start")
    done = cli("stop", "stopped", "--root", str(root))
    assert done.returncode == 0, done.stderr[-3000:]
    driver.communicate(timeout=120)
    wait_for(lambda: not [n for n in slurm("squeue", "-h", "-o", "%j").split() if n.startswith("hpo.")],
             timeout=60, what="the search's jobs to leave the queue")
    summary = status(root, "stopped")
    assert summary["state"] == "STOPPED" and all(t["state"] == "STOPPED_EARLY" for t in summary["trials"])
    assert all(r["state"] not in ("SUBMITTED", "RUNNING") for t in summary["trials"] for r in t["runs"])


def test_a_sweep_runs_as_an_array_and_status_follows_it(quadratic, tmp_path):
    root = tmp_path / "runs"
    changes = dict(searcher={"max_trials": 4, "max_concurrent_trials": 4})
    expected = reference_metrics(quadratic, "random.yaml", root, **changes)
    config = write_config(quadratic / "random.yaml", quadratic / "swept.yaml", name="swept", slurm=SLURM,
                          data={"sleep_per_unit": 0.02}, **changes)
    done = cli("sweep", str(config), "--root", str(root), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    deadline = time.monotonic() + 180
    while True:
        summary = status(root, "swept")  # each status polls squeue and reads the tasks' result files
        if summary["state"] != "RUNNING":
            break
        assert time.monotonic() < deadline, json.dumps(summary)[-2000:]
        time.sleep(1)
    assert summary["state"] == "COMPLETED"
    trials = {t["id"]: t for t in summary["trials"]}
    assert {i: t["best_metric"] for i, t in trials.items()} == expected
    assert all(len(t["runs"]) == 1 and t["runs"][0]["state"] == "SUCCEEDED" for t in trials.values())
