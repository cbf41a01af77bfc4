"""Preemption told from the time limit by facts: the time left in the job's allocation when the stop
signal came, and Slurm's record of the job; each attempt's reason recorded for the driver's counts.

The real Slurm cases (a preemption in the last window before the time limit, a real time limit, sweep
tasks requeued at the time limit) are in test_slurm.py and test_sweep_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from driver_helpers import copy_example, start_cli, status, trial_processes, wait_for, write_config
from hpo_slurm.core import interruption
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import StopReason
from hpo_slurm.engine.workspace import FileWorkspace

# one line of `scontrol show job -o` on the local cluster, before and while Slurm preempts the job
SHOWN = ("JobId=4077 JobName=envjob.sh JobState=RUNNING Reason=None Requeue=1 Restarts=0 RunTime=00:00:40 "
         "TimeLimit=00:03:00 StartTime=2026-12-05T14:49:18 EndTime=2026-12-05T14:52:18 "
         "PreemptEligibleTime=2026-12-05T14:49:18 PreemptTime={} SuspendTime=None Partition=debug")
END = time.mktime(time.strptime("2026-12-05T14:52:18", "%Y-%m-%dT%H:%M:%S"))
WINDOW = interruption.time_limit_window(30)  # by the job's own clock


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM])
def test_by_the_jobs_clock_a_signal_long_before_the_end_is_a_preemption_and_one_near_it_the_time_limit(signum):
    assert interruption.stop_reason(signum, WINDOW + 1, 30, None, 0.0) is StopReason.PREEMPTED
    for left in (WINDOW, 30, 0, -5):
        assert interruption.stop_reason(signum, left, 30, None, 0.0) is StopReason.TIME_LIMIT


def test_without_a_time_limit_only_the_warning_signal_can_be_the_time_limit():
    assert interruption.stop_reason(signal.SIGTERM, None, 30, None, 0.0) is StopReason.PREEMPTED
    assert interruption.stop_reason(signal.SIGUSR2, None, 30, None, 0.0) is StopReason.TIME_LIMIT


def test_slurms_record_decides_over_the_jobs_clock():
    preempting = interruption.SlurmRecord(preempting=True, end=END)
    running = interruption.SlurmRecord(preempting=False, end=END)
    # a preemption in the last seconds of the allocation
    assert interruption.stop_reason(signal.SIGUSR2, 10, 30, preempting, END - 10) is StopReason.PREEMPTED
    # the time limit of a job whose start-up (module loads, environments) the job's clock did not see:
    # by that clock far from the end, by Slurm's EndTime at it
    assert interruption.stop_reason(signal.SIGUSR2, 400, 30, running, END - 35) is StopReason.TIME_LIMIT
    # a signal long before Slurm's end, from no preemption Slurm records: someone else's (scancel --signal)
    assert interruption.stop_reason(signal.SIGUSR2, 10, 30, running, END - 600) is StopReason.PREEMPTED
    # no EndTime in the record: the clock decides
    unknown = interruption.SlurmRecord(preempting=False, end=None)
    assert interruption.stop_reason(signal.SIGUSR2, 10, 30, unknown, 0.0) is StopReason.TIME_LIMIT


def test_slurms_record_is_read_from_scontrols_line():
    assert interruption.parse_record(SHOWN.format("None")) == interruption.SlurmRecord(False, END)
    assert interruption.parse_record(SHOWN.format("2026-12-05T14:50:01")) == interruption.SlurmRecord(True, END)
    assert interruption.parse_record("JobId=1 JobState=PENDING EndTime=Unknown") == interruption.SlurmRecord(False, None)
    # preempted: Slurm moved the end to that of its GraceTime, before showing a PreemptTime
    cut = SHOWN.format("None").replace("EndTime=2026-12-05T14:52:18", "EndTime=2026-12-05T14:50:11")
    assert interruption.parse_record(cut).preempting
    days = SHOWN.format("None").replace("TimeLimit=00:03:00", "TimeLimit=1-00:00:00")  # ends as asked: no cut
    assert not interruption.parse_record(days.replace("EndTime=2026-12-05T14:52:18", "EndTime=2026-12-06T14:49:18")).preempting
    assert interruption.parse_record("slurm_load_jobs error: Invalid job id specified") is None


def test_a_slurm_that_cannot_be_asked_leaves_the_decision_to_the_clock(tmp_path, monkeypatch):
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert interruption.slurm_record({"SLURM_JOB_ID": "4077"}) is None
    assert interruption.slurm_record({}) is None  # not a Slurm job: nothing to ask


def test_the_allocation_end_is_exported_from_the_attempts_start():
    environ: dict = {}
    interruption.export_allocation_end(1000.0, 120, environ)
    assert interruption.time_left(environ, 1050.0) == pytest.approx(70.0)
    interruption.export_allocation_end(2000.0, None, environ)  # a later attempt without a limit
    assert interruption.time_left(environ, 2050.0) is None


def test_earlier_attempts_are_counted_by_what_they_recorded(tmp_path):
    layout = ExperimentLayout(tmp_path / "exp")
    run_dir = layout.run_dir("t1-r1")
    run_dir.mkdir(parents=True)
    layout.attempts_file("t1-r1").write_text("".join(json.dumps({"attempt": n}) + "\n" for n in (1, 2, 3, 4)))
    interruption.record_interruption(run_dir, 1, "time_limit")
    interruption.record_interruption(run_dir, 3, "preempted")
    with open(run_dir / interruption.INTERRUPTIONS_FILE, "a") as handle:
        handle.write('{"attempt": 2, "rea')  # cut short by a job killed while writing it
    # attempt 2 recorded nothing readable (ended before it could): Slurm requeued it, a preemption;
    # attempt 4 is the last one, judged by its own result
    assert FileWorkspace(layout).earlier_interruptions("t1-r1") == [
        StopReason.TIME_LIMIT, StopReason.PREEMPTED, StopReason.PREEMPTED]


@pytest.mark.parametrize("minutes, expected", [(1, "time_limits"), (30, "preemptions")])
def test_the_warning_signal_counts_as_the_time_limit_only_near_the_end_of_the_allocation(tmp_path, minutes, expected):
    """Local runs: the same warning signal a few seconds into the run is the time limit of a
    1-minute allocation (signal_delay 10: its last 100 s) and a preemption of a 30-minute one."""
    quadratic = copy_example("quadratic", tmp_path)
    config = write_config(quadratic / "single.yaml", quadratic / "warned.yaml", name="warned",
                          slurm={"time": minutes, "signal_delay": 10}, data={"sleep_per_unit": 0.05})
    root = tmp_path / "runs"
    driver = start_cli("launch", str(config), "--root", str(root), "--executor", "local")
    experiment = root / "warned"
    metrics = experiment / "trials" / "1" / "metrics.jsonl"
    pids = wait_for(lambda: trial_processes(experiment), what="a running trial")
    wait_for(lambda: metrics.exists() and metrics.read_text().count("training") >= 2, what="the trial to train")
    for pid in children(pids):  # the job itself, as Slurm signals it (the local controller only forwards SIGTERM)
        os.kill(pid, signal.SIGUSR2)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err[-3000:]
    (trial,) = status(root, "warned")["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 0
    counts = {"time_limits": trial["time_limits"], "preemptions": trial["preemptions"]}
    assert counts == {**{"time_limits": 0, "preemptions": 0}, expected: 1}
    assert [r["state"] for r in trial["runs"]] == [
        "TIMEOUT" if expected == "time_limits" else "PREEMPTED", "SUCCEEDED"]
    recorded = (experiment / "runs" / "t1-r1" / interruption.INTERRUPTIONS_FILE).read_text()
    assert json.loads(recorded)["reason"] == ("time_limit" if expected == "time_limits" else "preempted")


def children(pids):
    """The processes the local job controllers ``pids`` started."""
    return [int(child) for pid in pids for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
