"""How a run ended: one pure function from what the driver knows of a run's job to the run's final
state and the reason it gives. No I/O, no clock: a table test pins every case."""

from __future__ import annotations

import signal
from typing import Any, Mapping, Optional, Tuple

from hpo_slurm.config.schema import NO_TARGET
from hpo_slurm.core.protocol import RunResult, RunStatus, StopReason
from hpo_slurm.core.types import RunState
from hpo_slurm.executors.base import SUBMISSION_REFUSED, JobState, JobStatus

ENDED_BY_ITS_CODE = "its code ended the trial"  # TrialContext.end_trial: the search closes it
NODE_FAILED = "a node of its job failed"  # not the trial's failure: it resumes from its checkpoint
# exit codes of a job killed by SIGTERM, SIGUSR1 or SIGUSR2 (as the signal number or 128 + it)
STOP_SIGNAL_EXITS = frozenset(
    n for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2) for n in (int(sig), 128 + int(sig)))


def judge(run: Mapping[str, Any], trial: Mapping[str, Any], status: JobStatus,
          result: Optional[RunResult]) -> Tuple[RunState, str]:
    """The state a run ends in, and why, from its row, its trial's row, the scheduler's last word on
    its job and the result file its job wrote (None when it wrote none). In order of precedence:
    the trial validated at the run's target, or, for a run without one (``open_ended``), the trial's
    code returned and the trial has validated (SUCCEEDED); the search stopped it (CANCELLED); the trial
    raised InvalidHP (FAILED); the trial's code ended the trial itself (SUCCEEDED, ``ENDED_BY_ITS_CODE``:
    the driver closes the trial); preempted, also by a stop signal before the trial could take it
    (PREEMPTED); out of time (TIMEOUT); a node of its job failed, or gone without a result (LOST);
    everything else FAILED, with the most specific reason known."""
    stop_reason = result.stop_reason if result is not None else None
    result_status = result.status if result is not None else None
    if reached_target(run, trial, result):
        return RunState.SUCCEEDED, ""
    if run["state"] == RunState.CANCELLED.value or trial["closed"] or stop_reason == StopReason.SEARCH_STOPPED:
        return RunState.CANCELLED, "stopped by the search"
    if result_status is RunStatus.INVALID_HP:
        return RunState.FAILED, "invalid hyperparameters"
    if result_status is RunStatus.ENDED_EARLY:
        return RunState.SUCCEEDED, ENDED_BY_ITS_CODE
    if stop_reason == StopReason.PREEMPTED or status.state == JobState.PREEMPTED:
        return RunState.PREEMPTED, "preempted"
    if result is None and status.exit_code in STOP_SIGNAL_EXITS:
        # a stop signal killed the job before the trial could take it (still starting up)
        return RunState.PREEMPTED, "preempted"
    if stop_reason == StopReason.TIME_LIMIT or status.state == JobState.TIMEOUT:
        return RunState.TIMEOUT, "reached its time limit"
    if status.state == JobState.NODE_FAIL:  # the ranks left on other nodes fail when their peers vanish
        return RunState.LOST, NODE_FAILED
    if result is None and status.state == JobState.UNKNOWN:
        return RunState.LOST, "the job vanished without a result"
    if status.reason.startswith(SUBMISSION_REFUSED):
        return RunState.FAILED, status.reason
    if result_status is RunStatus.EXITED and open_ended(run):
        return RunState.FAILED, ("exited without reporting validation (searcher.max_length is not set: a "
                                 "trial's last validation is its result)")
    if result_status is RunStatus.EXITED:
        return RunState.FAILED, f"exited without reporting validation at length {run['to_length']}"
    if result is not None and result.message:
        return RunState.FAILED, result.message
    if status.state == JobState.CANCELLED:
        return RunState.FAILED, "cancelled outside hpo-slurm"
    detail = f" (exit code {status.exit_code})" if status.exit_code is not None else ""
    return RunState.FAILED, f"job ended {status.state.value.lower()}{detail} {status.reason}".strip()


def open_ended(run: Mapping[str, Any]) -> bool:
    """The run has no target (a search without max_length): it trains until the trial's code stops."""
    return run["to_length"] == NO_TARGET


def reached_target(run: Mapping[str, Any], trial: Mapping[str, Any], result: Optional[RunResult]) -> bool:
    """Whether the run did its work: its trial validated at its target, or, without a target, the
    trial's code returned (``result`` EXITED or ENDED_EARLY) and the trial has validated (``validated_length``, the
    longest length it validated at, is past 0)."""
    validated = trial["validated_length"] or 0
    if open_ended(run):
        return result is not None and result.status in (RunStatus.EXITED, RunStatus.ENDED_EARLY) and validated > 0
    return validated >= run["to_length"]


def resumes_without_restart(outcome: RunState, reason: str) -> bool:
    """Whether a run that ended so is resumed without counting against max_restarts and without being
    a preemption: out of time, or a node of its job failed (neither is the trial's fault)."""
    return outcome is RunState.TIMEOUT or (outcome is RunState.LOST and reason == NODE_FAILED)
