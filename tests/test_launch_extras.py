"""More of what a user does with launch: GPUs handed out locally, .hpoignore, Ctrl-C then resume,
logs, and the torch example's configs."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from driver_helpers import (
    cli, copy_example, launch_slowed, start_cli, status, trial_processes, wait_for, write_config,
)


@pytest.fixture
def quadratic(tmp_path):
    return copy_example("quadratic", tmp_path)


def test_local_gpus_are_handed_out_one_set_per_concurrent_trial(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "gpus.yaml", name="gpus",
                          resources={"slots_per_trial": 1}, searcher={"max_trials": 4, "max_concurrent_trials": 2},
                          data={"sleep_per_unit": 0.02})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", env={"HPO_SLURM_LOCAL_GPUS": "2"})
    assert done.returncode == 0, done.stderr
    attempts = [json.loads(line) for path in (root / "gpus").glob("runs/*/attempts.jsonl")
                for line in path.read_text().splitlines()]
    assert len(attempts) == 4
    assert {a["cuda_visible_devices"] for a in attempts} == {"0", "1"}


def test_context_copy_honours_hpoignore_and_leaves_out_the_runs_root(quadratic):
    (quadratic / "data.bin").write_bytes(b"x" * 1000)
    (quadratic / "notes").mkdir()
    (quadratic / "notes" / "draft.txt").write_text("private")
    (quadratic / ".hpoignore").write_text("# big files stay home\n*.bin\nnotes/\n")
    root = quadratic / "hpo-runs"  # the runs root inside the model folder must not copy itself
    done = cli("launch", str(quadratic / "single.yaml"), "--root", str(root), "--executor", "local")
    assert done.returncode == 0, done.stderr
    context = root / "quadratic-single" / "context"
    assert (context / "train.py").is_file()
    assert not (context / "data.bin").exists()
    assert not (context / "notes").exists()
    assert not (context / "hpo-runs").exists()


def test_a_pipe_in_the_model_folder_is_left_out_with_a_warning(quadratic, tmp_path):
    os.mkfifo(quadratic / "events.fifo")
    root = tmp_path / "runs"
    done = cli("launch", str(quadratic / "single.yaml"), "--root", str(root), "--executor", "local")
    assert done.returncode == 0, done.stderr
    assert "warning: the model folder copy leaves out what is not a file, folder or link: events.fifo" in done.stderr
    context = root / "quadratic-single" / "context"
    assert (context / "train.py").is_file() and not (context / "events.fifo").exists()


def test_resume_detach_while_a_driver_runs_is_refused(quadratic, tmp_path):
    root = tmp_path / "runs"
    started = launch_slowed(quadratic / "single.yaml", "slow", root, sleep_per_unit=0.2)
    assert started.returncode == 0, started.stderr
    assert "driver started in the background" in started.stderr
    again = cli("resume", "slow", "--root", str(root), "--detach")
    assert again.returncode == 2, again.stderr
    assert again.stderr.startswith("hpo-slurm: the driver did not start: slow: a driver is already running (pid ")
    assert cli("stop", "slow", "--root", str(root)).returncode == 0
    assert status(root, "slow")["state"] == "STOPPED"


def test_ctrl_c_leaves_trials_running_and_resume_finishes(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "interrupted.yaml", name="interrupted",
                          searcher={"max_trials": 2}, data={"sleep_per_unit": 0.15})
    root = tmp_path / "runs"
    experiment = root / "interrupted"
    driver = start_cli("launch", str(config), "--root", str(root), "--executor", "local")
    pids = wait_for(lambda: trial_processes(experiment), what="running trials")
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    assert "hpo-slurm resume interrupted" in err and "Traceback" not in err
    assert set(pids) & set(trial_processes(experiment)), "Ctrl-C on the driver must not stop the trials"
    done = cli("resume", "interrupted", "--root", str(root), timeout=180)
    assert done.returncode == 0, done.stderr
    summary = status(root, "interrupted")
    assert summary["state"] == "COMPLETED"
    assert all(r["state"] == "SUCCEEDED" for t in summary["trials"] for r in t["runs"])
    log = (experiment / "driver.log").read_text()
    assert "started: random search on the local executor" in log
    adopted = re.search(r"resumed: (\d+) live jobs re-adopted \(0 cancels sent again\), (\d+) runs to submit", log)
    assert adopted and int(adopted.group(1)) >= 1 and int(adopted.group(1)) + int(adopted.group(2)) <= 2, log


def test_logs_print_each_run_of_a_trial(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "logged.yaml", name="logged",
                          max_restarts=1, searcher={"max_trials": 2}, data={"fail_once_trial": 1})
    root = tmp_path / "runs"
    assert cli("launch", str(config), "--root", str(root), "--executor", "local").returncode == 0
    logs = cli("logs", "logged", "1", "--root", str(root))
    assert logs.returncode == 0, logs.stderr
    assert "==> run t1-r1" in logs.stdout and "==> run t1-r2" in logs.stdout
    assert "fails its first run" in logs.stdout  # the first run's traceback
    missing = cli("logs", "logged", "99", "--root", str(root))
    assert missing.returncode == 2 and "no trial 99" in missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["const", "search", "grid", "adaptive", "pbt"])
def test_every_digits_config_completes(tmp_path, name):
    digits = copy_example("digits", tmp_path)
    root = tmp_path / "runs"
    done = cli("launch", str(digits / f"{name}.yaml"), "--root", str(root), "--executor", "local", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = status(root, next(root.iterdir()).name)
    assert summary["state"] == "COMPLETED"
    assert summary["best"] is not None
    assert all(t["state"] in ("COMPLETED", "STOPPED_EARLY") for t in summary["trials"])
