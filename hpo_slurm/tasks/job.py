"""What runs inside each job: start the trial with its spec, and record how the attempt ended in
``runs/<run>/result.json``. Imports nothing heavy.

A trial of one process runs its entrypoint here (``tasks.entrypoint``); a trial of several ranks has
them launched, watched and their endings merged by ``tasks.ranks``. Hyperparameters reach the trial
only through the spec file, never through a command line. Jobs of executors that deliver specs in a
batch manifest write their spec file first (``write_spec_file``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Tuple

from hpo_slurm.core import interruption
from hpo_slurm.core.fsio import append_line, read_json, write_json_atomic
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import RunResult, RunSpec, RunStatus, StopReason
from hpo_slurm.tasks.entrypoint import is_module_entrypoint, run_entrypoint
from hpo_slurm.tasks.ranks import launch_ranks, node_names
from hpo_slurm.trial import ENDED_EARLY_FILE, INVALID_HP_FILE

__all__ = ["TrialFailed", "is_module_entrypoint", "run_job", "write_spec_file"]


INTERRUPTIONS = (StopReason.PREEMPTED, StopReason.TIME_LIMIT)
POOLED_RUN_ENV = "HPO_SLURM_POOL_WORKER"  # set in a run's process by the pool worker that runs it


class TrialFailed(RuntimeError):
    """The trial's script failed; raised so the job itself ends as failed."""


def write_spec_file(spec: RunSpec) -> str:
    """Create ``runs/<run>/spec.json`` (and the run's and trial's folders) from ``spec`` unless the
    file exists (an earlier attempt of the same job wrote it); returns its path."""
    layout = ExperimentLayout(Path(spec.experiment_dir))
    path = layout.spec_file(spec.run_id)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        layout.trial_dir(spec.trial_id).mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, spec.to_json(), durable=False)
    return str(path)


def run_job(spec_path: str) -> RunResult:
    """Run one attempt of the run whose ``spec.json`` is ``spec_path``. Returns the result it also
    writes to ``result.json``; raises ``TrialFailed`` when the trial failed so the scheduler records
    the job as failed, and ``protocol.ProtocolError`` for a spec it cannot read (before the attempt
    is recorded)."""
    spec_path = os.path.abspath(spec_path)
    spec = RunSpec.read(Path(spec_path))
    layout = ExperimentLayout(Path(spec.experiment_dir))
    run_id = spec.run_id
    run_dir = layout.run_dir(run_id)
    layout.result_file(run_id).unlink(missing_ok=True)
    (run_dir / INVALID_HP_FILE).unlink(missing_ok=True)
    (run_dir / ENDED_EARLY_FILE).unlink(missing_ok=True)
    shutil.rmtree(layout.ranks_dir(run_id), ignore_errors=True)
    # what an earlier attempt's ranks left half-saved (a shared checkpoint is named after its attempt)
    checkpoints = layout.checkpoints_dir(spec.trial_id)
    for stale in [path for pattern in layout.shared_checkpoint_patterns(run_id) for path in checkpoints.glob(pattern)]:
        shutil.rmtree(stale, ignore_errors=True)
    attempt, started = _record_attempt(layout, run_id)
    if not os.environ.get(POOLED_RUN_ENV):  # a pool's worker exported its own allocation's end
        interruption.export_allocation_end(started, spec.time_limit_s, os.environ)

    if spec.world_size > 1:
        result = launch_ranks(spec, spec_path, attempt)
    else:
        result = run_entrypoint(spec, spec_path)
    if (run_dir / INVALID_HP_FILE).exists():
        message = read_json(run_dir / INVALID_HP_FILE).get("message", "")
        result = replace(result, status=RunStatus.INVALID_HP, message=message)
    elif result.status is RunStatus.EXITED and (run_dir / ENDED_EARLY_FILE).exists():
        message = read_json(run_dir / ENDED_EARLY_FILE).get("message", "")
        result = replace(result, status=RunStatus.ENDED_EARLY, message=message or None)
    result = replace(result, attempt=attempt, ended=time.time())
    if result.status is RunStatus.STOPPED and result.stop_reason in INTERRUPTIONS:
        interruption.record_interruption(run_dir, attempt, StopReason(result.stop_reason).value)
    write_json_atomic(layout.result_file(run_id), result.to_json())
    if result.status is RunStatus.FAILED:
        raise TrialFailed(f"run {run_id}: {'failed' if result.message is None else result.message}")
    return result


def _record_attempt(layout: ExperimentLayout, run_id: str) -> Tuple[int, float]:
    """Append this start of the job to the run's ``attempts.jsonl``: (which start it is, when)."""
    path = layout.attempts_file(run_id)
    now = time.time()
    previous = sum(1 for _ in open(path, encoding="utf-8")) if path.exists() else 0
    line = {
        "attempt": previous + 1,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nodes": node_names(),
        "time": now,
    }
    append_line(path, json.dumps(line))
    return previous + 1, now


