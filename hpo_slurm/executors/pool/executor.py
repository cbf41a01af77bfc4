"""A pool of worker jobs in front of a ``local`` or ``slurm`` executor (``slurm.pool``): to the driver it
is an executor like any other, but a run it "submits" is queued for the pool's workers instead of
becoming a job, so a rung continuation starts on a worker that already holds its GPUs.

The driver's guarantees carry over unchanged: a run is recorded in the database before it is queued (the
driver's act phase), and its job id, ``pool:<run id>``, is bound after; a restarted driver finds a run
queued before a crash in the pool's files (``find``). Runs change hands between the queue, the workers
and the driver only by atomic renames (``core.pool_files``), so no run is run twice, and the driver
stays the only writer of the database: workers write only the pool's and the run's own files, and every
result reaches the database through the run's result file as before.

One poll asks the scheduler about the worker jobs alone (one query) and reads each pooled run's state
from the files: queued (PENDING), claimed and running on a live worker (RUNNING), ended on its worker
(COMPLETED or FAILED by its exit status: the result file tells the rest), or held by a worker whose job
was requeued or ended first (the worker's state: PREEMPTED, TIMEOUT, NODE_FAIL...), which the driver
judges as it would the run's own job. Then the pool grows toward ``min(workers, runs queued or
running)``: workers that idle end by themselves (``idle_timeout``), so it shrinks on its own.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.placement import Placement
from hpo_slurm.core.pool_files import PoolPaths, list_names, pool_job_id, pooled_run, queue_key, read_optional, run_of_key
from hpo_slurm.executors.base import (REQUEUED_AFTER, SUBMISSION_REFUSED, Executor, JobRequest, JobState, JobStatus,
                                      Submitted)
from hpo_slurm.executors.pool.workers import Workers

log = logging.getLogger(__name__)

MISSING_POLLS = 3  # polls that must find a run neither queued nor claimed before it counts as gone


class PoolExecutor(Executor):
    """Runs ``config``'s runs on a pool of worker jobs that ``host`` starts, polls and cancels."""

    delivers_specs = False  # the driver writes each run's spec file; the queue entry points to it

    def __init__(self, host: Executor, config: ExperimentConfig, layout: ExperimentLayout, job_prefix: str,
                 clock: Callable[[], float] = time.time):
        if config.slurm.pool is None:
            raise ValueError("PoolExecutor needs slurm.pool in the config")
        self.host = host
        self.name = host.name
        self.layout = layout
        self.paths = PoolPaths(layout.dir)
        self.workers = Workers(host, config, self.paths, job_prefix + "pool.", clock)
        self._holder: Dict[str, str] = {}  # run id -> the worker whose claimed/ holds it
        self._missing: Dict[str, int] = {}  # run id -> polls in a row that found it nowhere
        self._refused: Dict[str, str] = {}  # run id -> why the cluster refused its pool's workers for good
        for folder in (self.paths.queue, self.paths.withdrawn, self.paths.workers):
            folder.mkdir(parents=True, exist_ok=True)
        self.paths.closed.unlink(missing_ok=True)  # a driver runs the search: it is not over

    def placement(self, config: ExperimentConfig) -> Placement:
        return self.host.placement(config)

    def waiting_on(self) -> Optional[str]:
        return self.host.waiting_on()

    # ---- runs -----------------------------------------------------------------------------------
    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        """Queue each run for the workers (its queue file written and synced), then grow the pool."""
        base = time.time_ns()
        for index, request in enumerate(requests):
            entry = {"run": request.run_id, "spec": str(request.spec_path)}
            write_json_atomic(self.paths.queue / queue_key(base + index, request.run_id), entry)
        self._top_up(self._queued())
        return [Submitted(pool_job_id(request.run_id)) for request in requests]

    def finish(self) -> None:
        self.workers.finish()

    def find(self, requests: Sequence[JobRequest]) -> Dict[str, str]:
        """Runs queued, withdrawn or claimed before a crash kept their job ids from the database."""
        queued = set(self._queued()) | {run_of_key(key) for key in list_names(self.paths.withdrawn)}
        return {r.run_id: pool_job_id(r.run_id) for r in requests
                if r.run_id in queued or self._worker_of(r.run_id) is not None}

    def cancel(self, job_ids: Sequence[str]) -> None:
        """A queued run is withdrawn; a claimed one gets its stop file, on which its worker passes
        SIGTERM to it (as scancel would). Worker jobs given by their own ids are cancelled."""
        queue = {run_of_key(key): key for key in list_names(self.paths.queue)}
        workers = []
        for job_id in job_ids:
            run_id = pooled_run(job_id)
            if run_id is None:
                workers.append(job_id)
                continue
            if run_id in queue:
                try:
                    os.rename(self.paths.queue / queue[run_id], self.paths.withdrawn / queue[run_id])
                    continue
                except FileNotFoundError:
                    pass  # a worker claimed it meanwhile
            if self._worker_of(run_id) is not None:
                stop_file = self.layout.run_stop_file(run_id)
                stop_file.parent.mkdir(parents=True, exist_ok=True)
                stop_file.touch()
        if workers:
            self.host.cancel(workers)

    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        """The worker jobs in one query of the host, then every pooled run's state from the files.
        The workers' heartbeats are read before the query: a worker the query shows queued held a run
        then only if an earlier start of its job did (it was requeued); one that claims a run after the
        query has started since."""
        beats = self.workers.heartbeats()
        self.workers.poll()
        queued = set(self._queued())
        withdrawn = {run_of_key(key) for key in list_names(self.paths.withdrawn)}
        statuses = {}
        for job_id in job_ids:
            run_id = pooled_run(job_id)
            if run_id is None:
                continue
            if run_id in self._refused:
                statuses[job_id] = JobStatus(JobState.FAILED, reason=f"{SUBMISSION_REFUSED}: {self._refused[run_id]}")
            elif run_id in queued:
                statuses[job_id] = JobStatus(JobState.PENDING)
            elif run_id in withdrawn:
                statuses[job_id] = JobStatus(JobState.CANCELLED, reason="withdrawn from the pool's queue")
            else:
                statuses[job_id] = self._run_status(run_id, beats)
        self._top_up(queued, beats)
        return statuses

    def _run_status(self, run_id: str, beats: Dict[str, Dict]) -> JobStatus:
        worker = self._worker_of(run_id)
        if worker is None:  # (a listing on a network filesystem may lag behind a rename: ask again first)
            self._missing[run_id] = self._missing.get(run_id, 0) + 1
            return JobStatus(JobState.UNKNOWN, reason="neither queued nor claimed by a worker",
                             confirmed=self._missing[run_id] >= MISSING_POLLS)
        self._missing.pop(run_id, None)
        ended = read_optional(self.paths.ended(worker, run_id))
        if ended is not None:
            return _ended_status(worker, ended)
        state = self.workers.last_state(worker)
        if state is None or not state.confirmed:
            return JobStatus(JobState.PENDING, confirmed=False)  # nothing known of its worker yet
        if state.state == JobState.RUNNING:
            return JobStatus(JobState.RUNNING)
        # its worker's job was requeued or ended while it ran (its files were read after the query, so
        # a worker that ended by itself has written how the run ended): judged as the run's own job would be
        if state.state == JobState.PENDING:
            # the scheduler's word lags a start (sacct shows a job that just started as pending): only a
            # job it says it requeued, whose killed start held the run when it was asked, let it go
            held = beats.get(worker, {})
            if (not state.reason.startswith(REQUEUED_AFTER) or held.get("run") != run_id
                    or held.get("ended") is not None):
                return JobStatus(JobState.RUNNING)  # it claimed the run, so it has started
            cause = JobState.NODE_FAIL if "NODE_FAIL" in state.reason else JobState.PREEMPTED
            gone = JobStatus(cause, reason=f"its worker {worker}'s job was requeued ({state.reason or 'preempted'})")
        elif state.state == JobState.COMPLETED:
            gone = JobStatus(JobState.FAILED, reason=f"its worker {worker} ended without finishing it")
        else:
            gone = JobStatus(state.state, state.exit_code, f"its worker {worker}: {state.reason}".strip(": "),
                             state.confirmed)
        return self._after_grace(run_id, gone)

    def _after_grace(self, run_id: str, gone: JobStatus) -> JobStatus:
        """``gone`` (how the run's worker went) once the run's process has ended. Where the host ends a
        job's processes with it (Slurm) it has; a local worker killed outright sends its run SIGTERM, and
        the run checkpoints and writes its result first: until its process (``attempts.jsonl`` names it)
        is gone, the run is reported as not known yet and the driver waits, so it never resumes beside it."""
        if not self.host.ends_processes_with_job and _process_alive(self.layout, run_id):
            return JobStatus(JobState.PENDING, confirmed=False)
        return gone

    def _worker_of(self, run_id: str) -> Optional[str]:
        """The worker whose ``claimed/`` holds the run (a worker that got a stop signal as it claimed
        puts the run back in the queue, so a remembered holder is checked)."""
        known = self._holder.get(run_id)
        if known is not None and self.paths.claimed(known, run_id).exists():
            return known
        self._holder.pop(run_id, None)
        for name in sorted(os.listdir(self.paths.workers)):
            if self.paths.claimed(name, run_id).exists():
                self._holder[run_id] = name
                return name
        return None

    def _queued(self) -> List[str]:
        return [run_of_key(key) for key in list_names(self.paths.queue)]

    def _top_up(self, queued: Sequence[str], beats: Optional[Dict[str, Dict]] = None) -> None:
        """Grow the pool while runs wait; when the cluster refuses its workers for good, the queued runs
        fail (``_refuse``)."""
        refusal = self.workers.top_up(queued, beats)
        if refusal is not None:
            self._refuse(queued, refusal)

    def _refuse(self, queued: Sequence[str], message: str) -> None:
        """The cluster refused the pool's worker jobs for good: the queued runs are taken back and end
        as refused submissions (as runs with jobs of their own would), so the driver counts them against
        ``max_restarts`` instead of waiting for workers that never come."""
        log.warning("pool: the cluster refused its worker jobs (%s); the %d queued runs fail", message, len(queued))
        for key in list_names(self.paths.queue):
            try:
                os.rename(self.paths.queue / key, self.paths.withdrawn / key)
            except FileNotFoundError:
                continue  # a live worker took it: it runs
            self._refused[run_of_key(key)] = message


def _process_alive(layout: ExperimentLayout, run_id: str) -> bool:
    """Whether the process of the run's last attempt (its pid in ``attempts.jsonl``) is still a run's
    process on this machine."""
    try:
        lines = layout.attempts_file(run_id).read_text(encoding="utf-8").splitlines()
        pid = int(json.loads(lines[-1])["pid"])
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"hpo_slurm.tasks.pool_run" in cmdline.read()
    except (OSError, ValueError, KeyError, IndexError):  # no attempt recorded, or its process is gone
        return False


def _ended_status(worker: str, ended: Dict) -> JobStatus:
    """A run's state from its worker's ``ended/<run>.json``."""
    if ended.get("abandoned"):
        return JobStatus(JobState.PREEMPTED, reason=f"its worker {worker}'s job was requeued while it ran")
    code = ended.get("exit_code")
    if code == 0:
        return JobStatus(JobState.COMPLETED, exit_code=0)
    return JobStatus(JobState.FAILED, exit_code=code if isinstance(code, int) else None,
                     reason=str(ended.get("message") or f"on worker {worker}"))
