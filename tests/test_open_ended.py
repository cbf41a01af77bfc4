"""Searches without ``searcher.max_length`` (Determined 0.38's single, random and grid): every trial
trains as long as its own code decides (its runs' ``RunSpec.target_length`` is 0, NO_TARGET), its run
is done when its job returns, and its last validation is what the searcher is told. Real searches on
the local executor, with preemptions, a driver killed and resumed, and a job that never validates;
the judge's table, status, preview, simulate and sweep over such searches."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from driver_helpers import cli, launch_with_kills, start_cli, status, trial_processes, wait_for
from hpo_slurm.config.schema import NO_TARGET, load_config
from hpo_slurm.core.protocol import RunResult, RunStatus, StopReason
from hpo_slurm.core.types import RunState
from hpo_slurm.engine.judge import judge, reached_target
from hpo_slurm.engine.timefit import fitted_time_minutes
from hpo_slurm.executors.base import JobState, JobStatus

OWN_LENGTH = Path(__file__).resolve().parent / "trials" / "own_length.py"  # trains data.own_length + 8 x layers

BASE: Dict[str, Any] = {
    "hyperparameters": {"lr": 0.1, "layers": 2},
    "searcher": {"name": "single", "metric": "validation_loss", "smaller_is_better": True},
    "entrypoint": "python3 train.py",
    "max_restarts": 0,
    "reproducibility": {"experiment_seed": 7},
    "resources": {"slots_per_trial": 0},
    "data": {"own_length": 24},
    "slurm": {"time": 10, "cpus_per_task": 1, "mem": "1G"},
}
RANDOM_SPACE = {"lr": {"type": "double", "minval": 0.01, "maxval": 0.3},
                "layers": {"type": "int", "minval": 1, "maxval": 4}}
GRID_SPACE = {"lr": {"type": "double", "minval": 0.05, "maxval": 0.15, "count": 3},
              "layers": {"type": "int", "minval": 1, "maxval": 2, "count": 2}}


@pytest.fixture
def model(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(OWN_LENGTH, folder / "train.py")
    return folder


def write(model: Path, name: str, **changes: Any) -> Path:
    """A config in the model folder: BASE with ``changes`` (sections merge; hyperparameters are
    replaced), named ``name``."""
    data = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "hyperparameters":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = model / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **data}, sort_keys=False))
    return path


def random_config(model: Path, name: str, max_trials: int = 4, **data: Any) -> Path:
    return write(model, name, hyperparameters=RANDOM_SPACE, data={"own_length": 16, **data},
                 searcher={"name": "random", "max_trials": max_trials, "max_concurrent_trials": 2})


def launch(config: Path, root: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def rows(experiment: Path, sql: str) -> List[tuple]:
    conn = sqlite3.connect(f"file:{experiment / 'experiment.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def validations(experiment: Path, trial_id: int) -> List[Dict[str, Any]]:
    path = experiment / "trials" / str(trial_id) / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line["kind"] == "validation"]


def searcher_validations(experiment: Path) -> Dict[int, List[Any]]:
    """Trial id -> the (length, metric) the searcher was told, from its event log."""
    told = {}
    for (args,) in rows(experiment, "SELECT args FROM searcher_events WHERE kind = 'validation' ORDER BY seq"):
        trial_id, length, metric = json.loads(args)
        assert trial_id not in told, f"trial {trial_id} was told twice"
        told[trial_id] = [length, metric]
    return told


def own_length(hparams: Dict[str, Any], own: int) -> int:
    return own + 8 * hparams["layers"]


def check_completed(root: Path, name: str, own: int) -> Dict[str, Any]:
    """The search ended COMPLETED; every trial trained its own length, COMPLETED, and the searcher
    was told its last validation (not its best) at NO_TARGET."""
    experiment = root / name
    summary = status(root, name)
    assert summary["state"] == "COMPLETED" and summary["progress"] == pytest.approx(1.0)
    told = searcher_validations(experiment)
    for t in summary["trials"]:
        length = own_length(t["hparams"], own)
        assert t["state"] == "COMPLETED", t
        assert (t["length_done"], t["length_trained"], t["target_length"]) == (length, length, None)
        assert all(r["to_length"] == NO_TARGET for r in t["runs"]) and t["runs"][-1]["state"] == "SUCCEEDED", t
        last = validations(experiment, t["id"])[-1]
        assert last["length"] == length
        assert told[t["id"]] == [NO_TARGET, last["metrics"]["validation_loss"]] == [0, t["latest_metric"]]
        assert t["best_metric"] < t["latest_metric"]  # its best was an earlier validation
    assert sorted(told) == sorted(t["id"] for t in summary["trials"])
    for spec in experiment.glob("runs/*/spec.json"):
        assert json.loads(spec.read_text())["target_length"] == 0, spec
    return summary


# ---- whole searches on the local executor -----------------------------------------------------------

def test_single_and_random_train_as_long_as_their_code_decides(model, tmp_path):
    root = tmp_path / "runs"
    launch(write(model, "single"), root)
    summary = check_completed(root, "single", own=24)
    (t,) = summary["trials"]
    assert t["length_done"] == 40 and [r["state"] for r in t["runs"]] == ["SUCCEEDED"]
    assert summary["best"]["length"] == 32  # the best validation came before the last one
    launch(random_config(model, "random"), root)
    summary = check_completed(root, "random", own=16)
    assert len(summary["trials"]) == 4 and len({t["length_done"] for t in summary["trials"]}) > 1
    text = cli("status", "random", "--root", str(root), "--trials", "all")
    assert text.returncode == 0, text.stderr
    assert "→0" not in text.stdout and " 0%" not in text.stdout and "progress 100%" in text.stdout
    best = cli("best", "random", "--root", str(root), "--json")
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["checkpoint"] is not None
    from hpo_slurm.core.layout import ExperimentLayout
    from hpo_slurm.dashboard.experiment_reads import Experiment, detail

    page = detail(Experiment.at(ExperimentLayout(root / "random")))
    assert page["max_length"] is None and page["rungs"] == []  # no rung lines: trials stop anywhere


def test_preempted_runs_resume_open_ended_from_their_checkpoint(model, tmp_path):
    root = tmp_path / "runs"
    launch(write(model, "reference", data={"own_length": 40}), root)
    slow = write(model, "slow", data={"own_length": 40, "sleep_per_unit": 0.1})
    driver = start_cli("launch", str(slow), "--root", str(root), "--executor", "local")
    experiment = root / "slow"
    metrics = experiment / "trials" / "1" / "metrics.jsonl"
    for run in ("t1-r1", "t1-r2"):
        pids = wait_for(lambda: trial_processes(experiment), what="a running trial")
        if run == "t1-r1":
            active = cli("status", "slow", "--root", str(root))
            assert "t1-r1" in active.stdout and "0→open-ended" in active.stdout, active.stdout  # no target
        # preempt once the run has validated (and checkpointed) past where it started
        wait_for(lambda: metrics.exists() and sum(
            f'"run": "{run}"' in line and '"validation"' in line for line in metrics.read_text().splitlines()) >= 1,
            timeout=60, what=f"run {run} to validate")
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not set(pids) & set(trial_processes(experiment)), what="the trial to stop")
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err[-3000:]
    summary = check_completed(root, "slow", own=40)
    (t,) = summary["trials"]
    assert (t["restarts"], t["preemptions"]) == (0, 2)
    assert [r["state"] for r in t["runs"]] == ["PREEMPTED", "PREEMPTED", "SUCCEEDED"]
    starts = [r["from_length"] for r in t["runs"]]
    assert starts[0] == 0 and 0 < starts[1] < starts[2] < 56  # each resumed past its last validation
    reference = status(root, "reference")["trials"][0]
    # bit-for-bit: the resumed curve is the uninterrupted one, and so is the result the searcher got
    assert (t["latest_metric"], t["best_metric"]) == (reference["latest_metric"], reference["best_metric"])


def test_a_driver_killed_mid_search_resumes_and_decides_the_same(model, tmp_path):
    root = tmp_path / "runs"
    launch(random_config(model, "reference", max_trials=6), root)
    config = random_config(model, "crashy", max_trials=6, sleep_per_unit=0.04)
    rng = random.Random(99)
    # between recording a run and submitting it, and right after submitting it (a trial's end was
    # told to the searcher in the tick before: that event must be replayed, not lost); then SIGKILLs
    crash_points = ["before_submit:2", "after_submit:2", "before_submit:1"]
    kills = launch_with_kills(config, root, "crashy", crash_points, 7, rng)
    assert kills >= 3, f"the search ended after only {kills} kills"
    summary = check_completed(root, "crashy", own=16)
    for t in summary["trials"]:
        assert t["restarts"] == 0 and all(r["state"] == "SUCCEEDED" for r in t["runs"]), t
    jobs = [r["job_id"] for t in summary["trials"] for r in t["runs"]]
    assert len(jobs) == len(set(jobs))
    # the same trials, each with the same result, as the search no one interrupted
    reference = {t["id"]: (t["hparams"], t["latest_metric"]) for t in status(root, "reference")["trials"]}
    assert {t["id"]: (t["hparams"], t["latest_metric"]) for t in summary["trials"]} == reference
    # the searcher a resume restores (its snapshot, then the events logged after it) is the one that
    # every logged event, replayed from the start, gives
    from hpo_slurm.engine.searcher_log import load_searcher
    from hpo_slurm.experiment.store import Store
    from hpo_slurm.searchers import make_searcher
    from hpo_slurm.searchers.replay import feed_event

    store = Store.open(root / "crashy" / "experiment.db", readonly=True)
    try:
        restored, _ = load_searcher(load_config(str(root / "crashy" / "config.yaml")), store)
        replayed = make_searcher(load_config(str(root / "crashy" / "config.yaml")))
        for event in store.searcher_events(after=0):
            feed_event(replayed, event["kind"], json.loads(event["args"]))
    finally:
        store.close()
    assert json.dumps(restored.snapshot(), sort_keys=True) == json.dumps(replayed.snapshot(), sort_keys=True)
    assert replayed.is_shutdown


def test_a_job_that_returns_without_validating_fails_with_its_reason(model, tmp_path):
    root = tmp_path / "runs"
    config = write(model, "silent", data={"never_validate": True}, max_restarts=1)
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=180)
    assert done.returncode == 1, done.stderr  # no trial could be trained: ERRORED
    (t,) = status(root, "silent")["trials"]
    assert t["state"] == "ERRORED" and [r["state"] for r in t["runs"]] == ["FAILED", "FAILED"]
    assert t["runs"][0]["reason"] == ("exited without reporting validation (searcher.max_length is not set: "
                                      "a trial's last validation is its result)")
    assert t["message"].startswith("failed 2 times (max_restarts 1); last: exited without reporting validation")
    assert t["length_trained"] == 1 and t["length_done"] == 0


def test_grid_without_max_length_runs_every_point(model, tmp_path):
    root = tmp_path / "runs"
    config = write(model, "grid", hyperparameters=GRID_SPACE, searcher={"name": "grid", "max_concurrent_trials": 3})
    launch(config, root)
    summary = check_completed(root, "grid", own=24)
    assert len(summary["trials"]) == 6


# ---- the judge, time limits, preview, simulate and sweep ---------------------------------------------

def open_run(**fields: Any) -> Dict[str, Any]:
    return {"to_length": NO_TARGET, "from_length": 0, "state": "RUNNING", **fields}


def trial_row(validated: int = 0, closed: int = 0) -> Dict[str, Any]:
    return {"validated_length": validated, "closed": closed}


EXITED = RunResult(RunStatus.EXITED, 0)
DONE = JobStatus(JobState.COMPLETED, 0)


@pytest.mark.parametrize("trial, status, result, expected", [
    (trial_row(40), DONE, EXITED, (RunState.SUCCEEDED, "")),
    (trial_row(0), DONE, EXITED, (RunState.FAILED, "exited without reporting validation (searcher.max_length "
                                                   "is not set: a trial's last validation is its result)")),
    # validated in an earlier run, and its code found nothing more to do
    (trial_row(16), DONE, EXITED, (RunState.SUCCEEDED, "")),
    # validated, then stopped: not done, whatever it validated
    (trial_row(40), DONE, RunResult(RunStatus.STOPPED, 0, StopReason.PREEMPTED), (RunState.PREEMPTED, "preempted")),
    (trial_row(40), JobStatus(JobState.TIMEOUT), None, (RunState.TIMEOUT, "reached its time limit")),
    (trial_row(40, closed=1), DONE, RunResult(RunStatus.STOPPED, 0, StopReason.SEARCH_STOPPED),
     (RunState.CANCELLED, "stopped by the search")),
    (trial_row(40), JobStatus(JobState.FAILED, 1), RunResult(RunStatus.FAILED, 1, message="boom"),
     (RunState.FAILED, "boom")),
])
def test_judge_of_runs_without_a_target(trial, status, result, expected):
    assert judge(open_run(), trial, status, result) == expected


def test_a_run_with_a_target_is_judged_as_before():
    run = {"to_length": 64, "from_length": 0, "state": "RUNNING"}
    assert judge(run, trial_row(64), DONE, EXITED) == (RunState.SUCCEEDED, "")
    assert judge(run, trial_row(32), DONE, EXITED) == (
        RunState.FAILED, "exited without reporting validation at length 64")
    assert reached_target(run, trial_row(64), None) and not reached_target(open_run(), trial_row(64), None)


def test_a_run_without_a_target_gets_the_whole_time_limit():
    earlier = [{"state": "SUCCEEDED", "started_at": 0.0, "ended_at": 60.0, "from_length": 0, "to_length": 100}]
    assert fitted_time_minutes(earlier, 100, 200, 120, 60) < 120
    assert fitted_time_minutes(earlier, 100, NO_TARGET, 120, 60) == 120
    assert fitted_time_minutes(earlier, 100, NO_TARGET, None, 60) is None


def test_preview_says_trials_train_until_their_code_stops(model):
    config = random_config(model, "preview")
    done = cli("preview", str(config), "--json", "--seconds-per-unit", "0.5")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan == {"searcher": "random", "plan": [{"length": None, "trials": 4, "trained": None}],
                    "total_trials": 4, "total_length": None, "unit": "batches", "open_ended": True}
    text = cli("preview", str(config), "--seconds-per-unit", "0.5")
    assert text.returncode == 0, text.stderr
    out = " ".join(text.stdout.split())
    assert "random: 4 trials, each trains until its code stops (no searcher.max_length)" in out
    assert "no total length or GPU-hour estimate" in out and "Estimated" not in out


def test_simulate_refuses_a_search_without_a_length(model, tmp_path):
    root = tmp_path / "sims"
    done = cli("simulate", str(random_config(model, "sim")), "--objective", "hpo_slurm.benchmarks.zero:objective",
               "--root", str(root))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{model / 'sim.yaml'}: searcher.max_length: simulate needs a training length" in done.stderr
    assert not root.exists() or not any(root.iterdir())


def test_a_grid_sweep_without_max_length_plans_its_tasks(model, tmp_path):
    from hpo_slurm.sweep.plan import planned_trials

    config = write(model, "sweep", hyperparameters=GRID_SPACE, searcher={"name": "grid"})
    trials = planned_trials(load_config(str(config)))
    assert len(trials) == 6 and {length for _, _, length in trials} == {NO_TARGET}
    root = tmp_path / "runs"
    done = cli("sweep", str(config), "--root", str(root), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("# array-0 task ") == 6 and not root.exists()
