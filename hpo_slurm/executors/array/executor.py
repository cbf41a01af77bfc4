"""Runs as tasks of job arrays rendered from an sbatch template: the executor of ``hpo-slurm sweep``.

One ``submit`` call turns its runs into arrays of consecutive runs (same GPUs per task), each below
MaxArraySize and throttled with ``%K`` (K = max_concurrent_trials). Every array gets a folder
``jobs/array-<n>/`` with ``manifest.json`` (spec paths in task order) and ``array.sbatch``, both written
BEFORE sbatch runs; its job id goes to ``submitted.json`` after. A task picks its spec by
SLURM_ARRAY_TASK_ID (``hpo_slurm.tasks.sweep_task``); hyperparameters never reach a command line.

When the cluster caps the jobs a user may queue (MaxSubmitJobs of the association or QOS, MaxJobCount)
and the runs do not fit, the arrays go out in waves: the first now, each later one submitted by a tiny
wave job (``hpo_slurm.executors.array.wave_job``) that waits for the previous array with ``--dependency=afterany``.
Runs of a wave not submitted yet are bound to placeholder ids ``array-<n>_<task>``; ``poll`` reports
them PENDING while their wave chain is alive, resolves them to real ids once their array is out, and
UNKNOWN (the run is then LOST) when the chain broke. Arrays and wave jobs are named
``hpo.<uid>.array-<n>`` / ``hpo.<uid>.wave-<n>``, so anything submitted but not recorded is found by name.
"""

from __future__ import annotations

import getpass
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.fsio import read_json, write_bytes_atomic, write_json_atomic
from hpo_slurm.executors.array.caps import Limits, Plan, parse_assoc, parse_qos, plan_arrays, smallest, user_cap
from hpo_slurm.executors.array.render import (
    array_spec, load_template, option_lines, render_array, render_wave, wave_option_lines,
)
from hpo_slurm.executors.base import Executor, JobRequest, JobState, JobStatus, SchedulerError, SubmitError, Submitted
from hpo_slurm.executors.slurm.commands import (
    check_before_launch, cluster_config, has_accounting, poll_jobs, query_slurm, run_slurm, sbatch, scancel,
)
from hpo_slurm.executors.slurm.parse import (
    expand_array_ids, state_of,
)

log = logging.getLogger("hpo_slurm.array")

PLACEHOLDER = re.compile(r"^array-(\d+)_(\d+)$")
_ARRAY_DIR = re.compile(r"^array-(\d+)$")


def jobs_named(names: Sequence[str], user: str, accounting: bool) -> Dict[str, List[Tuple[str, JobState]]]:
    """Name -> [(job id, state)] of this user's jobs with those names (squeue, and sacct for ended ones).
    Raises SchedulerError when squeue (or sacct, with accounting) cannot answer: "no such job" is never
    concluded from a failed query, since it would have the job submitted twice."""
    found: Dict[str, List[Tuple[str, JobState]]] = {}
    if not names:
        return found
    joined = ",".join(sorted(set(names)))
    commands = [["squeue", "-h", "-r", "-u", user, "--name", joined, "-o", "%i|%j|%T"]]
    if accounting:
        commands.append(["sacct", "-n", "-P", "-X", "-S", "now-30days", "--name", joined, "-o", "JobID,JobName,State"])
    for command in commands:
        text = query_slurm(command)
        for line in text.splitlines():
            fields = line.split("|")
            if len(fields) < 3:
                continue
            for job_id in expand_array_ids(fields[0].strip()):
                found.setdefault(fields[1].strip(), []).append((job_id, state_of(fields[2])))
    return found


@dataclass
class _Array:
    index: int
    requests: List[JobRequest]
    time_minutes: Optional[int]
    gpus: int


class ArrayExecutor(Executor):
    name = "array"

    def __init__(self, config: ExperimentConfig, experiment_dir: Path, throttle: Optional[int] = None,
                 max_jobs: Optional[int] = None, python: Optional[str] = None):
        self.config = config
        self.dir = Path(experiment_dir).absolute()
        self.jobs_dir = self.dir / "jobs"
        self.throttle = config.searcher.max_concurrent_trials if throttle is None else throttle
        self.max_jobs = max_jobs  # the user's own cap, on top of the cluster's
        self.python = python or sys.executable
        self.user = getpass.getuser()
        self._cluster: Optional[Dict[str, str]] = None
        self._template: Optional[Tuple[str, str]] = None
        self.last_error: Optional[str] = None  # why the last submission failed, for messages

    # ---- the cluster ----------------------------------------------------------------------------
    @property
    def cluster(self) -> Dict[str, str]:
        """``scontrol show config``, read once; SchedulerError while the controller does not answer."""
        if self._cluster is None:
            self._cluster = cluster_config()
        return self._cluster

    @property
    def accounting(self) -> bool:
        return has_accounting(self.cluster)

    def limits(self) -> Limits:
        """MaxArraySize, and the room left under the caps on queued jobs: the user's association and
        QOS (MaxSubmitJobs), MaxJobCount (all users' jobs count) and ``max_jobs``."""
        max_array = int(self.cluster.get("MaxArraySize", "1001") or 1001)
        caps: List[Tuple[int, str, bool]] = []  # (cap, what, per user)
        if self.max_jobs:
            caps.append((self.max_jobs, "--max-jobs", True))
        job_count = _positive(self.cluster.get("MaxJobCount"))
        if job_count:
            caps.append((job_count, "MaxJobCount", False))
        if self.accounting:
            cap = self._user_cap()
            if cap:
                caps.append((cap, "MaxSubmitJobs", True))
        if not caps:
            return Limits(max_array)
        room, source = min((cap - self._queued(all_users=not per_user), f"{what} {cap}")
                           for cap, what, per_user in caps)
        return Limits(max_array, room=room, source=source)

    def _user_cap(self) -> Optional[int]:
        try:
            assoc = parse_assoc(run_slurm(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={self.user}",
                                           "format=MaxSubmit,GrpSubmit,QOS,DefaultQOS"]))
            qos = parse_qos(run_slurm(["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxSubmitPU,GrpSubmit"]))
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot read the queued-jobs caps from sacctmgr (%s); planning without them", _message(exc))
            return None
        return smallest(user_cap(assoc, qos, self.config.slurm.qos))

    def _queued(self, all_users: bool) -> int:
        args = ["squeue", "-h", "-r", "-o", "%i"] + ([] if all_users else ["-u", self.user])
        try:
            return len(run_slurm(args).split())
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot count queued jobs with squeue (%s); taking none", _message(exc))
            return 0

    @property
    def template(self) -> Tuple[str, str]:
        if self._template is None:
            self._template = load_template(self.config)
        return self._template

    # ---- planning and rendering -----------------------------------------------------------------
    def plan(self, requests: Sequence[JobRequest], limits: Limits, first_index: int) -> Tuple[List[_Array], Plan]:
        """The arrays for ``requests``: consecutive requests with the same GPUs, split by the plan."""
        arrays: List[_Array] = []
        plan_sizes: List[int] = []
        waves = False
        index = first_index
        start = 0
        while start < len(requests):
            end = start
            while end < len(requests) and requests[end].gpus == requests[start].gpus:
                end += 1
            group = list(requests[start:end])
            plan = plan_arrays(len(group), limits)
            waves = waves or plan.waves
            offset = 0
            for size in plan.sizes:
                chunk = group[offset:offset + size]
                times = [r.time_minutes for r in chunk]
                arrays.append(_Array(index, chunk, None if None in times else max(times), chunk[0].gpus))  # type: ignore[type-var]
                plan_sizes.append(size)
                index += 1
                offset += size
            start = end
        return arrays, Plan(plan_sizes, waves)

    def render(self, array: _Array, prefix: str) -> str:
        text, _ = self.template
        return render_array(
            text, job_name=f"{prefix}array-{array.index}", array=array_spec(len(array.requests), self.throttle),
            output=f"jobs/array-{array.index}/%A_%a.out", signal_delay=self.config.slurm.signal_delay_s,
            options=option_lines(self.config.slurm, array.gpus, array.time_minutes), setup=self.config.slurm.setup,
            experiment_dir=self.dir, python=self.python, manifest=self.array_dir(array.index) / "manifest.json",
        )

    def render_wave(self, index: int, prefix: str) -> str:
        return render_wave(
            job_name=f"{prefix}wave-{index}", output=f"jobs/array-{index}/wave-%j.out",
            options=wave_option_lines(self.config.slurm), setup=self.config.slurm.setup, python=self.python,
            manifest=self.array_dir(index) / "manifest.json",
        )

    def array_dir(self, index: int) -> Path:
        return self.jobs_dir / f"array-{index}"

    def check(self, count: int, gpus: int, time_minutes: Optional[int], prefix: str) -> Optional[str]:
        """Before anything exists: render a script for ``count`` tasks and let ``sbatch --test-only``
        judge it (partition, account, GPUs, memory, time). A UserError carries sbatch's reason; a
        warning is returned when Slurm cannot judge it now (``slurm_cli.check_script``)."""
        array = _Array(0, [JobRequest("check", "check", self.dir, self.dir / "spec.json", gpus, time_minutes)] * count,
                       time_minutes, gpus)
        script = self.render(array, prefix)
        return check_before_launch(lambda folder: script, "the sweep's jobs")

    # ---- submission -----------------------------------------------------------------------------
    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        if not requests:
            return []
        prefix = _prefix(requests[0])
        try:
            limits = self.limits()
            arrays, plan = self.plan(requests, limits, self._next_index())
            self._write(arrays, plan, prefix)
        except (UserError, SchedulerError) as exc:
            self.last_error = str(exc)
            raise SubmitError(str(exc), retry=True) from None
        submitted: List[Submitted] = []
        try:
            first = self._submit_array(arrays[0])
            submitted += [Submitted(f"{first}_{i}") for i in range(len(arrays[0].requests))]
            if plan.waves:
                if len(arrays) > 1:
                    self._submit_wave(arrays[1].index, after=first)
                    for array in arrays[1:]:
                        submitted += [Submitted(f"array-{array.index}_{i}") for i in range(len(array.requests))]
            else:
                for array in arrays[1:]:
                    job_id = self._submit_array(array)
                    submitted += [Submitted(f"{job_id}_{i}") for i in range(len(array.requests))]
        except SubmitError as exc:
            self.last_error = str(exc)
            raise SubmitError(str(exc), retry=exc.retry,
                              submitted={r.run_id: job for r, job in zip(requests, submitted)}) from None
        return submitted

    def _next_index(self) -> int:
        used = [int(m.group(1)) for p in (self.jobs_dir.iterdir() if self.jobs_dir.is_dir() else [])
                if (m := _ARRAY_DIR.match(p.name))]
        return max(used, default=-1) + 1

    def _write(self, arrays: List[_Array], plan: Plan, prefix: str) -> None:
        """Manifests and scripts of every array (and wave job), before anything is submitted."""
        for position, array in enumerate(arrays):
            folder = self.array_dir(array.index)
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / "manifest.json", {
                "array": array.index, "experiment_dir": str(self.dir), "job_name": f"{prefix}array-{array.index}",
                "wave_name": f"{prefix}wave-{array.index}" if plan.waves and position > 0 else None,
                "previous": arrays[position - 1].index if plan.waves and position > 0 else None,
                "next": arrays[position + 1].index if plan.waves and position + 1 < len(arrays) else None,
                "runs": [r.run_id for r in array.requests], "specs": [str(r.spec_path) for r in array.requests],
                "gpus": array.gpus, "time_minutes": array.time_minutes, "throttle": self.throttle,
            })
            _write_text(folder / "array.sbatch", self.render(array, prefix))
            if plan.waves and position > 0:
                _write_text(folder / "wave.sbatch", self.render_wave(array.index, prefix))

    def _submit_array(self, array: _Array) -> str:
        job_id = sbatch(self.array_dir(array.index) / "array.sbatch", cwd=self.dir)
        write_json_atomic(self.array_dir(array.index) / "submitted.json", {"job_id": job_id})
        return job_id

    def _submit_wave(self, index: int, after: str) -> str:
        job_id = sbatch(self.array_dir(index) / "wave.sbatch", cwd=self.dir, dependency=f"afterany:{after}")
        write_json_atomic(self.array_dir(index) / "wave.json", {"job_id": job_id})
        return job_id

    # ---- the state of arrays --------------------------------------------------------------------
    def manifest(self, index: int) -> Optional[Dict]:
        try:
            return read_json(self.array_dir(index) / "manifest.json")
        except (OSError, ValueError):
            return None

    def submitted_id(self, index: int) -> Optional[str]:
        """The array's job id as recorded when it was submitted (by the sweep or a wave job)."""
        try:
            return str(read_json(self.array_dir(index) / "submitted.json")["job_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def resolve(self, job_id: str) -> Optional[str]:
        """The real job id of a placeholder whose array is out now, else None."""
        match = PLACEHOLDER.match(job_id)
        if not match:
            return None
        base = self.submitted_id(int(match.group(1)))
        return f"{base}_{match.group(2)}" if base else None

    def chain_states(self, indexes: Sequence[int]) -> Dict[int, Tuple[str, Optional[str]]]:
        """For arrays without a recorded job id: ("submitted", job id) when found by name,
        ("pending", None) while a wave job that will submit them is alive, else ("broken", None)."""
        manifests: Dict[int, Dict] = {}
        todo = list(indexes)
        while todo:
            index = todo.pop()
            if index in manifests:
                continue
            manifest = self.manifest(index)
            manifests[index] = manifest or {}
            if manifest and manifest.get("previous") is not None:
                todo.append(int(manifest["previous"]))
        names = [n for m in manifests.values() for n in (m.get("job_name"), m.get("wave_name")) if n]
        by_name = jobs_named(names, self.user, self.accounting) if names else {}
        states: Dict[int, Tuple[str, Optional[str]]] = {}

        def wave_live(manifest: Dict) -> Optional[bool]:
            """None: no wave job was submitted for this array; else whether it is still queued or running."""
            jobs = by_name.get(manifest.get("wave_name") or "", [])
            recorded = (self.array_dir(int(manifest["array"])) / "wave.json").exists()
            if not jobs and not recorded:
                return None
            return any(state.live for _, state in jobs)

        def state_of_array(index: int, depth: int = 0) -> Tuple[str, Optional[str]]:
            manifest = manifests.get(index) or {}
            base = self.submitted_id(index)
            if base is None:
                jobs = by_name.get(manifest.get("job_name") or "", [])
                if jobs:
                    base = sorted(jobs)[0][0].split("_")[0]
                    write_json_atomic(self.array_dir(index) / "submitted.json", {"job_id": base})
            if base is not None:
                return "submitted", base
            if not manifest or depth > 10_000:
                return "broken", None
            live = wave_live(manifest)
            if live is not None:
                return ("pending" if live else "broken"), None
            previous = manifest.get("previous")
            if previous is None:
                return "broken", None
            previous_manifest = manifests.get(int(previous)) or {}
            live = wave_live(previous_manifest) if previous_manifest else None
            if live is not None:
                return ("pending" if live else "broken"), None
            if previous_manifest.get("previous") is None:
                return "broken", None  # the sweep itself should have submitted this wave job
            return ("pending", None) if state_of_array(int(previous), depth + 1)[0] == "pending" else ("broken", None)

        for index in indexes:
            states[index] = state_of_array(index)
        return states

    # ---- polling --------------------------------------------------------------------------------
    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        if not job_ids:
            return {}
        real: Dict[str, str] = {}
        waiting: Dict[int, List[Tuple[str, str]]] = {}  # array -> [(placeholder, task)]
        bases: Dict[int, Optional[str]] = {}
        for job_id in job_ids:
            match = PLACEHOLDER.match(job_id)
            if not match:
                real[job_id] = job_id
                continue
            index = int(match.group(1))
            if index not in bases:
                bases[index] = self.submitted_id(index)
            if bases[index]:
                real[job_id] = f"{bases[index]}_{match.group(2)}"
            else:
                waiting.setdefault(index, []).append((job_id, match.group(2)))
        result: Dict[str, JobStatus] = {}
        if waiting:
            try:
                chains = self.chain_states(list(waiting))
            except SchedulerError as exc:  # nothing can be said about the waves: ask again next poll
                log.warning("%s; runs waiting for their wave stay pending", exc)
                chains = {index: ("pending", None) for index in waiting}
            for index, (state, base) in chains.items():
                for placeholder, task in waiting[index]:
                    if state == "submitted":
                        real[placeholder] = f"{base}_{task}"
                    elif state == "pending":
                        result[placeholder] = JobStatus(JobState.PENDING, reason="waiting for its wave")
                    else:
                        result[placeholder] = JobStatus(JobState.UNKNOWN, reason="its wave job ended without submitting it")
        statuses = self._states(sorted(set(real.values())))
        for job_id, actual in real.items():
            result[job_id] = statuses.get(actual, JobStatus(JobState.UNKNOWN))
        return result

    def _states(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        if not job_ids:
            return {}
        try:
            accounting: Optional[bool] = self.accounting
        except SchedulerError as exc:
            log.warning("%s; jobs gone from squeue are judged by their result files only", exc)
            accounting = None
        return poll_jobs(job_ids, self.user, accounting)

    # ---- after a crash --------------------------------------------------------------------------
    def find(self, requests: Sequence[JobRequest]) -> Dict[str, str]:
        """Jobs of runs recorded but never bound: from the newest manifest that lists each run, its
        real id when the array is out (recorded, or found by name), a placeholder while its wave is due."""
        wanted = {r.run_id for r in requests}
        if not wanted or not self.jobs_dir.is_dir():
            return {}
        listing: List[Tuple[int, Dict]] = []
        for index in sorted((int(m.group(1)) for p in self.jobs_dir.iterdir() if (m := _ARRAY_DIR.match(p.name))),
                            reverse=True):
            manifest = self.manifest(index)
            if manifest and wanted.intersection(manifest.get("runs", [])):
                listing.append((index, manifest))
        if not listing:
            return {}
        states = self.chain_states([index for index, _ in listing])
        found: Dict[str, str] = {}
        for index, manifest in listing:
            state, base = states[index]
            for task, run_id in enumerate(manifest["runs"]):
                if run_id not in wanted or run_id in found:
                    continue
                if state == "submitted":
                    found[run_id] = f"{base}_{task}"
                elif state == "pending":
                    found[run_id] = f"array-{index}_{task}"
        return found

    def cancel(self, job_ids: Sequence[str]) -> None:
        """scancel the real jobs (Slurm sends SIGTERM, the trials checkpoint). A placeholder's array
        is not out yet: its wave job sees the stop request (or the runs' stop files) and submits
        nothing, or its tasks end at once."""
        real = [self.resolve(j) or j for j in job_ids]
        real = [j for j in real if not PLACEHOLDER.match(j)]
        scancel(real)


def _prefix(request: JobRequest) -> str:
    """``hpo.<uid>.`` from a request's job name (``hpo.<uid>.<run id>``)."""
    name = request.job_name
    return name[: -len(request.run_id)] if name.endswith(request.run_id) else name + "."


def _positive(text: Optional[str]) -> Optional[int]:
    text = (text or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _write_text(path: Path, text: str) -> None:
    """Publish a script by rename, synced first: a wave job submits it long after the sweep returned."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _message(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return " ".join((exc.stderr or exc.stdout or "").split()) or f"exit status {exc.returncode}"
    return str(exc)
