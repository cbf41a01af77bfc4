"""Runs as Slurm jobs through submitit.

Runs submitted together with the same resources go out as one job array, split below the cluster's
MaxArraySize and throttled with ``%N``; submitit renders and submits the sbatch script, and its task
side runs each job. Each batch is named ``hpo.<experiment uid>.<first run>+<more>`` and gets the
folder ``jobs/<name>/`` (submitit's folder: script, logs, result pickles). BEFORE sbatch runs, two
files are written there and synced: ``manifest.json`` (a ``protocol.BatchManifest``: run ids in task
order and each run's spec)
and ``task.pkl`` (one submitit pickle of ``slurm_task.run_task`` for the whole batch). Nothing is
written per run or per task by the driver: each task links its submitit pickle name to ``task.pkl``
and writes its run's ``spec.json`` from the manifest (``hpo_slurm.tasks.slurm_task``). A driver that dies
between sbatch and recording the job ids finds the jobs by name afterwards, and they run as they
are. Polling is one sacct call for all live jobs (squeue when accounting is off).

A trial of one GPU (or none) is one task, started by submitit's ``srun``. A trial of several ranks
gets ``--nodes``, ``--ntasks-per-node`` and ``--gpus-per-node`` from its placement and its job's own
process runs in the batch step, where it launches the ranks as one ``srun`` step
(``hpo_slurm.tasks.ranks``).
"""

from __future__ import annotations

import getpass
import logging
import shlex
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import cloudpickle
import submitit
from submitit.core.utils import DelayedSubmission

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.placement import Placement
from hpo_slurm.core.fsio import read_json, write_bytes_atomic, write_json_atomic
from hpo_slurm.core.protocol import BatchManifest
from hpo_slurm.tasks.pool_worker import serve
from hpo_slurm.tasks.slurm_task import MANIFEST, SHARED_PICKLE, run_task
from hpo_slurm.executors.base import (REQUEUED_AFTER, Executor, JobRequest, JobState, JobStatus, SchedulerError,
                                      SubmitError, Submitted, WorkerBatch)
from hpo_slurm.executors.slurm.commands import (check_before_launch, cluster_config, has_accounting, jobs_named,
                                                poll_jobs, scancel)
from hpo_slurm.executors.slurm.outages import Outages
from hpo_slurm.executors.slurm.parse import is_retryable, is_submit_limit
from hpo_slurm.executors.slurm.placement import PartitionPlacement

NO_CAP_PARALLELISM = 100_000
_REQUEUE_CAUSES = {"NODE_FAIL": "a node of the job failed", "PREEMPTED": "preempted"}
log = logging.getLogger(__name__)


class BatchExecutor(submitit.SlurmExecutor):
    """submitit's Slurm executor, with ONE pickle for a batch of jobs instead of one per job: every
    job of the batch runs the same ``DelayedSubmission``, which picks its work by array index. Its
    folder must not depend on the job id (no ``%j``): it is the batch's folder."""

    @property
    def _submitit_command_str(self) -> str:
        return " ".join([self.python, "-u -m hpo_slurm.tasks.slurm_task", shlex.quote(str(self.folder))])

    def submit_batch(self, delayed: DelayedSubmission, count: int) -> List[str]:
        """Write ``delayed`` as the batch's pickle, then submit ONE sbatch: a job array of ``count``
        tasks, or a lone job when ``count`` is 1. The job ids, in task order."""
        self.write_shared_pickle(delayed)
        if count > 1:
            self.parameters["map_count"] = count
        job = self._submit_command(self._submitit_command_str)
        return [f"{job.job_id}_{index}" for index in range(count)] if count > 1 else [job.job_id]

    def write_shared_pickle(self, delayed: DelayedSubmission) -> Path:
        """``<folder>/task.pkl``, synced to disk: what every job of the batch runs."""
        delayed.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
        path = self.folder / SHARED_PICKLE
        write_bytes_atomic(path, cloudpickle.dumps(delayed))
        return path


class SlurmExecutor(PartitionPlacement, Executor):
    name = "slurm"
    delivers_specs = True

    def __init__(self, config: ExperimentConfig, experiment_dir: Path):
        """Asks the controller for the cluster's configuration (MaxArraySize, whether sacct keeps
        accounting). A controller that does not answer yet is logged and asked again at each poll and
        submission: meanwhile jobs are polled with squeue alone (judged by their result files when they
        leave it) and a submission fails as retryable, so a driver started while slurmctld restarts
        waits for it instead of stopping."""
        self.config = config
        self.jobs_dir = Path(experiment_dir) / "jobs"
        self.user = getpass.getuser()
        self.outages = Outages()
        self._cluster: Optional[Dict[str, str]] = None
        self._accounting: Optional[bool] = None  # None: not known yet
        self._requeued: Set[str] = set()  # jobs logged as requeued, until they run again
        try:
            self._cluster = cluster_config()  # not answering is logged by the first poll that asks again
            self._accounting = has_accounting(self._cluster)
        except SchedulerError:
            pass

    def _learn_cluster(self) -> Optional[Dict[str, str]]:
        """``scontrol show config``, asked until it has answered once; None while it does not."""
        if self._cluster is None:
            try:
                self._cluster = cluster_config()
            except SchedulerError as exc:
                self.outages.failed("slurmctld", str(exc), "polling with squeue alone, submitting once it answers")
                return None
            self.outages.answered("slurmctld")
            if self._accounting is None:
                self._accounting = has_accounting(self._cluster)
        return self._cluster

    @property
    def accounting(self) -> Optional[bool]:
        """Whether sacct keeps accounting on this cluster; None until the controller has answered."""
        return self._accounting

    @accounting.setter
    def accounting(self, value: bool) -> None:
        self._accounting = value

    @property
    def max_array_size(self) -> int:
        """The cluster's MaxArraySize; SchedulerError while the controller has never answered."""
        cluster = self._learn_cluster()
        if cluster is None:
            raise SchedulerError("scontrol show config failed: the controller has not answered yet")
        return int(cluster.get("MaxArraySize", "1001") or 1001)

    # ---- submission -----------------------------------------------------------------------------
    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        """Every request must carry its ``spec`` (``delivers_specs``)."""
        missing = [r.run_id for r in requests if r.spec is None]
        if missing:
            raise ValueError(f"the Slurm executor delivers specs itself: no spec for {', '.join(missing)}")
        submitted: Dict[str, Submitted] = {}
        try:
            batches = self.batches(requests)
        except SchedulerError as exc:  # the controller has not answered yet: nothing was submitted
            raise SubmitError(str(exc), retry=True) from None
        for batch in batches:
            try:
                jobs = self._submit_batch(batch)
            except Exception as exc:  # sbatch's own errors come through submitit as various types
                raise _refusal(exc, submitted) from exc
            submitted.update(zip((r.run_id for r in batch), jobs))
        return [submitted[r.run_id] for r in requests]  # batches group by resources: back to request order

    def batches(self, requests: Sequence[JobRequest]) -> List[List[JobRequest]]:
        """The requests grouped by resources (GPUs, placement, time limit), in pieces below MaxArraySize."""
        groups: Dict[Tuple[int, Placement, Optional[int]], List[JobRequest]] = {}
        for request in requests:
            groups.setdefault((request.gpus, request.placement, request.time_minutes), []).append(request)
        size = max(1, self.max_array_size)
        return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]

    def _submit_batch(self, batch: List[JobRequest]) -> List[Submitted]:
        """The batch's manifest and pickle (synced), then one sbatch; the jobs in request order."""
        name = batch_name(batch)
        folder = self.jobs_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / MANIFEST
        write_json_atomic(manifest, BatchManifest(tuple(r.spec for r in batch)).to_json())
        return self._sbatch(folder, batch[0], name, len(batch), DelayedSubmission(run_task, str(manifest)))

    def _sbatch(self, folder: Path, request: JobRequest, name: str, count: int, delayed: DelayedSubmission,
                parallelism: Optional[int] = None) -> List[Submitted]:
        """ONE sbatch named ``name`` in the submitit folder ``folder``: ``count`` jobs (an array when more
        than one) sized as ``request``'s, each running ``delayed``; ``parallelism`` caps the array's tasks
        at once (default: searcher.max_concurrent_trials). The jobs in task order."""
        executor = BatchExecutor(folder=folder, max_num_timeout=0)
        parameters = self.sbatch_parameters(request, name, count)
        if parallelism and count > 1:
            parameters["array_parallelism"] = parallelism
        executor.update_parameters(**parameters)
        return [Submitted(job_id) for job_id in executor.submit_batch(delayed, count)]

    def submit_workers(self, batch: WorkerBatch) -> List[Submitted]:
        """One sbatch for the batch: a job array of one task per worker (a lone job for one), sized as a
        trial's job with the pool's time limit, running ``tasks.pool_worker.serve``."""
        if self._learn_cluster() is None:
            raise SubmitError("scontrol show config failed: the controller has not answered yet", retry=True)
        request = JobRequest("pool", batch.job_name, batch.folder, batch.folder / "spec.json", batch.gpus,
                             batch.time_minutes, placement=batch.placement)
        time_s = 60.0 * batch.time_minutes if batch.time_minutes else None
        delayed = DelayedSubmission(serve, str(batch.experiment_dir), list(batch.names), batch.idle_timeout_s, time_s,
                                    batch.signal_delay_s)
        try:
            batch.folder.mkdir(parents=True, exist_ok=True)
            return self._sbatch(batch.folder, request, batch.job_name, len(batch.names), delayed, len(batch.names))
        except Exception as exc:  # sbatch's own errors come through submitit as various types
            raise _refusal(exc) from exc

    def find_workers(self, batch: WorkerBatch) -> Dict[str, str]:
        if self._accounting is None and self._learn_cluster() is None:
            raise SchedulerError("cannot look worker jobs up by name: the controller has not answered yet")
        jobs = jobs_named([batch.job_name], self.user, self.accounting).get(batch.job_name, [])
        return _in_task_order(batch.names, [job_id for job_id, _ in jobs])

    def check(self, gpus: int, time_minutes: Optional[int]) -> Optional[str]:
        """Before anything exists: let ``sbatch --test-only`` judge the script of one of this search's
        jobs (partition, account, QOS, GPUs, memory, time, extra options). A UserError carries sbatch's
        reason; a warning is returned when Slurm cannot judge it now (``commands.check_before_launch``)."""
        placement = self.placement(self.config)

        def render(folder: Path) -> str:
            request = JobRequest("check", "hpo-slurm-check", folder, folder / "spec.json", gpus, time_minutes,
                                 placement=placement)
            executor = BatchExecutor(folder=folder, max_num_timeout=0)
            executor.update_parameters(**self.sbatch_parameters(request, request.job_name, 1))
            return executor._make_submission_file_text("true", "check")

        return check_before_launch(render, "the search's jobs")

    def sbatch_parameters(self, request: JobRequest, name: str, count: int) -> Dict[str, object]:
        """submitit parameters for a batch: the ``slurm:`` section, GPUs per trial and the time limit."""
        slurm = self.config.slurm
        extra: Dict[str, object] = {"requeue": True}
        for option, value in slurm.extra_args:
            extra[option] = True if value == "" else value
        for option in ("account", "qos", "constraint", "mem"):
            if getattr(slurm, option):
                extra[option] = getattr(slurm, option)
        parameters: Dict[str, object] = {
            "job_name": name,
            "signal_delay_s": slurm.signal_delay_s,
            "additional_parameters": extra,
            "stderr_to_stdout": False,
        }
        if slurm.partition:
            parameters["partition"] = slurm.partition
        if request.time_minutes:
            parameters["time"] = request.time_minutes
        if slurm.cpus_per_task:
            parameters["cpus_per_task"] = slurm.cpus_per_task
        placement = request.placement
        gpus = placement.node_gpus(request.gpus)
        if gpus:
            parameters["gpus_per_node"] = f"{slurm.gpu_type}:{gpus}" if slurm.gpu_type else gpus
        if placement.distributed:  # the job's process launches the ranks itself (tasks.ranks)
            parameters.update(nodes=placement.nodes, ntasks_per_node=placement.ranks_per_node, use_srun=False)
        if slurm.setup:
            parameters["setup"] = list(slurm.setup)
        if count > 1:
            cap = self.config.searcher.max_concurrent_trials
            parameters["array_parallelism"] = cap if cap > 0 else NO_CAP_PARALLELISM
        return parameters

    # ---- polling --------------------------------------------------------------------------------
    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        """``commands.poll_jobs``; a job Slurm requeued after a node failure or a preemption is logged
        once per requeue."""
        if self._accounting is None:
            self._learn_cluster()
        statuses = poll_jobs(job_ids, self.user, self._accounting, self.outages)
        for job_id, status in statuses.items():
            if status.reason.startswith(REQUEUED_AFTER) and job_id not in self._requeued:
                self._requeued.add(job_id)
                ended = status.reason[len(REQUEUED_AFTER):]
                log.info("job %s: Slurm requeued it after %s (%s); it resumes from its checkpoint once it starts "
                         "again", job_id, ended, _REQUEUE_CAUSES.get(ended.split(" ")[0], "its allocation ended"))
            elif status.state == JobState.RUNNING:
                self._requeued.discard(job_id)
        return statuses

    # ---- after a crash --------------------------------------------------------------------------
    def find(self, requests: Sequence[JobRequest]) -> Dict[str, str]:
        """Jobs of unbound runs, by batch name (the batch manifests list the runs in task order)."""
        wanted = {r.run_id for r in requests}
        batches = {}
        for manifest in self.jobs_dir.glob(f"*/{MANIFEST}") if self.jobs_dir.is_dir() else []:
            run_ids = read_json(manifest)["runs"]
            if wanted.intersection(run_ids):
                batches[manifest.parent.name] = run_ids
        if not batches:
            return {}
        if self._accounting is None and self._learn_cluster() is None:
            raise SchedulerError("cannot look jobs up by name: the controller has not answered yet")
        ids_by_name = {name: [job_id for job_id, _ in jobs]
                       for name, jobs in jobs_named(list(batches), self.user, self.accounting).items()}
        found: Dict[str, str] = {}
        for name, run_ids in batches.items():
            mapping = _in_task_order(run_ids, ids_by_name.get(name, []))
            found.update((run_id, job_id) for run_id, job_id in mapping.items() if run_id in wanted)
        return found

    def waiting_on(self) -> Optional[str]:
        return self.outages.describe()

    def cancel(self, job_ids: Sequence[str]) -> None:
        scancel(job_ids)


def _in_task_order(keys: Sequence[str], job_ids: Sequence[str]) -> Dict[str, str]:
    """Each key of a batch submitted as one sbatch (in task order) -> its job, from the job ids Slurm
    lists under the batch's name: the lone job, or ``<array>_<index>``; {} when none is listed."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    if len(keys) == 1:
        return {keys[0]: ids[0]}
    base = ids[0].split("_")[0]
    return {key: f"{base}_{index}" for index, key in enumerate(keys)}


def _refusal(exc: Exception, submitted: Optional[Mapping[str, Submitted]] = None) -> SubmitError:
    """sbatch's error as a SubmitError: retryable or not, a queued-jobs cap or not, by its message."""
    message = _sbatch_message(exc)
    return SubmitError(message, retry=is_retryable(message), submitted=submitted, limit=is_submit_limit(message))


def batch_name(batch: Iterable[JobRequest]) -> str:
    requests = list(batch)
    return f"{requests[0].job_name}+{len(requests) - 1}" if len(requests) > 1 else requests[0].job_name


def _sbatch_message(exc: Exception) -> str:
    text = str(exc).strip().replace("\n", " ")
    return text[-500:] if text else type(exc).__name__
