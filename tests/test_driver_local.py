"""Whole searches on the local executor: real processes, the real command line, real files."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
from pathlib import Path

import pytest

from driver_helpers import (
    cli, copy_example, kill_all_trials, launch_slowed, launch_with_kills, metric_lines, start_cli, status,
    trial_processes, wait_for,
    write_config,
)

QUADRATIC_CONFIGS = ["single", "grid", "random", "adaptive", "async_halving", "pbt", "function"]


@pytest.fixture
def quadratic(tmp_path):
    return copy_example("quadratic", tmp_path)


def launch(config: Path, root: Path, *extra: str, timeout: float = 240):
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", *extra, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def db_rows(experiment_dir: Path, sql: str):
    conn = sqlite3.connect(f"file:{experiment_dir / 'experiment.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("name", QUADRATIC_CONFIGS)
def test_every_quadratic_config_completes(quadratic, tmp_path, name):
    root = tmp_path / "runs"
    launch(quadratic / f"{name}.yaml", root)
    experiment = next(root.iterdir())
    summary = status(root, experiment.name)
    assert summary["state"] == "COMPLETED"
    assert summary["progress"] == pytest.approx(1.0)
    assert summary["driver"]["alive"] is False
    assert summary["best"] is not None and summary["best"]["metric"] < 1.0
    trials = summary["trials"]
    assert trials and all(t["state"] in ("COMPLETED", "STOPPED_EARLY") for t in trials)
    assert any(t["state"] == "COMPLETED" for t in trials)
    for t in trials:
        assert all(r["state"] == "SUCCEEDED" for r in t["runs"]), t
    # every reported line was ingested exactly once
    assert db_rows(experiment, "SELECT COUNT(*) FROM metrics")[0][0] == metric_lines(experiment)


def test_preview_plan_matches_what_launch_trains(quadratic, tmp_path):
    preview = cli("preview", str(quadratic / "adaptive.yaml"), "--json")
    assert preview.returncode == 0, preview.stderr
    plan = {row["length"]: row["trials"] for row in json.loads(preview.stdout)["plan"]}
    root = tmp_path / "runs"
    launch(quadratic / "adaptive.yaml", root)
    trials = status(root, "quadratic-adaptive")["trials"]
    ended = {}
    for t in trials:
        ended[t["length_done"]] = ended.get(t["length_done"], 0) + 1
    assert sum(ended.values()) == sum(plan.values())
    assert max(ended) == max(plan)


def test_sigterm_is_a_preemption_and_the_trial_resumes_exactly(quadratic, tmp_path):
    slow = write_config(quadratic / "single.yaml", quadratic / "slow.yaml", name="slow",
                        data={"sleep_per_unit": 0.05})
    reference = write_config(quadratic / "single.yaml", quadratic / "reference.yaml", name="reference",
                             data={"sleep_per_unit": 0.0})
    root = tmp_path / "runs"
    launch(reference, root)
    driver = start_cli("launch", str(slow), "--root", str(root), "--executor", "local")
    experiment = root / "slow"
    metrics_file = experiment / "trials" / "1" / "metrics.jsonl"
    for run in ("t1-r1", "t1-r2"):
        pids = wait_for(lambda: trial_processes(experiment), what="a running trial")
        # preempt once the run has trained a little past where it started
        wait_for(lambda: metrics_file.exists() and metrics_file.read_text().count(f'"run": "{run}"') >= 2,
                 what=f"run {run} to report training")
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not set(pids) & set(trial_processes(experiment)), what="the trial to stop")
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err[-3000:]
    trial = status(root, "slow")["trials"][0]
    assert trial["state"] == "COMPLETED"
    assert trial["restarts"] == 0
    assert trial["preemptions"] == 2
    assert [r["state"] for r in trial["runs"]] == ["PREEMPTED", "PREEMPTED", "SUCCEEDED"]
    expected = status(root, "reference")["trials"][0]["best_metric"]
    assert trial["best_metric"] == expected  # bit-for-bit: the resumed curve is the uninterrupted one


def test_driver_killed_at_random_moments_loses_and_duplicates_nothing(quadratic, tmp_path):
    config = write_config(quadratic / "adaptive.yaml", quadratic / "crashy.yaml", name="crashy",
                          data={"sleep_per_unit": 0.1})
    root = tmp_path / "runs"
    experiment = root / "crashy"
    rng = random.Random(1234)
    # First exactly between recording runs and submitting them, and right after submitting (before
    # the job ids are recorded); then SIGKILL at random moments.
    crash_points = ["before_submit:2", "after_submit:2", "before_submit:1", "after_submit:1"]
    kills = launch_with_kills(config, root, "crashy", crash_points, 12, rng)
    assert kills >= 10, f"the search ended after only {kills} kills"
    summary = status(root, "crashy")
    assert summary["state"] == "COMPLETED"
    assert len(summary["trials"]) == 16
    for t in summary["trials"]:
        assert t["state"] in ("COMPLETED", "STOPPED_EARLY"), t
        assert t["restarts"] == 0, t
        # no rung run twice: each run trains a distinct length range, and succeeded
        spans = [(r["from_length"], r["to_length"]) for r in t["runs"]]
        assert len(spans) == len(set(spans)), t
        assert all(r["state"] == "SUCCEEDED" for r in t["runs"]), t
    # each job started exactly once: one attempt line per run folder
    for attempts in experiment.glob("runs/*/attempts.jsonl"):
        assert len(attempts.read_text().splitlines()) == 1, attempts
    jobs = [r["job_id"] for t in summary["trials"] for r in t["runs"]]
    assert len(jobs) == len(set(jobs))
    assert db_rows(experiment, "SELECT COUNT(*) FROM metrics")[0][0] == metric_lines(experiment)


def test_second_driver_is_refused_and_a_stale_lock_is_taken_over(quadratic, tmp_path):
    config = write_config(quadratic / "single.yaml", quadratic / "long.yaml", name="long",
                          data={"sleep_per_unit": 0.05})
    root = tmp_path / "runs"
    first = start_cli("launch", str(config), "--root", str(root), "--executor", "local")
    experiment = root / "long"
    wait_for(lambda: trial_processes(experiment), what="a running trial")
    second = cli("resume", "long", "--root", str(root))
    assert second.returncode == 2
    assert "a driver is already running" in second.stderr and "Traceback" not in second.stderr
    assert status(root, "long")["driver"]["alive"] is True
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert status(root, "long")["driver"]["alive"] is False
    resumed = cli("resume", "long", "--root", str(root), timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert status(root, "long")["state"] == "COMPLETED"


def test_a_trial_that_always_crashes_is_errored_after_max_restarts(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "crash.yaml", name="crash",
                          max_restarts=1, data={"fail_once_trial": 2},
                          searcher={"max_trials": 3})
    broken = write_config(quadratic / "single.yaml", quadratic / "broken.yaml", name="broken",
                          max_restarts=2, data={"fail_always": True})
    root = tmp_path / "runs"
    launch(config, root)
    trials = {t["id"]: t for t in status(root, "crash")["trials"]}
    assert trials[2]["state"] == "COMPLETED" and trials[2]["restarts"] == 1
    assert [r["state"] for r in trials[2]["runs"]] == ["FAILED", "SUCCEEDED"]
    done = cli("launch", str(broken), "--root", str(root), "--executor", "local", timeout=120)
    assert done.returncode == 1, done.stderr  # the search ended ERRORED
    assert done.stderr.strip().splitlines()[-1] == "experiment broken: ERRORED"
    summary = status(root, "broken")
    assert summary["state"] == "ERRORED"
    (trial,) = summary["trials"]
    assert trial["state"] == "ERRORED"
    assert len(trial["runs"]) == 3 and all(r["state"] == "FAILED" for r in trial["runs"])
    assert "fail_always" in trial["message"] or "status 1" in trial["message"]


def test_scripts_that_misbehave_get_a_clear_state(quadratic, tmp_path):
    root = tmp_path / "runs"
    silent = write_config(quadratic / "single.yaml", quadratic / "silent.yaml", name="silent",
                          max_restarts=0, data={"never_report": True})
    missing = write_config(quadratic / "single.yaml", quadratic / "missing.yaml", name="missing",
                           max_restarts=0, entrypoint="python3 no_such_script.py")
    invalid = write_config(quadratic / "random.yaml", quadratic / "invalid.yaml", name="invalid",
                           data={"invalid_hp_if_layers_above": 4})
    for config, code in ((silent, 1), (missing, 1), (invalid, 0)):  # 1: the search ended ERRORED
        done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=180)
        assert done.returncode == code, done.stderr
    (trial,) = status(root, "silent")["trials"]
    assert trial["state"] == "ERRORED" and "without reporting validation" in trial["message"]
    (trial,) = status(root, "missing")["trials"]
    assert trial["state"] == "ERRORED" and "exited with status 2" in trial["message"]
    invalid_summary = status(root, "invalid")
    rejected = [t for t in invalid_summary["trials"] if t["hparams"]["layers"] > 4]
    assert rejected and all(t["state"] == "ERRORED" and "invalid hyperparameters" in t["message"] for t in rejected)
    accepted = [t for t in invalid_summary["trials"] if t["hparams"]["layers"] <= 4]
    assert len(accepted) == 8  # the searcher replaced every rejected configuration
    assert invalid_summary["state"] == "COMPLETED"


def test_malformed_metric_lines_and_deleted_checkpoints_do_not_stop_the_driver(quadratic, tmp_path):
    config = write_config(quadratic / "adaptive.yaml", quadratic / "messy.yaml", name="messy",
                          data={"sleep_per_unit": 0.01})
    root = tmp_path / "runs"
    process = start_cli("launch", str(config), "--root", str(root), "--executor", "local")
    experiment = root / "messy"
    metrics = wait_for(lambda: list(experiment.glob("trials/*/metrics.jsonl")), what="a metrics file")
    with open(metrics[0], "a") as handle:
        handle.write('{"kind": "validation", "length": "four"}\nnot json at all\n')
    checkpoints = wait_for(lambda: list(experiment.glob("trials/*/checkpoints")), what="a checkpoint folder")
    import shutil

    shutil.rmtree(checkpoints[0], ignore_errors=True)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    assert status(root, "messy")["state"] == "COMPLETED"
    log = (experiment / "driver.log").read_text()
    assert "skipped a malformed metrics line" in log


def test_stop_cancels_running_work(quadratic, tmp_path):
    root = tmp_path / "runs"
    done = launch_slowed(quadratic / "random.yaml", "stoppable", root, sleep_per_unit=0.1)
    assert done.returncode == 0, done.stderr
    experiment = root / "stoppable"
    wait_for(lambda: trial_processes(experiment), what="running trials")
    stopped = cli("stop", "stoppable", "--root", str(root), timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not trial_processes(experiment), timeout=30, what="trials to end")
    summary = status(root, "stoppable")
    assert summary["state"] == "STOPPED"
    assert summary["driver"]["alive"] is False
    assert all(t["state"] in ("STOPPED_EARLY", "COMPLETED") for t in summary["trials"])
    assert any(r["state"] == "CANCELLED" for t in summary["trials"] for r in t["runs"])
    kill_all_trials(experiment)


def test_user_mistakes_exit_2_with_one_line(quadratic, tmp_path):
    root = tmp_path / "runs"
    bad = quadratic / "bad.yaml"
    bad.write_text((quadratic / "single.yaml").read_text().replace("searcher:", "searchr:"))
    for args in (
        ("launch", str(bad), "--root", str(root)),
        ("launch", str(quadratic / "nope.yaml"), "--root", str(root)),
        ("launch", str(quadratic / "single.yaml"), "--root", str(root), "--name", "two\nlines"),
        ("status", "no-such-experiment", "--root", str(root)),
        ("resume", "no-such-experiment", "--root", str(root)),
        ("logs", "no-such-experiment", "1", "--root", str(root)),
    ):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert not root.exists() or not any(root.iterdir())  # nothing half-created


def test_usage_mistakes_and_unusable_roots_are_one_line_with_exit_2(quadratic, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    single = str(quadratic / "single.yaml")
    cases = [
        (("launch", single, "--executor", "bogus"), {}, "Invalid value for '--executor'"),
        (("logs", "x", "abc"), {}, "Invalid value for 'TRIAL_ID'"),
        (("nosuchcommand",), {}, "No such command 'nosuchcommand'"),
        (("launch", single, "--root", str(a_file / "sub"), "--executor", "local"), {},
         f"cannot create the experiments folder {a_file / 'sub'}: Not a directory"),
        (("launch", single, "--executor", "local"), {"HPO_SLURM_ROOT": str(a_file)}, f"$HPO_SLURM_ROOT {a_file}: not a folder"),
        (("status",), {"HPO_SLURM_ROOT": str(a_file)}, f"$HPO_SLURM_ROOT {a_file}: not a folder"),
        (("status", "../x/y", "--root", str(tmp_path)), {}, "no experiment named '../x/y'"),
    ]
    for args, env, message in cases:
        done = cli(*args, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("hpo-slurm: "), done.stderr
        assert message in done.stderr, (args, done.stderr)
    assert a_file.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "quadratic"]


def test_launch_twice_with_one_name_is_refused(quadratic, tmp_path):
    root = tmp_path / "runs"
    launch(quadratic / "single.yaml", root)
    again = cli("launch", str(quadratic / "single.yaml"), "--root", str(root), "--executor", "local")
    assert again.returncode == 2 and "already exists" in again.stderr
