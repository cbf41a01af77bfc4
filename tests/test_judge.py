"""How a run ended (engine.judge): one row per case, in the judge's order of precedence."""

from __future__ import annotations

import pytest

from hpo_slurm.core.protocol import RunResult
from hpo_slurm.core.types import RunState
from hpo_slurm.engine.judge import ENDED_BY_ITS_CODE, NODE_FAILED, SUBMISSION_REFUSED, judge
from hpo_slurm.executors.base import JobState, JobStatus


def run(state="RUNNING", to_length=8):
    return {"state": state, "to_length": to_length}


def trial(validated=0, closed=0):
    return {"validated_length": validated, "closed": closed}


def result(status, stop_reason=None, message=None):
    """A result file as the job writes it (tasks.job.run_job), as the workspace reads it."""
    out = {"status": status, "exit_code": 0 if status != "failed" else 1, "stop_reason": stop_reason}
    if message is not None:
        out["message"] = message
    return RunResult.from_json(out)


CASES = [
    # (run, trial, job status, result) -> (state, reason)
    ("validated at the target", run(), trial(validated=8), JobStatus(JobState.FAILED, 1), None,
     RunState.SUCCEEDED, ""),
    ("validated beyond the target", run(to_length=4), trial(validated=8), JobStatus(JobState.COMPLETED), None,
     RunState.SUCCEEDED, ""),
    ("cancelled by the driver", run(state="CANCELLED"), trial(), JobStatus(JobState.CANCELLED), None,
     RunState.CANCELLED, "stopped by the search"),
    ("trial closed", run(), trial(closed=1), JobStatus(JobState.COMPLETED), result("exited"),
     RunState.CANCELLED, "stopped by the search"),
    ("search stopped it", run(), trial(), JobStatus(JobState.COMPLETED), result("stopped", "search_stopped"),
     RunState.CANCELLED, "stopped by the search"),
    ("invalid hyperparameters", run(), trial(), JobStatus(JobState.COMPLETED), result("invalid_hp", message="lr < 0"),
     RunState.FAILED, "invalid hyperparameters"),
    ("its code ended the trial before the target", run(), trial(validated=4), JobStatus(JobState.COMPLETED),
     result("ended_early", message="done"), RunState.SUCCEEDED, ENDED_BY_ITS_CODE),
    ("its code ended the trial after the target", run(), trial(validated=8), JobStatus(JobState.COMPLETED),
     result("ended_early"), RunState.SUCCEEDED, ""),
    ("trial took a preemption", run(), trial(), JobStatus(JobState.COMPLETED), result("stopped", "preempted"),
     RunState.PREEMPTED, "preempted"),
    ("scheduler says preempted", run(), trial(), JobStatus(JobState.PREEMPTED), None,
     RunState.PREEMPTED, "preempted"),
    ("SIGTERM before the trial started", run(), trial(), JobStatus(JobState.FAILED, 15), None,
     RunState.PREEMPTED, "preempted"),
    ("SIGUSR1 as 128+10 before the trial started", run(), trial(), JobStatus(JobState.FAILED, 138), None,
     RunState.PREEMPTED, "preempted"),
    ("a stop signal exit with a result is not a preemption", run(), trial(), JobStatus(JobState.FAILED, 15),
     result("failed", message="boom"), RunState.FAILED, "boom"),
    ("trial took the time-limit warning", run(), trial(), JobStatus(JobState.COMPLETED), result("stopped", "time_limit"),
     RunState.TIMEOUT, "reached its time limit"),
    ("scheduler says timeout", run(), trial(), JobStatus(JobState.TIMEOUT), None,
     RunState.TIMEOUT, "reached its time limit"),
    ("its node failed, no result", run(), trial(), JobStatus(JobState.NODE_FAIL), None,
     RunState.LOST, NODE_FAILED),
    ("its node failed while it stopped", run(), trial(), JobStatus(JobState.NODE_FAIL),
     result("stopped", "preempted"), RunState.PREEMPTED, "preempted"),
    ("its node failed, the ranks left failed", run(), trial(), JobStatus(JobState.NODE_FAIL),
     result("failed", message="rank 0: connection closed"), RunState.LOST, NODE_FAILED),
    ("vanished without a result", run(), trial(), JobStatus(JobState.UNKNOWN), None,
     RunState.LOST, "the job vanished without a result"),
    ("unknown job that left a result", run(), trial(), JobStatus(JobState.UNKNOWN), result("failed", message="oom"),
     RunState.FAILED, "oom"),
    ("submission refused", run(state="SUBMITTED"), trial(),
     JobStatus(JobState.FAILED, reason=f"{SUBMISSION_REFUSED}: invalid partition"), None,
     RunState.FAILED, f"{SUBMISSION_REFUSED}: invalid partition"),
    ("exited short of its target", run(to_length=8), trial(validated=4), JobStatus(JobState.COMPLETED), result("exited"),
     RunState.FAILED, "exited without reporting validation at length 8"),
    ("the trial's own error", run(), trial(), JobStatus(JobState.FAILED, 1), result("failed", message="`x` raised E"),
     RunState.FAILED, "`x` raised E"),
    ("cancelled by someone else", run(), trial(), JobStatus(JobState.CANCELLED), None,
     RunState.FAILED, "cancelled outside hpo-slurm"),
    ("failed with an exit code", run(), trial(), JobStatus(JobState.FAILED, 3, reason="NonZeroExitCode"), None,
     RunState.FAILED, "job ended failed (exit code 3) NonZeroExitCode"),
    ("failed with nothing known", run(), trial(), JobStatus(JobState.FAILED), None,
     RunState.FAILED, "job ended failed"),
]


@pytest.mark.parametrize("name, run_row, trial_row, status, result_file, state, reason", CASES, ids=[c[0] for c in CASES])
def test_judge(name, run_row, trial_row, status, result_file, state, reason):
    assert judge(run_row, trial_row, status, result_file) == (state, reason)
