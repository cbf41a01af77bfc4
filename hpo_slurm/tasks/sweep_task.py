"""What each task of a sweep's job array runs: ``python -m hpo_slurm.tasks.sweep_task MANIFEST``.

It picks its run's spec from the manifest by SLURM_ARRAY_TASK_ID and runs it with ``job.run_job``,
exactly as a driven job would (metrics, checkpoints, result file, stop signals). With no driver to
resubmit it, a task that stopped for the time-limit warning or a preemption requeues itself
(``scontrol requeue``: same job id, SLURM_RESTART_COUNT + 1) and resumes from its checkpoint when it
starts again; an attempt that reached the time limit without a new checkpoint is not requeued (the
run then ends as timed out and waits for ``sweep --resubmit``). Its output goes to ``runs/<run>/<job>_log.out`` / ``_log.err``, where ``logs`` looks.
Imports nothing heavy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from hpo_slurm.core.fsio import read_json
from hpo_slurm.tasks.job import TrialFailed, run_job
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.trial import checkpoint_length, latest_checkpoint_in

REQUEUE_REASONS = ("time_limit", "preempted")
WAIT_FOR_KILL_S = 300.0


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hpo_slurm.tasks.sweep_task MANIFEST", file=sys.stderr)
        return 2
    manifest = read_json(Path(args[0]))
    task = int(os.environ["SLURM_ARRAY_TASK_ID"])
    if not 0 <= task < len(manifest["specs"]):
        print(f"task {task}: the manifest {args[0]} has {len(manifest['specs'])} tasks", file=sys.stderr)
        return 2
    run_id = manifest["runs"][task]
    job_id = task_job_id()
    layout = ExperimentLayout(Path(manifest["experiment_dir"]))
    _redirect_output(layout.run_dir(run_id), job_id.replace(";", "_"))
    print(f"hpo-slurm sweep task {task} of array {manifest['array']}: run {run_id}, job {job_id}, "
          f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')}", flush=True)
    spec = manifest["specs"][task]
    trial_id = read_json(Path(spec))["trial_id"]
    checkpointed = _checkpoint_length(layout, trial_id)
    try:
        result = run_job(spec)
    except TrialFailed as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    reason = result.get("stop_reason")
    if result.get("status") == "stopped" and reason in REQUEUE_REASONS:
        if reason == "time_limit" and _checkpoint_length(layout, trial_id) <= checkpointed:
            # a whole time limit without a new checkpoint: another attempt would not get further
            print("stopped at the time limit without a new checkpoint: not requeued", file=sys.stderr, flush=True)
        else:
            requeue(job_id, reason)
    return 0


def _checkpoint_length(layout: ExperimentLayout, trial_id: int) -> int:
    found = latest_checkpoint_in(layout.checkpoints_dir(trial_id))
    try:
        return checkpoint_length(found) if found is not None else -1
    except (OSError, ValueError, KeyError):
        return -1


def task_job_id() -> str:
    """``<array job id>_<task>``: the id sacct and scontrol know this task by."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID", "")


def requeue(job_id: str, reason: str) -> None:
    """Put this task back in the queue; it resumes from its checkpoint. When that fails on a
    preemption, Slurm's own requeue (PreemptMode=REQUEUE) is coming: wait for it rather than end the
    job as completed, which would leave the run to ``sweep --resubmit``."""
    done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if done.returncode == 0:
        print(f"stopped ({reason}): requeued job {job_id}; it resumes from its checkpoint", flush=True)
        return
    print(f"stopped ({reason}): `scontrol requeue {job_id}` failed: {done.stderr.strip()}", file=sys.stderr, flush=True)
    if reason == "preempted":
        time.sleep(WAIT_FOR_KILL_S)


def _redirect_output(run_dir: Path, job_id: str) -> None:
    """Send this process's (and the trial's) stdout and stderr to the run's folder, appending across
    requeues."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, suffix in ((1, "out"), (2, "err")):
        target = os.open(run_dir / f"{job_id}_log.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)


if __name__ == "__main__":
    sys.exit(main())
