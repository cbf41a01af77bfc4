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

import logging
import os
import time
from typing import Dict, List, Optional, Sequence

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.placement import Placement
from hpo_slurm.core.pool_files import PoolPaths, list_names, pool_job_id, pooled_run, queue_key, read_optional, run_of_key
from hpo_slurm.executors.base import (Executor, JobRequest, JobState, JobStatus, SchedulerError, SubmitError, Submitted,
                                      WorkerBatch)
from hpo_slurm.executors.pool.record import WorkerEntry, WorkerRecord

log = logging.getLogger(__name__)

WORKER_UNKNOWN_GRACE_S = 60.0  # a worker job the scheduler does not show yet this soon after sbatch is live
RETRY_DELAYS_S = (5.0, 15.0, 60.0, 300.0)
HOLDER_GONE_GRACE_S = 30.0  # how long a run whose worker went may take to write its result  # after failed worker submissions, one after another


class PoolExecutor(Executor):
    """Runs ``config``'s runs on a pool of worker jobs that ``host`` starts, polls and cancels."""

    delivers_specs = False  # the driver writes each run's spec file; the queue entry points to it

    def __init__(self, host: Executor, config: ExperimentConfig, layout: ExperimentLayout, job_prefix: str,
                 clock=time.time):
        if config.slurm.pool is None:
            raise ValueError("PoolExecutor needs slurm.pool in the config")
        self.host = host
        self.name = host.name
        self.config = config
        self.settings = config.slurm.pool
        self.layout = layout
        self.paths = PoolPaths(layout.dir)
        self.job_prefix = job_prefix + "pool."
        self.clock = clock
        self.record = WorkerRecord(self.paths.record)
        self._states: Dict[str, JobStatus] = {}  # worker name -> its job's state at the last poll
        self._holder: Dict[str, str] = {}  # run id -> the worker that claimed it (claims are for good)
        self._gone_since: Dict[str, float] = {}  # run id -> when its worker was first seen gone
        self._failures = 0
        self._next_try = 0.0
        for folder in (self.paths.queue, self.paths.withdrawn, self.paths.workers):
            folder.mkdir(parents=True, exist_ok=True)
        self.paths.closed.unlink(missing_ok=True)  # a driver runs the search: it is not over
        for entry in self.record.live():
            if entry.job_id is not None:
                host.adopt(entry.job_id, entry.gpus)

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
        beats = {entry.name: read_optional(self.paths.alive(entry.name)) or {} for entry in self.record.live()}
        self._poll_workers()
        queued = set(self._queued())
        withdrawn = {run_of_key(key) for key in list_names(self.paths.withdrawn)}
        statuses = {}
        for job_id in job_ids:
            run_id = pooled_run(job_id)
            if run_id is None:
                continue
            if run_id in queued:
                statuses[job_id] = JobStatus(JobState.PENDING)
            elif run_id in withdrawn:
                statuses[job_id] = JobStatus(JobState.CANCELLED, reason="withdrawn from the pool's queue")
            else:
                statuses[job_id] = self._run_status(run_id, beats)
        self._top_up(queued, beats)
        return statuses

    def _run_status(self, run_id: str, beats: Dict[str, Dict]) -> JobStatus:
        worker = self._worker_of(run_id)
        if worker is None:
            return JobStatus(JobState.UNKNOWN, reason="neither queued nor claimed by a worker")
        ended = read_optional(self.paths.ended(worker, run_id))
        if ended is not None:
            return _ended_status(worker, ended)
        state = self._states.get(worker)
        entry = self.record.workers.get(worker)
        if state is None and entry is not None and entry.ended is not None:
            state = JobStatus(JobState(entry.ended))
        if state is None or not state.confirmed:
            return JobStatus(JobState.PENDING, confirmed=False)  # nothing known of its worker yet
        if state.state == JobState.RUNNING:
            return JobStatus(JobState.RUNNING)
        # its worker's job was requeued or ended while it ran (its files were read after the query, so
        # a worker that ended by itself has written how the run ended): judged as the run's own job would be
        if state.state == JobState.PENDING:
            held = beats.get(worker, {})
            if held.get("run") != run_id or held.get("ended") is not None:
                return JobStatus(JobState.RUNNING)  # a start of the worker after the query claimed it
            cause = JobState.NODE_FAIL if "NODE_FAIL" in state.reason else JobState.PREEMPTED
            gone = JobStatus(cause, reason=f"its worker {worker}'s job was requeued ({state.reason or 'preempted'})")
        elif state.state == JobState.COMPLETED:
            gone = JobStatus(JobState.FAILED, reason=f"its worker {worker} ended without finishing it")
        else:
            gone = JobStatus(state.state, state.exit_code, f"its worker {worker}: {state.reason}".strip(": "),
                             state.confirmed)
        return self._after_grace(run_id, gone)

    def _after_grace(self, run_id: str, gone: JobStatus) -> JobStatus:
        """``gone`` (how the run's worker went) once the run's process has had ``HOLDER_GONE_GRACE_S``
        to write its result (a worker killed outright sends its run SIGTERM: it checkpoints and says
        so); until then the run is reported as not known yet, and the driver waits."""
        if self.layout.result_file(run_id).exists():
            return gone
        first = self._gone_since.setdefault(run_id, self.clock())
        if self.clock() - first < HOLDER_GONE_GRACE_S:
            return JobStatus(JobState.PENDING, confirmed=False)
        return gone

    def _worker_of(self, run_id: str) -> Optional[str]:
        if run_id not in self._holder:
            for name in sorted(os.listdir(self.paths.workers)):
                if self.paths.claimed(name, run_id).exists():
                    self._holder[run_id] = name
                    break
        return self._holder.get(run_id)

    def _queued(self) -> List[str]:
        return [run_of_key(key) for key in list_names(self.paths.queue)]

    # ---- workers --------------------------------------------------------------------------------
    def _poll_workers(self) -> None:
        """Each live worker's job state; workers whose jobs ended are marked so in the record."""
        bound = {entry.job_id: entry for entry in self.record.live() if entry.job_id is not None}
        if not bound:
            return
        try:
            states = self.host.poll(list(bound))
        except SchedulerError as exc:
            log.warning("pool: cannot ask about its worker jobs (%s)", exc)
            return
        changed = False
        for job_id, status in states.items():
            entry = bound[job_id]
            self._states[entry.name] = status
            if status.state.live or not status.confirmed:
                continue
            if status.state == JobState.UNKNOWN and self.clock() - entry.submitted < WORKER_UNKNOWN_GRACE_S:
                continue
            entry.ended = status.state.value
            changed = True
            detail = f": {status.reason}" if status.reason and status.reason != status.state.value else ""
            log.info("pool: worker %s (job %s) ended (%s%s)", entry.name, job_id, status.state.value, detail)
        if changed:
            self.record.save()

    def _top_up(self, queued: Sequence[str], beats: Optional[Dict[str, Dict]] = None) -> None:
        """Start workers until the pool holds ``min(workers, runs queued or running)`` live ones
        (``beats``: the workers' heartbeats, read now when not given)."""
        if self.clock() < self._next_try or not self._bind_unbound():
            return
        if beats is None:
            beats = {entry.name: read_optional(self.paths.alive(entry.name)) or {} for entry in self.record.live()}
        running = sum(1 for entry in self.record.live() if beats.get(entry.name, {}).get("run"))
        want = min(self.settings.workers, len(queued) + running)
        missing = want - len(self.record.live())
        if missing <= 0:
            return
        try:
            placement = self.host.placement(self.config)
        except SchedulerError as exc:
            self._failed(f"cannot place worker jobs yet ({exc})")
            return
        names = self.record.new_names(missing)
        job_name = self.job_prefix + (names[0] if len(names) == 1 else f"{names[0]}+{len(names) - 1}")
        now = self.clock()
        for name in names:
            self.record.workers[name] = WorkerEntry(name, job_name, names, now)
        self.record.save()  # before sbatch: a crash after it finds them by job_name
        batch = self._batch(job_name, names, placement)
        try:
            submitted = self.host.submit_workers(batch)
        except SubmitError as exc:
            self._bind(exc.submitted)
            if not exc.retry:
                for name in names:
                    if self.record.workers[name].job_id is None:
                        self.record.workers[name].ended = JobState.FAILED.value
            self.record.save()
            self._failed(f"worker submission failed ({exc})")
            return
        self._bind(dict(zip(names, submitted)))
        self.record.save()
        self._failures = 0
        log.info("pool: started %d worker%s (%s) as %s", len(names), "s" * (len(names) > 1), ", ".join(names),
                 submitted[0].job_id.split("_")[0])

    def _batch(self, job_name: str, names: Sequence[str], placement: Placement) -> WorkerBatch:
        return WorkerBatch(job_name, tuple(names), self.paths.root / "jobs" / job_name, self.paths.experiment_dir,
                           self.config.slots_per_trial, placement,
                           self.settings.time_minutes or self.config.slurm.time_minutes, self.settings.idle_timeout_s)

    def _bind(self, submitted: Dict[str, Submitted]) -> None:
        for name, job in submitted.items():
            self.record.workers[name].job_id = job.job_id
            self.record.workers[name].gpus = job.gpus

    def _bind_unbound(self) -> bool:
        """Look up workers recorded without a job id; False when the host cannot tell now."""
        unbound = self.record.unbound()
        if not unbound:
            return True
        batches: Dict[str, WorkerEntry] = {}
        for entry in unbound:
            batches.setdefault(entry.batch, entry)
        try:
            for job_name, entry in batches.items():
                found = self.host.find_workers(self._batch(job_name, entry.batch_names, Placement()))
                for name in entry.batch_names:
                    worker = self.record.workers[name]
                    if worker.job_id is None and worker.live:
                        if name in found:
                            worker.job_id = found[name]
                            log.info("pool: worker %s re-adopted as job %s", name, found[name])
                        else:
                            worker.ended = JobState.CANCELLED.value  # never went out
        except SchedulerError as exc:
            self._failed(f"cannot look up worker jobs yet ({exc})")
            return False
        self.record.save()
        return True

    def _failed(self, message: str) -> None:
        delay = RETRY_DELAYS_S[min(self._failures, len(RETRY_DELAYS_S) - 1)]
        self._failures += 1
        self._next_try = self.clock() + delay
        log.warning("pool: %s; trying again in %.0f s", message, delay)

    def finish(self) -> None:
        """The search is over: idle workers end at once (``closed``), queued worker jobs are cancelled."""
        self.paths.closed.touch()
        pending = [entry.job_id for entry in self.record.live()
                   if entry.job_id is not None and self._states.get(entry.name, JobStatus(JobState.PENDING)).state
                   == JobState.PENDING]
        if pending:
            try:
                self.host.cancel(pending)
            except SchedulerError as exc:
                log.warning("pool: could not cancel %d queued worker jobs (%s); they end once idle", len(pending), exc)


def _ended_status(worker: str, ended: Dict) -> JobStatus:
    """A run's state from its worker's ``ended/<run>.json``."""
    if ended.get("abandoned"):
        return JobStatus(JobState.PREEMPTED, reason=f"its worker {worker}'s job was requeued while it ran")
    code = ended.get("exit_code")
    if code == 0:
        return JobStatus(JobState.COMPLETED, exit_code=0)
    return JobStatus(JobState.FAILED, exit_code=code if isinstance(code, int) else None,
                     reason=str(ended.get("message") or f"on worker {worker}"))
