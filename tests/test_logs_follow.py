"""``hpo-slurm logs NAME TRIAL --follow`` on real searches: every run of the trial, each line under
the header of the file it was written to, and an exit of its own once the trial has ended."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from driver_helpers import cli, copy_example, kill_all_trials, start_cli, status, wait_for, write_config
from hpo_slurm.experiment.lock import driver_alive

HEADER = re.compile(r"^==> run (\S+) \(job (\S+)\) (\S+) <==\n$")

# train.py, saying on stdout and on stderr where each run is, so the lines name the file they belong in
CHATTY = '''
import sys

import train
from hpo_slurm import trial

ctx = trial.init()
report_training = ctx.report_training


def chatty(length, metrics):
    print(f"OUT {ctx.run_id} length {length}", flush=True)
    print(f"ERR {ctx.run_id} length {length}", file=sys.stderr, flush=True)
    report_training(length, metrics)


ctx.report_training = chatty
print(f"OUT {ctx.run_id} start at {ctx.latest_checkpoint_length}", flush=True)
train.train(ctx)
print(f"ERR {ctx.run_id} end", file=sys.stderr, flush=True)
'''


@pytest.fixture
def quadratic(tmp_path):
    folder = copy_example("quadratic", tmp_path)
    (folder / "chatty.py").write_text(CHATTY)
    return folder


def sections(output: str) -> List[Tuple[str, str, str, str]]:
    """(run, job, file name, text) for each header of ``output`` and the text printed under it."""
    found: List[Tuple[str, str, str, List[str]]] = []
    for line in output.splitlines(keepends=True):
        match = HEADER.match(line)
        if match:
            found.append((*match.groups(), []))
        else:
            assert found, f"output before the first header: {line!r}"
            found[-1][3].append(line)
    return [(run, job, name, "".join(lines)) for run, job, name, lines in found]


def check_trial_output(experiment: Path, output: str, runs: List[Dict]) -> None:
    """Every run's files are printed whole, in order, and every line under its own file's header."""
    printed: Dict[Tuple[str, str], str] = {}
    for run, job, name, text in sections(output):
        assert job != "None" and name.startswith(f"{job}_"), (run, job, name)
        stream = "OUT" if name.endswith("_log.out") else "ERR"
        for line in text.splitlines():
            words = line.split()
            if words and words[0] in ("OUT", "ERR"):
                assert words[0] == stream and words[1] == run, f"{line!r} printed under {run} {name}"
        printed[(run, name)] = printed.get((run, name), "") + text
    expected = {}
    for run in runs:
        for path in sorted((experiment / "runs" / run["run_id"]).glob("*_log.*")):
            expected[(run["run_id"], path.name)] = path.read_text()
    assert printed == expected
    for run in runs:  # the trial script's own lines are there, run by run
        if run["state"] == "SUCCEEDED":
            out = "".join(text for (r, name), text in printed.items() if r == run["run_id"] and name.endswith(".out"))
            err = "".join(text for (r, name), text in printed.items() if r == run["run_id"] and name.endswith(".err"))
            assert f"OUT {run['run_id']} start" in out and f"ERR {run['run_id']} end" in err
    first_lines = [next(i for i, s in enumerate(sections(output)) if s[0] == run["run_id"]) for run in runs]
    assert first_lines == sorted(first_lines), "runs are printed in order"


def test_follow_a_finished_trial_prints_every_run_and_exits(quadratic, tmp_path):
    config = write_config(quadratic / "single.yaml", quadratic / "finished.yaml", name="finished",
                          entrypoint="python3 chatty.py", max_restarts=1, data={"fail_once_trial": 1})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    trial = status(root, "finished")["trials"][0]
    assert trial["state"] == "COMPLETED"
    assert [r["state"] for r in trial["runs"]] == ["FAILED", "SUCCEEDED"]

    started = time.monotonic()
    followed = cli("logs", "finished", "1", "--follow", "--root", str(root), timeout=30)
    assert followed.returncode == 0, followed.stderr
    assert time.monotonic() - started < 10
    assert followed.stderr == ""
    check_trial_output(root / "finished", followed.stdout, trial["runs"])
    assert "fails its first run" in followed.stdout  # the failed run's traceback, under its stderr
    plain = cli("logs", "finished", "1", "--root", str(root))
    assert plain.returncode == 0 and plain.stdout == followed.stdout


def _trial_runs(experiment: Path, trial_id: int):
    """The number of runs trial ``trial_id`` has, or None before the trial exists."""
    try:
        conn = sqlite3.connect(f"file:{experiment / 'experiment.db'}?mode=ro", uri=True)
        try:
            if not conn.execute("SELECT 1 FROM trials WHERE id = ?", [trial_id]).fetchone():
                return None
            return conn.execute("SELECT COUNT(*) FROM runs WHERE trial_id = ?", [trial_id]).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def test_follow_a_running_trial_through_all_its_runs(quadratic, tmp_path):
    config = write_config(quadratic / "pbt.yaml", quadratic / "followed.yaml", name="followed",
                          entrypoint="python3 chatty.py", data={"sleep_per_unit": 0.1, "report_every": 2})
    root = tmp_path / "runs"
    experiment = root / "followed"
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", "--detach", timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    followers: List = []
    try:
        wait_for(lambda: _trial_runs(experiment, 2) is not None, timeout=30, what="trial 2 to be created")
        runs_at_start = _trial_runs(experiment, 2)
        follower = start_cli("logs", "followed", "2", "--follow", "--root", str(root))
        interrupted = start_cli("logs", "followed", "2", "-f", "--root", str(root))
        followers += [follower, interrupted]
        time.sleep(2)
        interrupted.send_signal(signal.SIGINT)
        out, err = interrupted.communicate(timeout=10)
        assert interrupted.returncode == 0 and err == "", err  # Ctrl-C: a quiet end

        out, err = follower.communicate(timeout=90)
        assert follower.returncode == 0, err
        assert err == ""
        summary = status(root, "followed")
        trial = next(t for t in summary["trials"] if t["id"] == 2)
        assert trial["state"] in ("COMPLETED", "STOPPED_EARLY")  # the command ended once the trial had
        runs = trial["runs"]
        assert len(runs) >= 2 and runs_at_start < len(runs), (runs_at_start, runs)
        assert all(r["state"] == "SUCCEEDED" for r in runs)
        check_trial_output(experiment, out, runs)
        for run in runs:  # each run's training lines, on both streams
            assert f"OUT {run['run_id']} length {run['to_length']}" in out
            assert f"ERR {run['run_id']} length {run['to_length']}" in out
        wait_for(lambda: status(root, "followed")["state"] != "RUNNING", timeout=60, interval=0.5,
                 what="the search to end")
    finally:
        for process in followers:
            if process.poll() is None:
                process.kill()
                process.communicate()
        holder = driver_alive(experiment / "driver.lock")
        if holder["alive"] and holder["pid"]:  # the driver this test started, when it failed midway
            os.kill(holder["pid"], signal.SIGTERM)
        kill_all_trials(experiment)
