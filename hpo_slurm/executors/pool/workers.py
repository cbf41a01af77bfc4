"""The worker jobs of a pool (``slurm.pool``): started through the host executor, recorded before they
are submitted (``record.WorkerRecord``), polled in one query, looked up by name after a crash, and
grown while runs wait for them. The runs they hold are ``executor.PoolExecutor``'s concern."""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Sequence

from hpo_slurm.config.pool_section import worker_time_minutes
from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.placement import Placement
from hpo_slurm.core.pool_files import PoolPaths, read_optional
from hpo_slurm.executors.base import Executor, JobState, JobStatus, SchedulerError, SubmitError, Submitted, WorkerBatch
from hpo_slurm.executors.pool.record import WorkerEntry, WorkerRecord

log = logging.getLogger("hpo_slurm.executors.pool.executor")  # one voice in driver.log: the pool's

WORKER_UNKNOWN_GRACE_S = 60.0  # a worker job the scheduler does not show yet this soon after sbatch is live
RETRY_DELAYS_S = (5.0, 15.0, 60.0, 300.0)  # after failed worker submissions, one after another


class Workers:
    """The worker jobs of the pool whose files are under ``paths``, started by ``host`` with names that
    begin with ``job_prefix``. ``states`` holds each live worker's job state as the last ``poll`` found
    it (empty after a poll that could not ask)."""

    def __init__(self, host: Executor, config: ExperimentConfig, paths: PoolPaths, job_prefix: str,
                 clock: Callable[[], float] = time.time):
        self.host = host
        self.config = config
        self.settings = config.slurm.pool
        self.paths = paths
        self.job_prefix = job_prefix
        self.clock = clock
        self.record = WorkerRecord(paths.record)
        self.states: Dict[str, JobStatus] = {}
        self._batch_cap: Optional[int] = None  # at most this many workers a submission (a queued-jobs cap)
        self._failures = 0
        self._next_try = 0.0
        for entry in self.record.live():
            if entry.job_id is not None:
                host.adopt(entry.job_id, entry.gpus)

    def heartbeats(self) -> Dict[str, Dict]:
        """Each live worker's ``alive.json`` ({} when it has written none)."""
        return {entry.name: read_optional(self.paths.alive(entry.name)) or {} for entry in self.record.live()}

    def last_state(self, name: str) -> Optional[JobStatus]:
        """The worker's job state from the last poll, or how it ended; None when not known."""
        state = self.states.get(name)
        entry = self.record.workers.get(name)
        if state is None and entry is not None and entry.ended is not None:
            state = JobStatus(JobState(entry.ended))
        return state

    def poll(self) -> None:
        """Each live worker's job state; workers whose jobs ended are marked so in the record."""
        bound = {entry.job_id: entry for entry in self.record.live() if entry.job_id is not None}
        if not bound:
            return
        try:
            states = self.host.poll(list(bound))
        except SchedulerError as exc:
            self.states.clear()  # nothing is concluded from an older answer
            log.warning("pool: cannot ask about its worker jobs (%s)", exc)
            return
        changed = False
        for job_id, status in states.items():
            entry = bound[job_id]
            self.states[entry.name] = status
            if status.state.live or not status.confirmed:
                continue
            if (status.state == JobState.UNKNOWN and self.clock() - entry.submitted < WORKER_UNKNOWN_GRACE_S
                    and not self.paths.alive(entry.name).exists()):
                continue  # not shown yet just after sbatch; a worker with a heartbeat has run: it is gone
            entry.ended = status.state.value
            changed = True
            detail = f": {status.reason}" if status.reason and status.reason != status.state.value else ""
            log.info("pool: worker %s (job %s) ended (%s%s)", entry.name, job_id, status.state.value, detail)
        if changed:
            self.record.save()

    def top_up(self, queued: Sequence[str], beats: Optional[Dict[str, Dict]] = None) -> Optional[str]:
        """Start workers until the pool holds ``min(workers, runs queued or running)`` live ones
        (``beats``: the workers' heartbeats, read now when not given). Returns the cluster's reason when
        it refused the workers for good (the queued runs cannot run), else None."""
        if self.clock() < self._next_try or not self._bind_unbound():
            return None
        if beats is None:
            beats = self.heartbeats()
        running = sum(1 for entry in self.record.live() if beats.get(entry.name, {}).get("run"))
        want = min(self.settings.workers, len(queued) + running)
        missing = min(want - len(self.record.live()), self._batch_cap or want)
        if missing <= 0:
            return None
        try:
            placement = self.host.placement(self.config)
        except SchedulerError as exc:
            self._failed(f"cannot place worker jobs yet ({exc})")
            return None
        names = self.record.new_names(missing, lambda name: self.paths.worker(name).exists())
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
            if exc.limit:
                self._batch_cap = 1
            if not exc.retry:
                for name in names:
                    if self.record.workers[name].job_id is None:
                        self.record.workers[name].ended = JobState.FAILED.value
            self.record.save()
            if not exc.retry:
                return str(exc)
            self._failed(f"worker submission failed ({exc})")
            return None
        self._bind(dict(zip(names, submitted)))
        self.record.save()
        self._failures = 0
        log.info("pool: started %d worker%s (%s) as %s", len(names), "s" * (len(names) > 1), ", ".join(names),
                 submitted[0].job_id.split("_")[0])
        return None

    def _batch(self, job_name: str, names: Sequence[str], placement: Placement) -> WorkerBatch:
        slurm = self.config.slurm
        return WorkerBatch(job_name, tuple(names), self.paths.jobs(job_name), self.paths.experiment_dir,
                           self.config.slots_per_trial, placement,
                           worker_time_minutes(self.settings, slurm.time_minutes), self.settings.idle_timeout_s,
                           slurm.signal_delay_s)

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
                            devices = (read_optional(self.paths.alive(name)) or {}).get("cuda_visible_devices")
                            worker.gpus = devices or ""
                            self.host.adopt(worker.job_id, worker.gpus)
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
        """The search is over (no run is live): running workers end at once (``closed``), and every other
        worker job this pool knows of (queued, requeued, or submitted before a crash) is cancelled."""
        self.paths.closed.touch()
        self._bind_unbound()
        pending = [entry.job_id for entry in self.record.live() if entry.job_id is not None
                   and self.states.get(entry.name, JobStatus(JobState.PENDING)).state != JobState.RUNNING]
        if pending:
            try:
                self.host.cancel(pending)
            except SchedulerError as exc:
                log.warning("pool: could not cancel %d queued worker jobs (%s); they end once idle", len(pending), exc)
