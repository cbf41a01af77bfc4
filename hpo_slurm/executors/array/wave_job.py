"""The wave job of a capped sweep: ``python -m hpo_slurm.executors.array.wave_job MANIFEST``.

It runs once the previous array has ended (``--dependency=afterany``) and submits the array of
MANIFEST, then the wave job of the array after it (which waits for this one). Each step is done once:
what was already submitted (recorded in ``submitted.json`` / ``wave.json``, or found by name after a
requeue) is not submitted again. Busy controllers and submit limits are retried with a pause. A
stopped experiment (``hpo-slurm stop``) gets nothing more submitted.
"""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.executors.array.files import (
    ARRAY_SCRIPT, SUBMITTED, WAVE_SCRIPT, WAVE_SUBMITTED, ArrayFolders, read_job_id, write_job_id,
)
from hpo_slurm.executors.array.manifest import ArrayManifest
from hpo_slurm.executors.base import SchedulerError, SubmitError
from hpo_slurm.executors.slurm.commands import cluster_config, has_accounting, jobs_named, sbatch

RETRY_PAUSE_S = 30.0
RETRY_FOR_S = 45 * 60.0


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hpo_slurm.executors.array.wave_job MANIFEST", file=sys.stderr)
        return 2
    manifest_path = Path(args[0])
    manifest = ArrayManifest.read(manifest_path)
    layout = ExperimentLayout(Path(manifest.experiment_dir))
    if layout.stop_request.exists():
        print("the experiment was stopped: nothing submitted", flush=True)
        return 0
    folder = manifest_path.parent
    folders = ArrayFolders(folder.parent)
    try:
        job_id = submit_once(manifest.job_name, folder / SUBMITTED, lambda: sbatch(folder / ARRAY_SCRIPT, cwd=layout.dir))
        print(f"array {manifest.index}: job {job_id}", flush=True)
        following = manifest.next
        if following is not None:
            next_manifest = ArrayManifest.read(folders.manifest_path(following))
            if next_manifest.wave_name is None:
                print(f"giving up: array {following} has no wave job to submit", file=sys.stderr, flush=True)
                return 1
            next_folder = folders.folder(following)
            wave_id = submit_once(next_manifest.wave_name, next_folder / WAVE_SUBMITTED,
                                  lambda: sbatch(next_folder / WAVE_SCRIPT, cwd=layout.dir,
                                                 dependency=f"afterany:{job_id}"))
            print(f"wave for array {following}: job {wave_id} (after job {job_id})", flush=True)
    except SubmitError as exc:
        print(f"giving up: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def submit_once(name: str, record: Path, submit: Callable[[], str],
                pause_s: float = RETRY_PAUSE_S, retry_for_s: float = RETRY_FOR_S) -> str:
    """The id of the job ``name``: as recorded, else found by name, else submitted now (retrying
    errors that can pass, such as a full queue); recorded either way."""
    recorded = read_job_id(record)
    if recorded is not None:
        return recorded
    deadline = time.monotonic() + retry_for_s
    while True:  # a lookup that cannot answer is retried, never taken for "not submitted yet"
        try:
            jobs = jobs_named([name], getpass.getuser(), has_accounting(cluster_config())).get(name)
            break
        except SchedulerError as exc:
            if time.monotonic() + pause_s > deadline:
                raise SubmitError(f"cannot tell whether {name} was submitted: {exc}", retry=False) from exc
            print(f"{exc}; retrying in {pause_s:.0f}s", file=sys.stderr, flush=True)
            time.sleep(pause_s)
    if jobs:
        job_id = sorted(jobs)[0][0].split("_")[0]
    else:
        while True:
            try:
                job_id = submit()
                break
            except SubmitError as exc:
                if not exc.retry or time.monotonic() + pause_s > deadline:
                    raise
                print(f"{exc}; retrying in {pause_s:.0f}s", file=sys.stderr, flush=True)
                time.sleep(pause_s)
    write_job_id(record, job_id)
    return job_id


if __name__ == "__main__":
    sys.exit(main())
