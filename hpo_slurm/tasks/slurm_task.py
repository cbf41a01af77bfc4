"""What every Slurm job of the driver runs: ``python -u -m hpo_slurm.tasks.slurm_task FOLDER``.

The driver submits each batch of runs as one submitit job (a job array when it holds several runs)
whose folder ``jobs/<batch name>/`` holds two files written and synced before sbatch runs:
``manifest.json`` (a ``protocol.BatchManifest``: the runs in task order and each run's spec) and
``task.pkl`` (ONE submitit ``DelayedSubmission`` of ``run_task`` for the whole batch). submitit's
task side loads
``<FOLDER>/<job id>_submitted.pkl`` (job id ``<array>_<index>`` for a task of an array); ``main``
hard-links that name to ``task.pkl`` when it is missing, then hands over to submitit's own
``process_job`` (pickle, signal handlers, result pickle). Nothing per task is written before the
task starts, so a task can never start before its files exist.

``run_task`` picks its run from the manifest by SLURM_ARRAY_TASK_ID, writes ``runs/<run>/spec.json``
from the manifest entry if absent, links submitit's output files into the run's folder (where
``hpo-slurm logs`` reads them) and runs ``tasks.job.run_job``. A task Slurm requeues keeps its job id and
finds all of this again. Imports nothing heavy.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import List, Optional

from hpo_slurm.core.protocol import BatchManifest, RunResult
from hpo_slurm.tasks.job import run_job, write_spec_file

MANIFEST = "manifest.json"
SHARED_PICKLE = "task.pkl"


def main(argv: Optional[List[str]] = None) -> None:
    """Entry of a task: place this job's submitit pickle, then run submitit's ``process_job``."""
    from submitit.core.job_environment import JobEnvironment
    from submitit.core.submission import process_job
    from submitit.core.utils import JobPaths

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m hpo_slurm.tasks.slurm_task FOLDER")
    folder = Path(args[0])
    place_submitted_pickle(JobPaths(folder, job_id=JobEnvironment().job_id).submitted_pickle)
    process_job(folder)


def place_submitted_pickle(path: Path) -> None:
    """Make ``path`` (submitit's per-job pickle name) the batch's shared pickle, next to it: a hard
    link, or a symbolic link on filesystems without hard links. An existing file is kept."""
    shared = path.with_name(SHARED_PICKLE)
    try:
        os.link(shared, path)
    except FileExistsError:
        return  # an earlier attempt of this job (requeued under the same id) placed it
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        try:
            os.symlink(SHARED_PICKLE, path)
        except FileExistsError:
            return


def run_task(manifest_path: str) -> RunResult:
    """Run this task's run of the batch in ``manifest_path``: ``run_job``'s result (it raises
    ``job.TrialFailed`` when the trial failed, so the job ends failed, and ``protocol.ProtocolError``
    for a manifest it cannot read)."""
    manifest = BatchManifest.read(Path(manifest_path))
    spec = manifest.spec_for_task(task_index(len(manifest.specs)))
    spec_path = write_spec_file(spec)
    _link_output(Path(spec_path).parent)
    return run_job(spec_path)


def task_index(count: int) -> int:
    """This task's index in a batch of ``count`` runs: SLURM_ARRAY_TASK_ID, or 0 for a lone job."""
    if count == 1:
        return 0
    raw = os.environ.get("SLURM_ARRAY_TASK_ID")
    if raw is None:
        raise RuntimeError(f"a batch of {count} runs needs SLURM_ARRAY_TASK_ID (not a task of a job array)")
    index = int(raw)
    if not 0 <= index < count:
        raise RuntimeError(f"SLURM_ARRAY_TASK_ID {index} is outside the batch of {count} runs")
    return index


def _link_output(run_dir: Path) -> None:
    """Symbolic links in the run's folder to this job's submitit stdout and stderr."""
    from submitit.core.job_environment import JobEnvironment

    paths = JobEnvironment().paths
    for target in (paths.stdout, paths.stderr):
        try:
            os.symlink(target, run_dir / target.name)
        except FileExistsError:
            pass  # a requeued attempt of the same job appends to the same files


if __name__ == "__main__":
    main()
