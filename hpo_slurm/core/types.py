"""Plain data shared by every layer: searcher actions, exit reasons, trial and run states."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union


class ExitReason(str, enum.Enum):
    """Why a trial ended before its searcher closed it."""

    ERRORED = "errored"  # failed more than max_restarts times
    INVALID_HP = "invalid_hp"  # the script raised trial.InvalidHP
    USER_CANCELED = "user_canceled"  # the user stopped it (hpo-slurm stop)
    USER_REQUESTED_STOP = "user_requested_stop"  # its own code ended it (TrialContext.end_trial)


@dataclass(frozen=True)
class Create:
    """Create trial ``trial_id`` with ``hparams``; ``parent`` names a trial whose latest checkpoint it starts from."""

    trial_id: int
    hparams: Dict[str, Any]
    parent: Optional[int] = None


@dataclass(frozen=True)
class Train:
    """Train ``trial_id`` until the absolute length ``length`` and report a validation there."""

    trial_id: int
    length: int


@dataclass(frozen=True)
class Close:
    """The searcher needs nothing more from ``trial_id``."""

    trial_id: int


@dataclass(frozen=True)
class Shutdown:
    """The search is over. ``failure`` is True when no trial completed."""

    failure: bool = False


Action = Union[Create, Train, Close, Shutdown]


def action_to_json(action: Action) -> Dict[str, Any]:
    """A JSON-able dict for an action: its type and fields (the searcher contract tests log these)."""
    kind = type(action).__name__.lower()
    return {"type": kind, **{k: v for k, v in action.__dict__.items()}}


class TrialState(str, enum.Enum):
    PENDING = "PENDING"  # created by the searcher, no run yet
    QUEUED = "QUEUED"  # a run is submitted, not started
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"  # finished a rung, waiting for a promotion decision
    COMPLETED = "COMPLETED"
    STOPPED_EARLY = "STOPPED_EARLY"
    ERRORED = "ERRORED"

    @property
    def terminal(self) -> bool:
        return self in (TrialState.COMPLETED, TrialState.STOPPED_EARLY, TrialState.ERRORED)


class RunState(str, enum.Enum):
    """One job attempt of a trial."""

    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    PREEMPTED = "PREEMPTED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    LOST = "LOST"

    @property
    def terminal(self) -> bool:
        return self not in (RunState.SUBMITTED, RunState.RUNNING)


def cancel_unconfirmed(run: Mapping[str, Any]) -> bool:
    """The search cancelled the run while its job was out, and no driver has seen the job end yet."""
    return run["state"] == RunState.CANCELLED.value and bool(run["job_id"]) and run["ended_at"] is None


def run_may_be_out(run: Mapping[str, Any]) -> bool:
    """The run is unfinished, or cancelled with a job not yet seen to end: a driver still watches it."""
    return not RunState(run["state"]).terminal or cancel_unconfirmed(run)


def awaits_submission(run: Mapping[str, Any]) -> bool:
    """The run is recorded and wants a job, but no job was bound to it yet (never submitted, or
    submitted by a driver that died before recording the job id: look it up by name first)."""
    return run["state"] == RunState.SUBMITTED.value and not run["job_id"]
