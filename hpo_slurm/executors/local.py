"""Runs as local processes through submitit's local executor: the embedded default with no Slurm.

Each run gets its own controller process in a new session, so Ctrl-C on the driver leaves trials
running and a restarted driver re-adopts them by pid. GPUs, when the machine has any, are handed out
per run through CUDA_VISIBLE_DEVICES. A trial of several ranks runs them as local processes started
by its job (``hpo_slurm.tasks.ranks``), all on this machine; on a machine without GPUs they run on CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

import submitit
from submitit.local import local as submitit_local

from hpo_slurm.core.errors import UserError
from hpo_slurm.tasks.job import run_job
from hpo_slurm.tasks.pool_worker import serve
from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.placement import Placement
from hpo_slurm.executors.base import (
    Executor, JobRequest, JobState, JobStatus, SubmitError, Submitted, WorkerBatch, placement_or_error,
)

NO_TIME_LIMIT_MINUTES = 60 * 24 * 30


def count_local_gpus() -> int:
    """``HPO_SLURM_LOCAL_GPUS`` if set, else the GPUs ``nvidia-smi -L`` lists, else 0."""
    override = os.environ.get("HPO_SLURM_LOCAL_GPUS")
    if override is not None:
        if not override.strip().isdigit():
            raise UserError(f"$HPO_SLURM_LOCAL_GPUS: expected a number of GPUs, got {override!r}")
        return int(override)
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


class _DetachedLocalExecutor(submitit.LocalExecutor):
    """submitit's local executor, but each controller starts in its own session."""

    def _submit_command(self, command: str) -> submitit_local.LocalJob:
        # a local job is not a Slurm job, even when the driver runs inside an allocation (salloc)
        env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        env.update(
            SUBMITIT_LOCAL_NTASKS="1",
            SUBMITIT_LOCAL_COMMAND=command,
            SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * self.parameters.get("timeout_min", NO_TIME_LIMIT_MINUTES))),
            SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(self.parameters.get("signal_delay_s", 30))),
            SUBMITIT_LOCAL_NODEID="0",
            SUBMITIT_LOCAL_JOB_NUM_NODES="1",
            SUBMITIT_STDERR_TO_STDOUT="",
            SUBMITIT_EXECUTOR="local",
            CUDA_VISIBLE_DEVICES=self.parameters.get("cuda_devices", ""),
            SUBMITIT_LOCAL_WITH_SHELL="",
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "submitit.local._local", str(self.folder)],
            env=env,
            start_new_session=True,
            # the controller must not hold the driver's terminal or pipes open after the driver exits
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return submitit_local.LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=[0])

    @classmethod
    def _valid_parameters(cls) -> Set[str]:
        return {"setup", "cuda_devices"}


class LocalExecutor(Executor):
    name = "local"
    ends_processes_with_job = False  # a run's process outlives a controller killed outright

    def __init__(self, gpus: Optional[int] = None, signal_delay_s: int = 30):
        self.total_gpus = count_local_gpus() if gpus is None else gpus
        self.signal_delay_s = signal_delay_s
        self._processes: Dict[str, subprocess.Popen] = {}
        self._gpus_by_job: Dict[str, List[int]] = {}

    def placement(self, config: ExperimentConfig) -> Placement:
        """Every rank on this machine; refused when the machine has GPUs but fewer than a trial's."""
        slots = config.slots_per_trial
        if self.total_gpus and slots > self.total_gpus:
            raise UserError(f"{config.source}: resources.slots_per_trial: {slots} GPUs per trial, but this "
                            f"machine has {self.total_gpus} (nvidia-smi, or $HPO_SLURM_LOCAL_GPUS)")
        return placement_or_error(config, None)

    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        submitted = []
        for request in requests:
            try:
                submitted.append(self._start(request.run_dir, request.gpus, run_job, str(request.spec_path)))
            except OSError as exc:
                raise SubmitError(f"could not start a local process: {exc}", retry=True) from exc
        return submitted

    def submit_workers(self, batch: WorkerBatch) -> List[Submitted]:
        """One local process per worker, in ``batch.folder/<name>``, with the GPUs of one trial each."""
        submitted: List[Submitted] = []
        for name in batch.names:
            try:
                submitted.append(self._start(batch.folder / name, batch.gpus, serve, str(batch.experiment_dir), [name],
                                             batch.idle_timeout_s))
            except (OSError, SubmitError) as exc:
                raise SubmitError(f"could not start a local worker process: {exc}", retry=True,
                                  submitted=dict(zip(batch.names, submitted))) from exc
        return submitted

    def _start(self, folder: Path, gpus: int, function: Callable[..., Any], *args: Any) -> Submitted:
        """``function(*args)`` in a detached submitit controller with its submitit folder ``folder``, on
        ``gpus`` of this machine's GPUs (SubmitError when too few are free; OSError when it cannot start)."""
        devices = self._take_gpus(gpus) if self.total_gpus else []
        executor = _DetachedLocalExecutor(folder=folder)
        executor.update_parameters(
            timeout_min=NO_TIME_LIMIT_MINUTES,  # slurm.time is Slurm's; local runs have no limit
            signal_delay_s=self.signal_delay_s,
            cuda_devices=",".join(str(d) for d in devices),
        )
        job = executor.submit(function, *args)
        self._processes[job.job_id] = job._process
        self._gpus_by_job[job.job_id] = devices
        return Submitted(job.job_id, ",".join(str(d) for d in devices))

    def find_workers(self, batch: WorkerBatch) -> Dict[str, str]:
        found = {name: _submitted_job_id(batch.folder / name) for name in batch.names}
        return {name: job_id for name, job_id in found.items() if job_id is not None}

    def _take_gpus(self, count: int) -> List[int]:
        busy = {d for devices in self._gpus_by_job.values() for d in devices}
        free = [d for d in range(self.total_gpus) if d not in busy]
        if count > len(free):
            raise SubmitError(f"{count} GPUs wanted, {len(free)} of {self.total_gpus} free", retry=True)
        return free[:count]

    def adopt(self, job_id: str, gpus: str) -> None:
        self._gpus_by_job[job_id] = [int(d) for d in gpus.split(",") if d.strip()]

    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        return {job_id: self._status(job_id) for job_id in job_ids}

    def _status(self, job_id: str) -> JobStatus:
        process = self._processes.get(job_id)
        if process is not None:
            code = process.poll()
            if code is None:
                return JobStatus(JobState.RUNNING)
            self._release(job_id)
            return JobStatus(JobState.COMPLETED if code == 0 else JobState.FAILED, exit_code=code)
        if _is_our_controller(job_id):
            return JobStatus(JobState.RUNNING)
        self._release(job_id)
        return JobStatus(JobState.UNKNOWN)

    def _release(self, job_id: str) -> None:
        self._processes.pop(job_id, None)
        self._gpus_by_job.pop(job_id, None)

    def find(self, requests: Sequence[JobRequest]) -> Dict[str, str]:
        found = {request.run_id: _submitted_job_id(Path(request.run_dir)) for request in requests}
        return {run_id: job_id for run_id, job_id in found.items() if job_id is not None}

    def cancel(self, job_ids: Sequence[str]) -> None:
        """SIGTERM to each controller, which passes it to the trial: it checkpoints and exits."""
        for job_id in job_ids:
            if self._status(job_id).state.live:
                try:
                    os.kill(int(job_id), signal.SIGTERM)
                except ProcessLookupError:
                    pass


def _submitted_job_id(folder: Path) -> Optional[str]:
    """The job id of the controller started for ``folder``: submitit names the pickled job after the
    controller's pid once it has started it. None when nothing was started there."""
    pickles = sorted(folder.glob("*_submitted.pkl"))
    return pickles[-1].name.split("_")[0] if pickles else None


def _is_our_controller(job_id: str) -> bool:
    """The pid is alive, not a zombie, and is a submitit local controller (not a reused pid)."""
    try:
        with open(f"/proc/{int(job_id)}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{int(job_id)}/cmdline", "rb") as cmdline:
            command = cmdline.read()
    except (OSError, ValueError, IndexError):
        return False
    return state != b"Z" and b"submitit.local._local" in command
