"""What each task of a sweep's job array runs: ``python -m hpo_slurm.tasks.sweep_task MANIFEST``.

It picks its run from the array's manifest by SLURM_ARRAY_TASK_ID, writes the run's ``spec.json``
from the manifest entry unless it exists (an earlier attempt wrote it), and runs it with
``tasks.job.run_job``, exactly as a driven job would (metrics, checkpoints, result file, stop signals). The
manifest is a ``protocol.BatchManifest`` whose other keys describe the array
(``hpo_slurm.executors.array.manifest``); one written by hpo-slurm 0.1.0 lists spec.json paths
instead of specs, and is run from those files. With no driver to resubmit it, a task that stopped
for the time-limit warning or a preemption requeues itself (``scontrol requeue``: same job id,
SLURM_RESTART_COUNT + 1) and resumes from its checkpoint when it starts again; an attempt that
reached the time limit without a new checkpoint is not requeued (the run then ends as timed out and
waits for ``sweep --resubmit``). Its output goes to ``runs/<run>/<job>_log.out`` / ``_log.err``,
where ``logs`` looks. Imports nothing heavy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hpo_slurm.core.fsio import read_json
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import (
    BatchManifest, ProtocolError, RunSpec, RunStatus, StopReason, checkpoint_length, check_version,
    latest_checkpoint_in,
)
from hpo_slurm.tasks.job import TrialFailed, run_job, write_spec_file

REQUEUE_REASONS = (StopReason.TIME_LIMIT, StopReason.PREEMPTED)
WAIT_FOR_KILL_S = 300.0


@dataclass(frozen=True)
class TaskRun:
    """The run one task of an array runs: its spec, and where the spec file is (or goes)."""

    array: object  # the array's number, for messages
    spec: RunSpec
    spec_path: Path
    spec_to_write: bool  # True: the spec came from the manifest and goes to spec_path unless it exists


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hpo_slurm.tasks.sweep_task MANIFEST", file=sys.stderr)
        return 2
    task = int(os.environ["SLURM_ARRAY_TASK_ID"])
    manifest_path = Path(args[0])
    try:
        run_id, experiment_dir = task_place(read_json(manifest_path), task, manifest_path)
    except IndexError as exc:
        print(f"task {task}: the manifest {args[0]} {exc}", file=sys.stderr)
        return 2
    job_id = task_job_id()
    layout = ExperimentLayout(experiment_dir)
    # from here on everything, a spec that cannot be read included, goes to the run's log (``logs`` reads it)
    _redirect_output(layout.run_dir(run_id), job_id.replace(";", "_"))
    found = task_run(manifest_path, task)
    spec = found.spec
    spec_path = str(write_spec_file(spec)) if found.spec_to_write else str(found.spec_path)
    print(f"hpo-slurm sweep task {task} of array {found.array}: run {spec.run_id}, job {job_id}, "
          f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')}", flush=True)
    checkpointed = _checkpoint_length(layout, spec.trial_id)
    try:
        result = run_job(spec_path)
    except TrialFailed as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    reason = result.stop_reason
    if result.status is RunStatus.STOPPED and reason in REQUEUE_REASONS:
        if reason == StopReason.TIME_LIMIT and _checkpoint_length(layout, spec.trial_id) <= checkpointed:
            # a whole time limit without a new checkpoint: another attempt would not get further
            print("stopped at the time limit without a new checkpoint: not requeued", file=sys.stderr, flush=True)
        else:
            requeue(job_id, StopReason(reason).value)
    return 0


def task_place(data: Any, task: int, manifest_path: Path) -> Tuple[str, Path]:
    """Task ``task``'s run id and experiment folder, read from a manifest's own keys (both formats
    have them) before any spec is parsed. IndexError ("has N tasks") outside the array;
    ProtocolError when the manifest lacks them."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{manifest_path}: expected a JSON object")
    runs, experiment_dir = data.get("runs"), data.get("experiment_dir")
    if not isinstance(runs, list) or not isinstance(experiment_dir, str):
        raise ProtocolError(f"{manifest_path}: no 'runs' list or 'experiment_dir'")
    if not 0 <= task < len(runs):
        raise IndexError(f"has {len(runs)} tasks")
    return str(runs[task]), Path(experiment_dir)


def task_run(manifest_path: Path, task: int) -> TaskRun:
    """Task ``task``'s run in the manifest at ``manifest_path``. IndexError ("has N tasks") outside
    the array; ProtocolError (or OSError) for a manifest, or a 0.1.0 spec file, that cannot be read."""
    data = read_json(manifest_path)
    if not isinstance(data, dict):
        raise ProtocolError(f"{manifest_path}: expected a JSON object")
    entries = data.get("specs")
    if not isinstance(entries, list):
        raise ProtocolError(f"{manifest_path}: no 'specs' list")
    if not 0 <= task < len(entries):
        raise IndexError(f"has {len(entries)} tasks")
    if isinstance(entries[task], str):  # hpo-slurm 0.1.0: the spec file the driver wrote
        return _legacy_task_run(manifest_path, data, task)
    manifest = BatchManifest.from_json(data, str(manifest_path))
    spec = manifest.spec_for_task(task)
    return TaskRun(manifest.extra.get("array"), spec, ExperimentLayout(Path(spec.experiment_dir)).spec_file(spec.run_id),
                   spec_to_write=True)


def _legacy_task_run(manifest_path: Path, data: Dict[str, Any], task: int) -> TaskRun:
    check_version(data, str(manifest_path))
    runs = data.get("runs")
    if not isinstance(runs, list) or len(runs) != len(data["specs"]):
        raise ProtocolError(f"{manifest_path}: 'runs' must list one run per spec")
    path = Path(data["specs"][task])
    spec = RunSpec.read(path)
    if spec.run_id != runs[task]:
        raise ProtocolError(f"{manifest_path}: task {task} is run {runs[task]} but its spec is {spec.run_id}")
    return TaskRun(data.get("array"), spec, path, spec_to_write=False)


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
