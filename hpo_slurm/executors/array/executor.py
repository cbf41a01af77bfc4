"""Runs as tasks of job arrays rendered from an sbatch template: the executor of ``hpo-slurm sweep``.

One ``submit`` call turns its runs into arrays of consecutive runs (same GPUs per task), each below
MaxArraySize and throttled with ``%K`` (K = max_concurrent_trials). Every array gets a folder
``jobs/array-<n>/`` (``files``) with its manifest (the runs' specs, ``manifest.ArrayManifest``) and
script, both written BEFORE sbatch runs; its job id goes to ``submitted.json`` after. A task picks
its run by SLURM_ARRAY_TASK_ID and writes the run's ``spec.json`` from the manifest
(``hpo_slurm.tasks.sweep_task``); hyperparameters never reach a command line.

When the cluster caps the jobs a user may queue (MaxSubmitJobs of the association or QOS, MaxJobCount)
and the runs do not fit, the arrays go out in waves: the first now, each later one submitted by a tiny
wave job (``hpo_slurm.executors.array.wave_job``) that waits for the previous array with
``--dependency=afterany``. Runs of a wave not submitted yet are bound to placeholder ids
``array-<n>_<task>``; ``poll`` reports them PENDING while their wave chain is alive, resolves them to
real ids once their array is out, and UNKNOWN (the run is then LOST) when the chain broke (``waves``).
"""

from __future__ import annotations

import getpass
import logging
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.errors import UserError
from hpo_slurm.executors.array.caps import Limits, Plan, PlannedArray, plan_requests
from hpo_slurm.executors.array.cluster import ClusterView
from hpo_slurm.executors.array.files import ARRAY_SCRIPT, WAVE_SCRIPT, ArrayFolders
from hpo_slurm.executors.array.manifest import ArrayManifest
from hpo_slurm.executors.array.scripts import ArrayScripts
from hpo_slurm.executors.array.waves import ArrayStatus, JobsByName, WaveState, chain_states, parse_placeholder, placeholder
from hpo_slurm.executors.base import Executor, JobRequest, JobState, JobStatus, SchedulerError, SubmitError, Submitted
from hpo_slurm.executors.slurm.commands import check_before_launch, poll_jobs, sbatch, scancel
from hpo_slurm.executors.slurm.placement import PartitionPlacement

log = logging.getLogger(__name__)


class ArrayExecutor(PartitionPlacement, Executor):
    """``throttle``: at most this many tasks of an array run at once (default: the searcher's
    max_concurrent_trials); ``max_jobs``: the user's own cap on queued jobs, on top of the cluster's;
    ``python``: the interpreter of tasks and wave jobs (default: this one)."""

    name = "array"
    delivers_specs = True  # each array's manifest carries its runs' specs; a task writes its spec.json

    def __init__(self, config: ExperimentConfig, experiment_dir: Path, throttle: Optional[int] = None,
                 max_jobs: Optional[int] = None, python: Optional[str] = None):
        self.config = config
        self.dir = Path(experiment_dir).absolute()
        self.folders = ArrayFolders(self.dir / "jobs")
        self.throttle = config.searcher.max_concurrent_trials if throttle is None else throttle
        self.cluster = ClusterView(getpass.getuser(), config.slurm.qos, max_jobs)
        self.scripts = ArrayScripts(config, self.dir, self.folders, self.throttle, python or sys.executable)
        self.last_error: Optional[str] = None  # why the last submission failed, for messages

    def limits(self) -> Limits:
        """The cluster's limits for this user's arrays (``ClusterView.limits``)."""
        return self.cluster.limits()

    def plan(self, requests: Sequence[JobRequest], limits: Limits, first_index: int) -> Tuple[List[PlannedArray], Plan]:
        """The arrays for ``requests``, numbered from ``first_index`` (``caps.plan_requests``)."""
        return plan_requests(requests, limits, first_index)

    def check(self, count: int, gpus: int, time_minutes: Optional[int], prefix: str) -> Optional[str]:
        """Before anything exists: render a script for ``count`` tasks and let ``sbatch --test-only``
        judge it (partition, account, GPUs, memory, time). A UserError carries sbatch's reason; a
        warning is returned when Slurm cannot judge it now (``commands.check_before_launch``)."""
        request = JobRequest("check", "check", self.dir, self.dir / "spec.json", gpus, time_minutes,
                             placement=self.placement(self.config))
        script = self.scripts.render(PlannedArray(0, [request] * count, time_minutes, gpus), prefix)
        return check_before_launch(lambda folder: script, "the sweep's jobs")

    # ---- submission -----------------------------------------------------------------------------
    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        """Write every array's files, then submit the first array and either the others (no cap) or
        the wave job of the second (a capped chain: the rest get placeholders). On a SubmitError,
        ``submitted`` names the runs that did go out."""
        if not requests:
            return []
        prefix = _prefix(requests[0])
        try:
            arrays, plan = self.plan(requests, self.limits(), self.folders.next_index())
            self.scripts.write(arrays, plan, prefix)
        except (UserError, SchedulerError) as exc:
            self.last_error = str(exc)
            raise SubmitError(str(exc), retry=True) from None
        submitted: List[Submitted] = []
        try:
            first = self._submit_array(arrays[0])
            submitted += _tasks(first, arrays[0])
            if plan.waves:
                if len(arrays) > 1:
                    self._submit_wave(arrays[1].index, after=first)
                    for array in arrays[1:]:
                        submitted += [Submitted(placeholder(array.index, i)) for i in range(len(array.requests))]
            else:
                for array in arrays[1:]:
                    submitted += _tasks(self._submit_array(array), array)
        except SubmitError as exc:
            self.last_error = str(exc)
            raise SubmitError(str(exc), retry=exc.retry,
                              submitted={r.run_id: job for r, job in zip(requests, submitted)}) from None
        return submitted

    def _submit_array(self, array: PlannedArray) -> str:
        job_id = sbatch(self.folders.folder(array.index) / ARRAY_SCRIPT, cwd=self.dir)
        self.folders.record_submitted(array.index, job_id)
        return job_id

    def _submit_wave(self, index: int, after: str) -> str:
        job_id = sbatch(self.folders.folder(index) / WAVE_SCRIPT, cwd=self.dir, dependency=f"afterany:{after}")
        self.folders.record_wave(index, job_id)
        return job_id

    # ---- the state of arrays --------------------------------------------------------------------
    def jobs_named(self, names: Sequence[str]) -> JobsByName:
        """This user's jobs with those names; SchedulerError when Slurm cannot answer."""
        return self.cluster.jobs_named(names)

    def resolve(self, job_id: str) -> Optional[str]:
        """The real job id of a placeholder whose array is out now, else None."""
        return self.resolve_all([job_id]).get(job_id)

    def resolve_all(self, job_ids: Iterable[str]) -> Dict[str, Optional[str]]:
        """Each placeholder among ``job_ids`` -> its real job id if its array is out now, else None
        (each array's record is read once). Ids that are no placeholders are left out."""
        bases: Dict[int, Optional[str]] = {}  # array -> its recorded job id
        resolved: Dict[str, Optional[str]] = {}
        for job_id in job_ids:
            parsed = parse_placeholder(job_id)
            if parsed is None:
                continue
            index, task = parsed
            if index not in bases:
                bases[index] = self.folders.submitted_id(index)
            resolved[job_id] = f"{bases[index]}_{task}" if bases[index] else None
        return resolved

    def chain_states(self, indexes: Sequence[int]) -> Dict[int, ArrayStatus]:
        """Where each array stands in its wave chain (``waves.chain_states``); SchedulerError when
        Slurm cannot answer."""
        return chain_states(indexes, self.folders, self.jobs_named)

    # ---- polling --------------------------------------------------------------------------------
    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        """Real ids as Slurm reports them; placeholders by their array: its tasks once it is out,
        PENDING while their chain is alive (or cannot be asked about), else UNKNOWN."""
        if not job_ids:
            return {}
        real: Dict[str, str] = {}
        waiting: Dict[int, List[Tuple[str, str]]] = {}  # array -> [(placeholder, task)]
        resolved = self.resolve_all(job_ids)
        for job_id in job_ids:
            if job_id not in resolved:
                real[job_id] = job_id
            elif resolved[job_id]:
                real[job_id] = resolved[job_id]
            else:
                index, task = parse_placeholder(job_id)
                waiting.setdefault(index, []).append((job_id, task))
        result: Dict[str, JobStatus] = {}
        if waiting:
            try:
                chains = self.chain_states(list(waiting))
            except SchedulerError as exc:  # nothing can be said about the waves: ask again next poll
                log.warning("%s; runs waiting for their wave stay pending", exc)
                chains = {index: ArrayStatus(WaveState.PENDING) for index in waiting}
            for index, status in chains.items():
                for job_id, task in waiting[index]:
                    if status.state.out:
                        real[job_id] = f"{status.job_id}_{task}"
                    elif status.state is WaveState.PENDING:
                        result[job_id] = JobStatus(JobState.PENDING, reason="waiting for its wave")
                    else:
                        result[job_id] = JobStatus(JobState.UNKNOWN, reason="its wave job ended without submitting it")
        statuses = self._states(sorted(set(real.values())))
        for job_id, actual in real.items():
            result[job_id] = statuses.get(actual, JobStatus(JobState.UNKNOWN))
        return result

    def _states(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        if not job_ids:
            return {}
        try:
            accounting: Optional[bool] = self.cluster.accounting
        except SchedulerError as exc:
            log.warning("%s; jobs gone from squeue are judged by their result files only", exc)
            accounting = None
        return poll_jobs(job_ids, self.cluster.user, accounting)

    # ---- after a crash --------------------------------------------------------------------------
    def find(self, requests: Sequence[JobRequest]) -> Dict[str, str]:
        """Jobs of runs recorded but never bound: from the newest manifest that lists each run, its
        real id when the array is out (recorded, or found by name), a placeholder while its wave is due."""
        wanted = {r.run_id for r in requests}
        if not wanted:
            return {}
        listing: List[Tuple[int, ArrayManifest]] = []
        for index in reversed(self.folders.indexes()):
            manifest = self.folders.manifest(index)
            if manifest is not None and wanted.intersection(manifest.runs):
                listing.append((index, manifest))
        if not listing:
            return {}
        states = self.chain_states([index for index, _ in listing])
        found: Dict[str, str] = {}
        for index, manifest in listing:
            status = states[index]
            for task, run_id in enumerate(manifest.runs):
                if run_id not in wanted or run_id in found:
                    continue
                if status.state.out:
                    found[run_id] = f"{status.job_id}_{task}"
                elif status.state is WaveState.PENDING:
                    found[run_id] = placeholder(index, task)
        return found

    def cancel(self, job_ids: Sequence[str]) -> None:
        """scancel the real jobs (Slurm sends SIGTERM, the trials checkpoint). A placeholder's array
        is not out yet: its wave job sees the stop request (or the runs' stop files) and submits
        nothing, or its tasks end at once."""
        real = [self.resolve(j) or j for j in job_ids]
        scancel([j for j in real if parse_placeholder(j) is None])


def _tasks(job_id: str, array: PlannedArray) -> List[Submitted]:
    return [Submitted(f"{job_id}_{task}") for task in range(len(array.requests))]


def _prefix(request: JobRequest) -> str:
    """``hpo.<uid>.`` from a request's job name (``hpo.<uid>.<run id>``)."""
    name = request.job_name
    return name[: -len(request.run_id)] if name.endswith(request.run_id) else name + "."
