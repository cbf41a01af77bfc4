"""The rows of the experiment database: every column of the current schema, in table order, as
TypedDicts (rows are plain dicts: the driver keeps trials and runs in memory and changes them in place),
the constructors of complete new rows, and the totals ``Store`` aggregates. ``Store`` (store.py) is
what reads and writes them; its migrations must end at exactly these columns (tests check it).
No SQL here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional, TypedDict

from hpo_slurm.core.types import RunState, TrialState

dumps_sorted = json.JSONEncoder(sort_keys=True).encode  # json.dumps(x, sort_keys=True), without a new encoder per call


class ExperimentRow(TypedDict):
    """The one row of ``experiment`` (id 1): the search as a whole."""

    id: int
    name: str
    uid: str  # random hex, names the driver's Slurm job
    state: str  # RUNNING, then COMPLETED or ERRORED
    searcher: str
    executor: str
    config: str  # the config file's text as launched
    created_at: float
    ended_at: Optional[float]
    message: Optional[str]
    progress: Optional[float]  # the searcher's estimate, 0 to 1


class TrialRow(TypedDict):
    """One row of ``trials``. The driver keeps these in memory as dicts and writes changed fields."""

    id: int
    hparams: str  # JSON, keys sorted
    parent: Optional[int]  # the trial it was cloned from (PBT), if any
    parent_checkpoint: Optional[str]  # the checkpoint it starts from
    state: str  # a TrialState value
    target_length: Optional[int]  # the length its current run trains to
    validated_length: int  # the longest length it reported a validation at
    latest_metric: Optional[float]
    best_metric: Optional[float]
    best_length: Optional[int]
    restarts: int  # failed runs (they count against max_restarts)
    preemptions: int  # times a job of it was preempted (they do not count against max_restarts)
    closed: int  # 1 once the searcher closed it
    exit_reason: Optional[str]
    message: Optional[str]
    metrics_offset: int  # bytes of its metrics.jsonl already ingested
    checkpoint_bytes: int  # bytes its kept checkpoints take
    created_at: float
    ended_at: Optional[float]
    trained_length: int  # the longest length any of its reports reached
    time_limits: int  # times a job of it stopped at its time limit (they do not count either)


class RunRow(TypedDict):
    """One row of ``runs``: one job attempt training a trial from one length to another."""

    id: str  # run_name(trial_id, seq): also the job's name in Slurm
    trial_id: int
    seq: int  # 1, 2, ... within the trial
    from_length: int
    to_length: int
    state: str  # a RunState value
    job_id: Optional[str]  # None until the job is submitted
    gpus: Optional[str]
    time_minutes: Optional[int]  # the time limit asked of Slurm
    recorded_at: float
    submitted_at: Optional[float]
    started_at: Optional[float]
    ended_at: Optional[float]
    exit_code: Optional[int]
    reason: Optional[str]  # why it ended as it did


class MetricRow(TypedDict):
    """One row of ``metrics``: one line a trial reported. Written with ``metrics`` as JSON text; read
    back with it decoded into a dict."""

    id: int
    trial_id: int
    run_id: str
    kind: str  # "training" or "validation"
    length: int
    metrics: Any
    time: float


class EventRow(TypedDict):
    """One row of ``events``: what happened to the search, for people and tools (never replayed).
    Written and read with ``data`` as a JSON-able value; stored as JSON text."""

    seq: int
    time: float
    kind: str
    trial_id: Optional[int]
    data: Any


class SearcherEventRow(TypedDict):
    """One row of ``searcher_events``: an input the searcher saw, replayed after its last snapshot."""

    seq: int  # 1, 2, ...
    kind: str
    args: str  # a JSON list


def new_trial_row(trial_id: int, hparams: Dict[str, Any], parent: Optional[int], parent_checkpoint: Optional[str],
                  created_at: float) -> TrialRow:
    """A trial as the searcher creates it: PENDING, nothing trained, no run yet."""
    return TrialRow(
        id=trial_id, hparams=dumps_sorted(hparams), parent=parent, parent_checkpoint=parent_checkpoint,
        state=TrialState.PENDING.value, target_length=None, validated_length=0, latest_metric=None,
        best_metric=None, best_length=None, restarts=0, preemptions=0, closed=0, exit_reason=None, message=None,
        metrics_offset=0, checkpoint_bytes=0, created_at=created_at, ended_at=None, trained_length=0,
        time_limits=0,
    )


def new_metric_row(trial_id: int, run_id: str, kind: str, length: int, metrics: Dict[str, Any],
                   time: float) -> Dict[str, Any]:
    """A metrics line as the store inserts it (its id is the store's, its metrics JSON text)."""
    return {"trial_id": trial_id, "run_id": run_id, "kind": kind, "length": length,
            "metrics": dumps_sorted(metrics), "time": time}


def new_run_row(run_id: str, trial_id: int, seq: int, from_length: int, to_length: int,
                recorded_at: float) -> RunRow:
    """A run as the driver records it before submitting it: SUBMITTED with no job id, time limit or
    times yet."""
    return RunRow(
        id=run_id, trial_id=trial_id, seq=seq, from_length=from_length, to_length=to_length,
        state=RunState.SUBMITTED.value, job_id=None, gpus=None, time_minutes=None, recorded_at=recorded_at,
        submitted_at=None, started_at=None, ended_at=None, exit_code=None, reason=None,
    )


@dataclass(frozen=True)
class TrialStateTotals:
    """The trials in one state: how many, and the bytes their kept checkpoints take."""

    state: str
    count: int
    checkpoint_bytes: int


@dataclass(frozen=True)
class RunStateTotals:
    """The runs in one state: how many, the wall seconds of those that started and ended, and how many
    have no job id yet."""

    state: str
    count: int
    job_seconds: float
    without_job: int


@dataclass(frozen=True)
class TrialTotals:
    """All trials: how many, and their restarts, preemptions and stops at the time limit summed."""

    count: int
    restarts: int
    preemptions: int
    time_limits: int
