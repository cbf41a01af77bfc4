"""A pool of worker jobs (``slurm.pool``) on the real local Slurm cluster: an adaptive search's trials and
rung continuations run through a couple of worker jobs, through a driver SIGKILL and a preemption of the
workers by the urgent partition, with every validation equal to the same search run one job per run.

Needs `scripts/local-slurm.sh up` (CI runs it). Marked `slurm`.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from driver_helpers import cli, copy_example, start_cli, status, wait_for, write_config
from slurm_cluster import require_cluster, sacct_rows, slurm, wait_until_idle

pytestmark = pytest.mark.slurm

SLURM = {"poll_interval": 1, "partition": "debug", "mem": "500M", "time": 10}


@pytest.fixture(autouse=True)
def cluster():
    require_cluster()
    wait_until_idle()
    yield
    subprocess.run(["scancel", "--name", "urgent-preemptor"], capture_output=True)
    for job_id, _, state in sacct_rows("hpo."):
        if state in ("PENDING", "RUNNING", "REQUEUED"):
            subprocess.run(["scancel", job_id], capture_output=True)


def validations(experiment: Path):
    """(trial, length) -> the validation metrics recorded there; a length validated twice fails."""
    conn = sqlite3.connect(experiment / "experiment.db")
    rows = list(conn.execute("SELECT trial_id, length, metrics FROM metrics WHERE kind = 'validation'"))
    conn.close()
    found = {(trial, length): metrics for trial, length, metrics in rows}
    assert len(found) == len(rows), "a length validated twice"
    return found


def job_prefix(experiment: Path) -> str:
    conn = sqlite3.connect(experiment / "experiment.db")
    uid = conn.execute("SELECT uid FROM experiment").fetchone()[0]
    conn.close()
    return f"hpo.{uid[:8]}."


def ended_runs(experiment: Path):
    """Run id -> the workers whose ended/ folder names it."""
    found = {}
    for path in experiment.glob("pool/workers/*/ended/*.json"):
        found.setdefault(path.stem, []).append(path.parent.parent.name)
    return found


def worker_holding_a_trained_run(experiment: Path) -> bool:
    """Some worker holds a run that has trained a little and has a good part of its work left."""
    for alive in experiment.glob("pool/workers/*/alive.json"):
        run = json.loads(alive.read_text()).get("run")
        if not run:
            continue
        spec = json.loads((experiment / "runs" / run / "spec.json").read_text())
        metrics = experiment / "trials" / str(spec["trial_id"]) / "metrics.jsonl"
        trained = [json.loads(line)["length"] for line in metrics.read_text().splitlines()
                   if f'"run": "{run}"' in line] if metrics.exists() else []
        if len(trained) >= 2 and spec["target_length"] - max(trained) >= 12:
            return True
    return False


def test_a_pooled_adaptive_search_survives_a_driver_kill_and_preempted_workers(tmp_path):
    model = copy_example("quadratic", tmp_path)
    reference = write_config(model / "adaptive.yaml", model / "reference.yaml", name="reference",
                             resources={"slots_per_trial": 1})
    pooled = write_config(model / "adaptive.yaml", model / "pooled.yaml", name="pooled",
                          resources={"slots_per_trial": 1}, data={"sleep_per_unit": 0.25},
                          slurm={**SLURM, "pool": {"workers": 2, "idle_timeout": 30}})
    root = tmp_path / "runs"
    done = cli("launch", str(reference), "--root", str(root), "--executor", "local", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    experiment = root / "pooled"

    driver = start_cli("launch", str(pooled), "--root", str(root), "--executor", "slurm")
    wait_for(lambda: len(ended_runs(experiment)) >= 3, timeout=300, interval=0.5, what="workers to finish 3 runs")
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    time.sleep(2)  # the workers carry on without a driver
    driver = start_cli("resume", "pooled", "--root", str(root))
    # take every GPU with an urgent job while the workers hold runs that have trained a little
    wait_for(lambda: worker_holding_a_trained_run(experiment), timeout=300, interval=0.3, what="a run to train")
    slurm("sbatch", "-p", "urgent", "--gres=gpu:4", "-J", "urgent-preemptor", "-o", "/dev/null", "--wrap", "sleep 3")
    out, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err[-3000:]

    summary = status(root, "pooled")
    assert summary["state"] == "COMPLETED" and len(summary["trials"]) == 16
    trials = summary["trials"]
    assert all(t["restarts"] == 0 for t in trials), [(t["id"], t["restarts"], t["runs"]) for t in trials]
    assert sum(t["preemptions"] for t in trials) >= 1
    # promotions may come in another order than in the reference search (asynchronous ASHA), so the two
    # need not train the same lengths; wherever both trained a trial to a length, the metric is the same
    pooled_values, reference_values = validations(experiment), validations(root / "reference")
    common = pooled_values.keys() & reference_values.keys()
    assert len(common) >= 12, sorted(common)
    assert {k: pooled_values[k] for k in common} == {k: reference_values[k] for k in common}
    runs = [r for t in trials for r in t["runs"]]
    assert any(r["from_length"] > 0 for r in runs if r["state"] == "SUCCEEDED"), "no rung continuation"
    assert all(r["job_id"] == f"pool:{r['run_id']}" for r in runs)
    # every run started once, on one worker; none ran twice
    for path in experiment.glob("runs/*/attempts.jsonl"):
        assert len(path.read_text().splitlines()) == 1, path
    assert all(len(workers) == 1 for workers in ended_runs(experiment).values())
    attempted = {path.parent.name for path in experiment.glob("runs/*/attempts.jsonl")}
    assert attempted == set(ended_runs(experiment)), attempted ^ set(ended_runs(experiment))
    # a handful of worker jobs did all the work: no job per run
    jobs = sacct_rows(job_prefix(experiment))
    assert jobs and all(".pool.w" in name for _, name, _ in jobs), jobs
    assert len(jobs) <= 6 < len(runs), (len(jobs), len(runs))
    assert "resumed:" in (experiment / "driver.log").read_text()


def test_a_worker_at_its_time_limit_hands_its_run_on_to_a_new_worker(tmp_path):
    """Worker jobs of 2 minutes (the time-limit warning 30 s before the end) and a trial that needs
    about 100 s of training: the run on the first worker stops at the warning with a checkpoint, its
    worker takes no more work and ends, and the trial finishes on a new worker, counted as a time limit
    (not a preemption, not a restart)."""
    model = copy_example("quadratic", tmp_path)
    config = write_config(model / "single.yaml", model / "timed.yaml", name="timed",
                          data={"sleep_per_unit": 1.0}, searcher={"max_length": {"batches": 100}},
                          slurm={**SLURM, "signal_delay": 30, "pool": {"workers": 1, "time": 2, "idle_timeout": 20}})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    experiment = root / "timed"
    (trial,) = status(root, "timed")["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 0 and trial["preemptions"] == 0, trial
    states = [r["state"] for r in trial["runs"]]
    assert states[-1] == "SUCCEEDED" and "TIMEOUT" in states and trial["time_limits"] == states.count("TIMEOUT"), states
    for run in trial["runs"][:-1]:
        result = json.loads((experiment / "runs" / run["run_id"] / "result.json").read_text())
        assert result["stop_reason"] == "time_limit", result
    # each worker that reached its time limit ran nothing after the run it stopped
    ended = ended_runs(experiment)
    workers = [w for r in trial["runs"] for w in ended[r["run_id"]]]
    assert len(set(workers)) == len(workers) >= 2, ended
    validations(experiment)  # no length validated twice
    # every run went on from the last one's checkpoint: no length trained twice
    trained = [json.loads(line)["length"] for line in (experiment / "trials" / "1" / "metrics.jsonl").read_text()
               .splitlines() if '"training"' in line]
    assert trained == sorted(set(trained)) and trained[-1] == 100, trained
