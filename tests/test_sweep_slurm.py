"""`hpo-slurm sweep` on the real local Slurm cluster: job arrays with no driver, MaxArraySize splits,
waves under a queued-jobs cap, failed tasks resubmitted, preemption and the time-limit warning
(tasks requeue themselves and resume from checkpoints), hostile hyperparameters.

Needs `scripts/local-slurm.sh up`. Marked `slurm`.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from driver_helpers import cli, copy_example, write_config
from slurm_cluster import reconfigure, require_cluster, sacct_rows, slurm, wait_until_idle

pytestmark = pytest.mark.slurm

SLURM = {"poll_interval": 1, "partition": "debug", "mem": "500M", "cpus_per_task": 1, "time": 5}


@pytest.fixture(autouse=True)
def cluster(tmp_path):
    require_cluster()
    wait_until_idle()
    yield
    # cancel what this test left behind (its sweeps' arrays and wave jobs, the preemptor), nothing else
    mine = [prefix(tmp_path / "runs", p.parent.name) for p in (tmp_path / "runs").glob("*/experiment.db")]
    queued = slurm("squeue", "-h", "-o", "%A|%j").splitlines()
    ids = [line.split("|")[0] for line in queued
           if line.split("|")[-1] == "urgent-preemptor" or any(line.split("|")[-1].startswith(m) for m in mine)]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


@pytest.fixture
def quadratic(tmp_path):
    return copy_example("quadratic", tmp_path)


def sweep(config: Path, root: Path, *args: str) -> str:
    started = time.monotonic()
    done = cli("sweep", str(config), "--root", str(root), *args, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 60, "sweep must return once the arrays are submitted"
    return done.stderr


def status(root: Path, name: str) -> Dict[str, Any]:
    """``hpo-slurm status NAME --json --trials all``: the summary and every trial with its runs."""
    done = cli("status", name, "--root", str(root), "--json", "--trials", "all")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_status(root: Path, name: str, predicate: Callable[[Dict[str, Any]], bool], timeout: float = 150,
                what: str = "the sweep to finish") -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        summary = status(root, name)
        if predicate(summary):
            return summary
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {json.dumps(summary)[-3000:]}\n" + slurm("squeue"))
        time.sleep(1.5)


def finished(summary: Dict[str, Any]) -> bool:
    return summary["state"] != "RUNNING" and all(r["state"] not in ("SUBMITTED", "RUNNING")
                                                 for t in summary["trials"] for r in t["runs"])


def prefix(root: Path, name: str) -> str:
    import sqlite3

    conn = sqlite3.connect(root / name / "experiment.db")
    uid = conn.execute("SELECT uid FROM experiment").fetchone()[0]
    conn.close()
    return f"hpo.{uid[:8]}."


def accounted(name_prefix: str, count: int, timeout: float = 30):
    """sacct's rows for these jobs, once it has them all (slurmdbd records ended jobs with a lag)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = sacct_rows(name_prefix)
        if len(rows) >= count and all(state not in ("PENDING", "RUNNING") for _, _, state in rows):
            return rows
        if time.monotonic() > deadline:
            return rows
        time.sleep(1)


def attempts(experiment: Path, run: str):
    return [json.loads(line) for line in (experiment / "runs" / run / "attempts.jsonl").read_text().splitlines()]


def test_a_grid_of_36_trials_runs_as_an_array_and_hostile_values_never_execute(quadratic, tmp_path):
    marker = tmp_path / "pwned"
    hostile = f'"$(touch {marker})"; rm -rf x `touch {marker}`'
    config = write_config(
        quadratic / "grid.yaml", quadratic / "big.yaml", name="big", slurm=SLURM, data={"sleep_per_unit": 0.002},
        searcher={"max_concurrent_trials": 8},
        hyperparameters={"layers": {"type": "int", "minval": 1, "maxval": 4, "count": 3},
                         "activation": {"type": "categorical", "vals": ["relu", hostile]}})
    root = tmp_path / "runs"
    message = sweep(config, root)
    assert "36 trials as 1 job array" in message and "at most 8 tasks at once" in message
    summary = wait_status(root, "big", finished)
    assert summary["state"] == "COMPLETED" and summary["executor"] == "array"
    assert len(summary["trials"]) == 36 and all(t["state"] == "COMPLETED" for t in summary["trials"])
    assert sum(1 for t in summary["trials"] if t["hparams"]["activation"] == hostile) == 18
    rows = accounted(prefix(root, "big") + "array-", 36)
    assert len(rows) == 36 and all("_" in job_id and state == "COMPLETED" for job_id, _, state in rows)
    bound = sorted(r["job_id"] for t in summary["trials"] for r in t["runs"])
    assert bound == sorted(job_id for job_id, _, _ in rows)
    assert not marker.exists()
    script = (root / "big" / "jobs" / "array-0" / "array.sbatch").read_text()
    assert "#SBATCH --array=0-35%8" in script and "pwned" not in script
    # a trial's output is where `logs` finds it
    done = cli("logs", "big", "1", "--root", str(root))
    assert done.returncode == 0 and "hpo-slurm sweep task 0 of array 0: run t1-r1" in done.stdout


def test_logs_follow_of_a_sweep_task_returns_once_the_task_ended(quadratic, tmp_path):
    """A sweep has no driver: following a task's trial polls Slurm itself, and returns on its own."""
    config = write_config(quadratic / "single.yaml", quadratic / "one.yaml", name="one", slurm=SLURM,
                          data={"sleep_per_unit": 0.05})
    root = tmp_path / "runs"
    sweep(config, root)
    started = time.monotonic()
    done = cli("logs", "one", "1", "--root", str(root), "--follow", timeout=150)
    assert done.returncode == 0, done.stderr
    assert "hpo-slurm sweep task 0 of array 0: run t1-r1" in done.stdout
    assert time.monotonic() - started < 120
    (trial,) = status(root, "one")["trials"]
    assert trial["state"] == "COMPLETED"


def test_a_lowered_max_array_size_splits_the_sweep(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "split.yaml", name="split", slurm=SLURM,
                          searcher={"max_trials": 10, "max_concurrent_trials": 8})
    root = tmp_path / "runs"
    reconfigure("--max-array-size", "8")
    try:
        message = sweep(config, root)
        # the cluster is restored only after the tasks ran: a slurmd restarted while it launches
        # batch scripts loses them (slurmctld keeps them RUNNING on the node)
        summary = wait_status(root, "split", finished)
    finally:
        reconfigure()
    assert "10 trials as 2 job arrays" in message
    assert summary["state"] == "COMPLETED"
    arrays: Dict[str, list] = {}
    for job_id, _, state in accounted(prefix(root, "split") + "array-", 10):
        assert state == "COMPLETED"
        base, _, index = job_id.partition("_")
        arrays.setdefault(base, []).append(int(index))
    assert sorted(sorted(tasks) for tasks in arrays.values()) == [[0, 1], list(range(8))]


def test_under_a_queued_jobs_cap_arrays_go_out_in_waves(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "waves.yaml", name="waves", slurm=SLURM,
                          searcher={"max_trials": 5, "max_concurrent_trials": 4})
    root = tmp_path / "runs"
    message = sweep(config, root, "--max-jobs", "4")
    assert "submitted in waves" in message
    summary = wait_status(root, "waves", finished, timeout=180)
    assert summary["state"] == "COMPLETED" and all(t["state"] == "COMPLETED" for t in summary["trials"])
    arrays = {row[0].split("_")[0] for row in accounted(prefix(root, "waves") + "array-", 5)}
    waves = accounted(prefix(root, "waves") + "wave-", len(arrays) - 1)
    assert len(arrays) >= 3 and len(waves) == len(arrays) - 1
    assert all(state == "COMPLETED" for _, _, state in waves)
    # every placeholder was replaced by the real id of its task
    assert all(r["job_id"].split("_")[0] in arrays for t in summary["trials"] for r in t["runs"])


def test_a_failed_task_waits_for_resubmit_and_the_sweep_completes(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "flaky.yaml", name="flaky", slurm=SLURM,
                          max_restarts=1, searcher={"max_trials": 4}, data={"fail_once_trial": 2})
    root = tmp_path / "runs"
    sweep(config, root)

    def failed_and_waiting(summary):
        trials = {t["id"]: t for t in summary["trials"]}
        others_done = all(trials[i]["state"] == "COMPLETED" for i in (1, 3, 4))
        return others_done and [(r["state"], r["job_id"]) for r in trials[2]["runs"]] == [
            ("FAILED", trials[2]["runs"][0]["job_id"]), ("SUBMITTED", None)]

    summary = wait_status(root, "flaky", failed_and_waiting, what="trial 2 to fail")
    assert summary["state"] == "RUNNING" and not slurm("squeue", "-h").strip()  # nothing resubmits it by itself
    done = cli("status", "flaky", "--root", str(root))
    assert "wait" in done.stderr and "sweep --resubmit flaky" in done.stderr
    followed = cli("logs", "flaky", "2", "--root", str(root), "--follow", timeout=60)  # returns: nothing will run
    assert followed.returncode == 0 and "its retry waits for `hpo-slurm sweep --resubmit flaky`" in followed.stderr
    done = cli("sweep", "--resubmit", "flaky", "--root", str(root))
    assert done.returncode == 0 and "resubmitted 1 run (t2-r2)" in done.stderr, done.stderr
    summary = wait_status(root, "flaky", finished)
    trials = {t["id"]: t for t in summary["trials"]}
    assert summary["state"] == "COMPLETED" and trials[2]["state"] == "COMPLETED" and trials[2]["restarts"] == 1
    assert [r["state"] for r in trials[2]["runs"]] == ["FAILED", "SUCCEEDED"]
    done = cli("sweep", "--resubmit", "flaky", "--root", str(root))
    assert done.returncode == 0 and "nothing to resubmit" in done.stderr


def _reference(quadratic: Path, source: str, root: Path, **changes) -> Dict[int, float]:
    """Best metrics of the same search run uninterrupted by local processes."""
    config = write_config(quadratic / source, quadratic / "reference.yaml", name="reference",
                          **{**changes, "data": {"sleep_per_unit": 0.0}})
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=300)
    assert done.returncode == 0, done.stderr
    return {t["id"]: t["best_metric"] for t in status(root, "reference")["trials"]}


def test_preempted_tasks_requeue_resume_and_match_an_unpreempted_search(quadratic, tmp_path):
    changes = dict(resources={"slots_per_trial": 1}, searcher={"max_trials": 4, "max_concurrent_trials": 4})
    root = tmp_path / "runs"
    expected = _reference(quadratic, "random.yaml", root, **changes)
    config = write_config(quadratic / "random.yaml", quadratic / "preempted.yaml", name="preempted",
                          slurm=SLURM, data={"sleep_per_unit": 0.25}, **changes)
    sweep(config, root)
    experiment = root / "preempted"

    def all_training() -> bool:
        lines = [p.read_text().count("training") for p in experiment.glob("trials/*/metrics.jsonl")]
        return len(lines) == 4 and min(lines) >= 2

    deadline = time.monotonic() + 90
    while not all_training():
        assert time.monotonic() < deadline, "the trials did not start training"
        time.sleep(0.5)
    slurm("sbatch", "-p", "urgent", "--gres=gpu:4", "--mem=100M", "-J", "urgent-preemptor", "--wrap", "sleep 3")
    summary = wait_status(root, "preempted", finished, timeout=180)
    trials = {t["id"]: t for t in summary["trials"]}
    assert summary["state"] == "COMPLETED"
    assert all(t["restarts"] == 0 and t["preemptions"] >= 1 and len(t["runs"]) == 1 for t in trials.values())
    assert all(t["time_limits"] == 0 for t in trials.values())  # Slurm recorded the preemption
    for trial in trials.values():
        run = trial["runs"][0]
        tries = attempts(experiment, run["run_id"])
        assert len(tries) >= 2 and tries[-1]["restart_count"] >= 1  # requeued under the same job id
        assert {f"{a['array_job_id']}_{a['array_task_id']}" for a in tries} == {run["job_id"]}
    assert {i: t["best_metric"] for i, t in trials.items()} == expected


def test_at_the_time_limit_warning_a_task_requeues_itself_and_resumes(quadratic, tmp_path):
    changes = dict(searcher={"max_length": {"batches": 40}})
    root = tmp_path / "runs"
    expected = _reference(quadratic, "single.yaml", root, **changes)
    config = write_config(quadratic / "single.yaml", quadratic / "timed.yaml", name="timed",
                          slurm={**SLURM, "time": 1, "signal_delay": 10}, data={"sleep_per_unit": 0.25}, **changes)
    sweep(config, root)
    experiment = root / "timed"
    metrics = experiment / "trials" / "1" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.read_text().count("training") >= 2):
        assert time.monotonic() < deadline, "the trial did not start training"
        time.sleep(0.3)
    job_id = status(root, "timed")["trials"][0]["runs"][0]["job_id"]
    slurm("scancel", "--batch", "--signal=USR2", job_id)  # what Slurm sends signal_delay before the limit
    summary = wait_status(root, "timed", finished, timeout=120)
    (trial,) = summary["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 0 and len(trial["runs"]) == 1
    assert (trial["time_limits"], trial["preemptions"]) == (1, 0)  # a requeue at the time limit is no preemption
    assert trial["best_metric"] == expected[1]
    tries = attempts(experiment, "t1-r1")
    assert len(tries) >= 2 and tries[1]["restart_count"] == 1
    log = "".join(p.read_text() for p in (experiment / "runs" / "t1-r1").glob("*_log.out"))
    assert "stopped (time_limit): requeued job" in log


def test_a_grid_sweep_without_max_length_trains_each_trial_its_own_length(tmp_path):
    """Determined 0.38's grid without max_length, as arrays: every task's spec has no target
    (target_length 0), each trial trains as long as its code decides, and its task's return with a
    validation completes it."""
    import shutil

    import yaml

    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(Path(__file__).resolve().parent / "trials" / "own_length.py", model / "train.py")
    config = model / "open.yaml"
    config.write_text(yaml.safe_dump({
        "name": "open", "entrypoint": "python3 train.py", "max_restarts": 0, "data": {"own_length": 16},
        "hyperparameters": {"lr": {"type": "double", "minval": 0.05, "maxval": 0.15, "count": 3},
                            "layers": {"type": "int", "minval": 1, "maxval": 2, "count": 2}},
        "searcher": {"name": "grid", "metric": "validation_loss"},
        "resources": {"slots_per_trial": 0}, "slurm": SLURM}))
    root = tmp_path / "runs"
    sweep(config, root)
    summary = wait_status(root, "open", finished)
    assert summary["state"] == "COMPLETED" and len(summary["trials"]) == 6
    for trial in summary["trials"]:
        own = 16 + 8 * trial["hparams"]["layers"]
        assert trial["state"] == "COMPLETED" and trial["length_done"] == own, trial
        assert [(r["to_length"], r["state"]) for r in trial["runs"]] == [(0, "SUCCEEDED")], trial
    manifest = json.loads((root / "open" / "jobs" / "array-0" / "manifest.json").read_text())
    assert {spec["target_length"] for spec in manifest["specs"]} == {0}
