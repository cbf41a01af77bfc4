"""What the driver needs from a place that runs jobs: submit a batch, poll all live jobs at once,
find jobs by name after a crash, cancel (``Executor``); and what it reads of the files those jobs
leave behind (``Workspace``: real files for local and Slurm jobs, memory for the simulator)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.placement import Placement, PlacementError, place
from hpo_slurm.core.protocol import MetricLine, RunResult, RunSpec, StopReason


SUBMISSION_REFUSED = "submission refused"  # the reason of a job the scheduler refused for good
REQUEUED_AFTER = "requeued after "  # the reason of a PENDING job that Slurm requeued: "requeued after NODE_FAIL"


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"  # ended by itself; the run's result file tells how it went
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"  # a node the job held failed (went DOWN, or its slurmd stopped answering)
    UNKNOWN = "UNKNOWN"  # the scheduler no longer knows the job

    @property
    def live(self) -> bool:
        return self in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobStatus:
    """``confirmed`` is False when the scheduler could not be asked properly: a PENDING job whose state
    is not known (squeue did not answer), or an UNKNOWN job whose end its accounting could not tell
    (judge it by its result file if it wrote one, else ask again later)."""

    state: JobState
    exit_code: Optional[int] = None
    reason: str = ""
    confirmed: bool = True


@dataclass(frozen=True)
class JobRequest:
    """One run to start. ``job_name`` is unique on the cluster so a restarted driver can find it.
    ``spec`` is what the run's job reads, given only to executors with ``delivers_specs``; for the
    others the driver has written it to ``spec_path`` before submitting. ``gpus``: the trial's GPUs in
    all; ``placement``: how its ranks spread over nodes (``Executor.placement``)."""

    run_id: str
    job_name: str
    run_dir: Path
    spec_path: Path
    gpus: int
    time_minutes: Optional[int] = None
    spec: Optional[RunSpec] = field(default=None, compare=False, hash=False, repr=False)
    placement: Placement = Placement()


@dataclass(frozen=True)
class WorkerBatch:
    """Worker jobs of a pool (``slurm.pool``) to start as one submission: one job per name in ``names``
    (a job array when several), each sized as one trial's job (``gpus``, ``placement``,
    ``time_minutes``). ``job_name`` is unique on the cluster so a restarted driver can find them;
    ``folder`` is theirs (scripts, logs). Each runs ``tasks.pool_worker.serve`` on the pool of the
    experiment in ``experiment_dir``."""

    job_name: str
    names: Tuple[str, ...]
    folder: Path
    experiment_dir: Path
    gpus: int
    placement: Placement
    time_minutes: Optional[int]
    idle_timeout_s: float
    signal_delay_s: int = 0  # the time-limit warning comes this long before the end


@dataclass(frozen=True)
class Submitted:
    job_id: str
    gpus: str = ""  # the devices handed out, when the executor chooses them


class SubmitError(Exception):
    """Submission failed. ``retry`` says whether trying again later can succeed; ``submitted`` maps
    the run id of every request that did go out before the failure to its job; ``limit`` says the
    cluster refused for a cap on the jobs a user may queue (MaxSubmitJobs), so fewer at once may pass."""

    def __init__(self, message: str, retry: bool, submitted: Optional[Mapping[str, "Submitted"]] = None,
                 limit: bool = False):
        super().__init__(message)
        self.retry = retry
        self.submitted: Dict[str, Submitted] = dict(submitted or {})
        self.limit = limit


class SchedulerError(Exception):
    """The scheduler could not be asked (its command failed to run or its controller did not answer in
    time); nothing can be concluded about the jobs, and trying again later may work."""


class Executor:
    name = "base"
    # True: ``submit`` puts each request's ``spec`` where its job finds it (one file per batch, written
    # durably before the job can start) and the job writes ``spec_path`` itself; the driver then
    # writes no per-run spec file. False: the driver writes ``spec_path`` before ``submit``.
    delivers_specs = False
    # True: a job's processes all end when the scheduler ends the job (Slurm's cgroup); False: a process
    # the job started may outlive it (a local controller killed outright)
    ends_processes_with_job = True

    def placement(self, config: ExperimentConfig) -> Placement:
        """Where each trial of ``config`` runs its ranks (``core.placement``): on one node here; the
        executors that know their nodes override it (asking the cluster once). The driver asks when it
        submits, so a search that only reports never asks. ``UserError`` naming the config's key when
        the trial cannot be placed; ``SchedulerError`` when the cluster cannot be asked now (the driver
        submits nothing and asks again later)."""
        return placement_or_error(config, None)

    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        """Start every request; the result is in request order."""
        raise NotImplementedError

    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        """The state of every given job, in one query. Jobs it cannot see are UNKNOWN."""
        raise NotImplementedError

    def find(self, requests: Sequence[JobRequest]) -> Dict[str, str]:
        """Run id -> job id for requests that were submitted but whose job id was never recorded.
        Raises SchedulerError when it cannot tell (then nothing may be submitted again)."""
        raise NotImplementedError

    def submit_workers(self, batch: WorkerBatch) -> List[Submitted]:
        """Start a pool's worker jobs; the result is in ``batch.names`` order. ``SubmitError`` as
        ``submit``'s, its ``submitted`` keyed by worker name."""
        raise UserError(f"the {self.name} executor cannot hold a pool of workers (slurm.pool)")

    def find_workers(self, batch: WorkerBatch) -> Dict[str, str]:
        """Worker name -> job id of the batch's jobs that were submitted (a crash before their ids were
        recorded). Raises SchedulerError when it cannot tell."""
        raise UserError(f"the {self.name} executor cannot hold a pool of workers (slurm.pool)")

    def adopt(self, job_id: str, gpus: str) -> None:
        """A job started by an earlier driver of this experiment is live: account for it."""

    def waiting_on(self) -> Optional[str]:
        """What the executor waits for now, on one line (a scheduler command that does not answer), or
        None. The driver shows it to ``status`` through its lock's heartbeat."""
        return None

    def finish(self) -> None:
        """The search is over and none of its runs is live: let go of what is held for it (a pool's
        idle workers)."""

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Stop the jobs (the trials get SIGTERM and checkpoint). Jobs that already ended are skipped.
        Raises SchedulerError when the request could not be delivered."""
        raise NotImplementedError


def placement_or_error(config: ExperimentConfig, gpus_per_node: Optional[int]) -> Placement:
    """``place(config.slots_per_trial, gpus_per_node)``, its refusal as a ``UserError`` naming the
    config file and ``resources.slots_per_trial``."""
    try:
        return place(config.slots_per_trial, gpus_per_node)
    except PlacementError as exc:
        raise UserError(f"{config.source}: resources.slots_per_trial: {exc}") from None


class Workspace:
    """The driver's view of what jobs leave behind. Offsets are opaque integers owned by the workspace."""

    def stop_requested(self) -> bool:
        raise NotImplementedError

    def read_metrics(self, trial_id: int, offset: int) -> Tuple[List[MetricLine], int, List[str]]:
        """New complete metric lines after ``offset``, the new offset, and warnings for bad lines."""
        raise NotImplementedError

    def read_result(self, run_id: str) -> Optional[RunResult]:
        """How the run's last attempt ended (``tasks.job.run_job``'s result), or None when there is no
        readable result (the attempt never wrote one, or wrote one this hpo-slurm cannot read)."""
        raise NotImplementedError

    def attempts(self, run_id: str) -> int:
        """How many times the run's job started (more than one when the scheduler requeued it)."""
        raise NotImplementedError

    def earlier_interruptions(self, run_id: str) -> List[StopReason]:
        """Why each attempt of the run before its last one stopped (the scheduler requeued the job under
        the same id): ``PREEMPTED`` or ``TIME_LIMIT`` as the attempt recorded it, ``PREEMPTED`` for an
        attempt that was ended before it could record anything."""
        raise NotImplementedError

    def run_times(self, run_id: str) -> Tuple[Optional[float], Optional[float]]:
        """When the run's last attempt started and ended, by the clock of the node it ran on."""
        raise NotImplementedError

    def latest_checkpoint(self, trial_id: int) -> Optional[str]:
        raise NotImplementedError

    def prepare_run(self, run_id: str, trial_id: int, spec: RunSpec) -> None:
        """Make what the run's job reads (its spec file) before it is submitted. The driver skips this
        for executors that deliver specs themselves (``Executor.delivers_specs``)."""
        raise NotImplementedError

    def request_stop(self, run_id: str) -> None:
        """Ask a running job to checkpoint and end (it sees ``should_stop()``)."""
        raise NotImplementedError

    def collect_garbage(self, config: ExperimentConfig, trials: Dict[int, Dict[str, Any]], trial_id: int,
                        validations: Callable[[], Dict[int, float]], referenced: Set[str]) -> int:
        """Apply the checkpoint policy to one trial; the bytes its checkpoints still use.
        ``validations()`` gives the trial's validation metric by length; call it only when needed."""
        raise NotImplementedError

    def run_dir(self, run_id: str) -> Path:
        raise NotImplementedError

    def spec_path(self, run_id: str) -> Path:
        raise NotImplementedError
