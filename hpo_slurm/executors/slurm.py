"""Runs as Slurm jobs through submitit.

Runs submitted together with the same resources go out as one job array (submitit's batch
submission), split below the cluster's MaxArraySize and throttled with ``%N``. Each batch is named
``hpo.<experiment uid>.<first run>+<more>`` and its run order is written to ``jobs/batches/<name>.json``
BEFORE sbatch runs, so a driver that dies between sbatch and recording the job ids finds the jobs
by name afterwards. Polling is one sacct call for all live jobs (squeue when accounting is off).
"""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import submitit
from submitit.core.utils import DelayedSubmission, JobPaths

from ..config import ExperimentConfig
from ..fsio import write_json_atomic
from ..job import run_job
from .base import Executor, JobRequest, JobState, JobStatus, SubmitError, Submitted
from .slurm_parse import is_retryable, parse_names, parse_sacct, parse_scontrol_config, parse_squeue

COMMAND_TIMEOUT_S = 60
NO_CAP_PARALLELISM = 100_000


def run_slurm(args: Sequence[str]) -> str:
    """Run a Slurm client command; its stdout, or an OSError/CalledProcessError."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, list(args), done.stdout, done.stderr)
    return done.stdout


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, config: ExperimentConfig, experiment_dir: Path):
        self.config = config
        self.jobs_dir = Path(experiment_dir) / "jobs"
        self.batches_dir = self.jobs_dir / "batches"
        cluster = parse_scontrol_config(run_slurm(["scontrol", "show", "config"]))
        self.max_array_size = int(cluster.get("MaxArraySize", "1001") or 1001)
        self.accounting = cluster.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"
        self.user = getpass.getuser()

    # ---- submission -----------------------------------------------------------------------------
    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        submitted: List[Submitted] = []
        for batch in self.batches(requests):
            try:
                submitted.extend(self._submit_batch(batch))
            except Exception as exc:  # sbatch's own errors come through submitit as various types
                message = _sbatch_message(exc)
                raise SubmitError(message, retry=is_retryable(message), submitted=submitted) from exc
        return submitted

    def batches(self, requests: Sequence[JobRequest]) -> List[List[JobRequest]]:
        """Consecutive requests with the same resources, in pieces below MaxArraySize."""
        groups: Dict[Tuple[int, Optional[int]], List[JobRequest]] = {}
        for request in requests:
            groups.setdefault((request.gpus, request.time_minutes), []).append(request)
        size = max(1, self.max_array_size)
        return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]

    def _submit_batch(self, batch: List[JobRequest]) -> List[Submitted]:
        name = batch_name(batch)
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.batches_dir / f"{name}.json", [r.run_id for r in batch])
        executor = submitit.SlurmExecutor(folder=self.jobs_dir / "%j", max_num_timeout=0)
        executor.update_parameters(**self.sbatch_parameters(batch[0], name, len(batch)))
        if len(batch) == 1:
            jobs = [executor.submit(run_job, str(batch[0].spec_path))]
        else:
            with executor.batch():
                futures = [executor.submit(run_job, str(r.spec_path)) for r in batch]
            jobs = futures
        return [Submitted(job.job_id) for job in jobs]

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
        if request.gpus:
            parameters["gpus_per_node"] = f"{slurm.gpu_type}:{request.gpus}" if slurm.gpu_type else request.gpus
        if slurm.setup:
            parameters["setup"] = list(slurm.setup)
        if count > 1:
            cap = self.config.searcher.max_concurrent_trials
            parameters["array_parallelism"] = cap if cap > 0 else NO_CAP_PARALLELISM
        return parameters

    # ---- polling --------------------------------------------------------------------------------
    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        if not job_ids:
            return {}
        found: Dict[str, JobStatus] = {}
        if self.accounting:
            found = self._sacct(job_ids)
        missing = [j for j in job_ids if j not in found]
        if missing:
            found.update(self._squeue(missing))
        return {j: found.get(j, JobStatus(JobState.UNKNOWN)) for j in job_ids}

    def _sacct(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        bases = sorted({j.split("_")[0] for j in job_ids})
        try:
            text = run_slurm(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", ",".join(bases)])
        except (OSError, subprocess.SubprocessError):
            return {}
        return parse_sacct(text)

    def _squeue(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        try:
            text = run_slurm(["squeue", "-h", "-r", "-u", self.user, "-o", "%i|%T|%r"])
        except (OSError, subprocess.SubprocessError):
            # an unreachable controller must not look like vanished jobs
            return {j: JobStatus(JobState.PENDING, reason="squeue failed") for j in job_ids}
        return parse_squeue(text)

    # ---- after a crash --------------------------------------------------------------------------
    def find(self, requests: Sequence[JobRequest]) -> Dict[str, str]:
        """Jobs of unbound runs, by batch name; repairs a batch whose job pickles were never placed."""
        wanted = {r.run_id: r for r in requests}
        batches = {}
        for manifest in self.batches_dir.glob("*.json") if self.batches_dir.is_dir() else []:
            run_ids = json.loads(manifest.read_text())
            if any(run_id in wanted for run_id in run_ids):
                batches[manifest.stem] = run_ids
        if not batches:
            return {}
        ids_by_name = self._jobs_named(list(batches))
        found: Dict[str, str] = {}
        for name, run_ids in batches.items():
            job_ids = sorted(set(ids_by_name.get(name, [])))
            if not job_ids:
                continue
            if len(run_ids) == 1:
                mapping = {run_ids[0]: job_ids[0]}
            else:
                base = job_ids[0].split("_")[0]
                mapping = {run_id: f"{base}_{index}" for index, run_id in enumerate(run_ids)}
            for run_id, job_id in mapping.items():
                if run_id in wanted:
                    self._ensure_pickle(job_id, wanted[run_id])
                    found[run_id] = job_id
        return found

    def _jobs_named(self, names: List[str]) -> Dict[str, List[str]]:
        joined = ",".join(names)
        found: Dict[str, List[str]] = {}
        commands = [["squeue", "-h", "-r", "-u", self.user, "--name", joined, "-o", "%i|%j"]]
        if self.accounting:
            commands.append(["sacct", "-n", "-P", "-X", "-S", "now-30days", "--name", joined, "-o", "JobID,JobName"])
        for command in commands:
            for name, ids in parse_names(run_slurm(command)).items():
                found.setdefault(name, []).extend(ids)
        return found

    def _ensure_pickle(self, job_id: str, request: JobRequest) -> None:
        """submitit places each job's pickle after sbatch returns; if the driver died in between,
        place it now so the waiting job can start."""
        paths = JobPaths(self.jobs_dir / "%j", job_id=job_id)
        if not paths.submitted_pickle.exists():
            paths.folder.mkdir(parents=True, exist_ok=True)
            delayed = DelayedSubmission(run_job, str(request.spec_path))
            delayed.set_timeout(request.time_minutes or 0, 0)
            delayed.dump(paths.submitted_pickle)

    def cancel(self, job_ids: Sequence[str]) -> None:
        """One scancel for all the jobs: Slurm sends SIGTERM (trials checkpoint), then SIGKILL after KillWait."""
        if job_ids:
            try:
                run_slurm(["scancel", *job_ids])
            except subprocess.CalledProcessError:
                pass  # some jobs had already ended; scancel still cancelled the others


def batch_name(batch: Iterable[JobRequest]) -> str:
    requests = list(batch)
    return f"{requests[0].job_name}+{len(requests) - 1}" if len(requests) > 1 else requests[0].job_name


def _sbatch_message(exc: Exception) -> str:
    text = str(exc).strip().replace("\n", " ")
    return text[-500:] if text else type(exc).__name__
