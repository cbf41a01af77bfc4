"""A simulated cluster on a virtual clock: N workers, a FIFO queue, a priority queue of events.

The very same driver loop and store as ``launch`` run against it: the driver submits runs, polls them,
reads what they "wrote" and records everything in experiment.db. Nothing here touches the filesystem:

* the clock, the fault model and the in-memory workspace are ``executors.simulated_world``'s;
* ``SimulatedExecutor``: a submitted run first waits in the scheduler's queue for a time drawn from a
  lognormal distribution (``Faults.queue_wait_median_s``: a busy cluster; 0, the default, for none),
  then FIFO for one of ``workers`` workers. A run that starts evaluates the
  objective ``f(hparams, length) -> {metric..., "seconds": cumulative training seconds}`` at its target
  length; it lasts ``seconds(to) - seconds(from)`` (times a straggler factor), where ``from`` is the
  trial's latest checkpoint, and at its end "writes" its validation line and result.

Faults are drawn per run from ``hash(seed, run id)``, so they do not depend on the order in which things
happen: a straggler runs ``straggler_factor`` times slower; a failure ends the attempt at a uniformly
drawn point, losing its work; a preemption ends it there too, but the trial checkpoints what it reached
(as a real trial does on the preemption signal) and the next run continues from it.

With a pool (``pool=``: the config's ``slurm.pool``) runs do not wait in the queue themselves: worker jobs
do, once each, and then run the submitted runs FIFO one after another (``executors.simulated_pool``
states the pool's contract). A worker at its time limit stops its run, which checkpoints what it reached
and ends TIMEOUT (the driver resumes it without counting a restart); a preempted run ends its worker; a
failed or cancelled run leaves its worker idle. ``compute_seconds()`` is then the workers' lifetimes,
idle time included.
"""

from __future__ import annotations

import functools
import heapq
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from hpo_slurm.config.pool_section import PoolSettings
from hpo_slurm.core.protocol import MetricLine, RunResult, RunStatus, StopReason
from hpo_slurm.core.rng import Rng
from hpo_slurm.executors.base import Executor, JobRequest, JobState, JobStatus, Submitted
from hpo_slurm.executors.simulated_pool import Worker, WorkerPool
from hpo_slurm.executors.simulated_world import Faults, SimulatedWorkspace, VirtualClock, run_seed

Objective = Callable[[Dict[str, Any], int], Dict[str, Any]]
# what the simulated jobs "write" (frozen, so one object serves every run)
RESULT_EXITED = RunResult(RunStatus.EXITED, 0)
RESULT_PREEMPTED = RunResult(RunStatus.STOPPED, 0, stop_reason=StopReason.PREEMPTED)
RESULT_SEARCH_STOPPED = RunResult(RunStatus.STOPPED, 0, stop_reason=StopReason.SEARCH_STOPPED)
RESULT_TIME_LIMIT = RunResult(RunStatus.STOPPED, 0, stop_reason=StopReason.TIME_LIMIT)
RESULT_INJECTED_FAILURE = RunResult(RunStatus.FAILED, 1, message="injected failure (simulated)")


class _Job:
    __slots__ = ("job_id", "run_id", "name", "state", "exit_code", "start", "end", "outcome", "version",
                 "trial_id", "to_length", "metrics", "reached", "hparams", "start_length", "seconds_from",
                 "slowdown")

    def __init__(self, job_id: str, run_id: str, name: str):
        self.job_id = job_id
        self.run_id = run_id
        self.name = name
        self.state = JobState.PENDING
        self.exit_code: Optional[int] = None
        self.start = 0.0
        self.end = 0.0
        self.outcome = ""  # what happens at ``end``: completed, failed, preempted
        self.version = 0  # bumped when the planned end is cancelled
        self.trial_id = 0
        self.to_length = 0
        self.metrics: Dict[str, Any] = {}
        self.reached = 0  # the length checkpointed at a preemption
        self.hparams: Dict[str, Any] = {}
        self.start_length = 0  # where the attempt started, and the objective's seconds there
        self.seconds_from = 0.0
        self.slowdown = 1.0  # wall seconds per training second (a straggler's factor)


class SimulatedExecutor(Executor):
    """``workers`` identical workers behind a FIFO queue, on ``clock``. The simulation loop calls
    ``next_event_time()`` and ``advance(now)`` (and ``finish()`` once the driver is done); the
    driver calls submit, poll, find, cancel. With ``pool`` the runs go to the pool's worker jobs, each
    with the time limit ``pool_time_limit_s`` (None: none)."""

    name = "simulated"

    def __init__(
        self,
        workspace: SimulatedWorkspace,
        objective: Objective,
        clock: VirtualClock,
        workers: int,
        seed: int = 0,
        faults: Faults = Faults(),
        max_length: Optional[int] = None,
        on_validation: Optional[Callable[[int, int, Dict[str, Any], float], None]] = None,
        pool: Optional[PoolSettings] = None,
        pool_time_limit_s: Optional[float] = None,
    ):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workspace = workspace
        self.objective = objective
        self.clock = clock
        self.workers = workers
        self.seed = seed
        self.faults = faults
        self.max_length = max_length
        self.on_validation = on_validation  # (trial, length, metrics, compute so far) when a run validates
        self.jobs: Dict[str, _Job] = {}
        self._by_name: Dict[str, str] = {}
        self._queue: Deque[_Job] = deque()
        self._waiting: List[Tuple[float, int, str]] = []  # (may start at, seq, job id): in the scheduler's queue
        self.queue_waits: List[float] = []  # the drawn wait of every submitted job
        self._running: Dict[str, _Job] = {}
        self._events: List[Tuple[float, int, int, str]] = []  # (time, seq, version, job id)
        self._seq = 0
        self.busy_seconds = 0.0  # worker-seconds of ended attempts
        self.last_end = 0.0
        self.timeline: Optional[List[Tuple[float, int, int]]] = None  # if a list: (t, running, queued) on changes
        self.counts = {"submitted": 0, "completed": 0, "failed": 0, "preempted": 0, "cancelled": 0,
                       "stragglers": 0}
        self.pool: Optional[WorkerPool] = None
        self._worker_of: Dict[str, Worker] = {}  # job id -> the pool's worker running it
        if pool is not None:
            self.pool = WorkerPool(pool, workers, functools.partial(faults.queue_wait, seed), pool_time_limit_s)
            self.queue_waits = self.pool.waits  # the worker jobs wait in the queue, the runs do not

    # ---- the driver's side ------------------------------------------------------------------------
    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        submitted = []
        for request in requests:
            job_id = str(len(self.jobs) + 1)
            job = _Job(job_id, request.run_id, request.job_name)
            self.jobs[job_id] = job
            self._by_name[request.job_name] = job_id
            if self.pool is not None:
                self._queue.append(job)
                submitted.append(Submitted(job_id))
                continue
            wait = self.faults.queue_wait(self.seed, request.run_id)
            self.queue_waits.append(wait)
            if wait > 0:
                self._seq += 1
                heapq.heappush(self._waiting, (self.clock.t + wait, self._seq, job_id))
            else:
                self._queue.append(job)
            submitted.append(Submitted(job_id))
        self.counts["submitted"] += len(requests)
        self._dispatch()
        return submitted

    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        statuses = {}
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            statuses[job_id] = JobStatus(JobState.UNKNOWN) if job is None else JobStatus(job.state, job.exit_code)
        return statuses

    def find(self, requests: Sequence[JobRequest]) -> Dict[str, str]:
        return {r.run_id: self._by_name[r.job_name] for r in requests if r.job_name in self._by_name}

    def cancel(self, job_ids: Sequence[str]) -> None:
        now = self.clock.t
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or not job.state.live:
                continue
            if job.state == JobState.RUNNING:
                self._stop_running(job, now)
                if self.pool is not None:
                    self.pool.release(self._worker_of.pop(job_id), now)
            elif job in self._queue:
                self._queue.remove(job)  # (one still waiting in the scheduler's queue is skipped when due)
            job.state = JobState.CANCELLED
            self.workspace.results[job.run_id] = RESULT_SEARCH_STOPPED
            self.counts["cancelled"] += 1
        self._dispatch()

    # ---- the simulation loop's side ----------------------------------------------------------------
    def next_event_time(self) -> Optional[float]:
        events = self._events
        while events and self.jobs[events[0][3]].version != events[0][2]:
            heapq.heappop(events)
        waiting = self._waiting
        while waiting and self.jobs[waiting[0][2]].state != JobState.PENDING:  # cancelled while it waited
            heapq.heappop(waiting)
        times = [queue[0][0] for queue in (events, waiting) if queue]
        if self.pool is not None:
            pool_time = self.pool.next_event_time()
            if pool_time is not None:
                times.append(pool_time)
        return min(times) if times else None

    def advance(self, now: float) -> None:
        """Everything that happens up to ``now`` (``clock.t``): runs end, queued runs take the freed workers."""
        if self.pool is not None:
            self._advance_pool(now)
            return
        events = self._events
        while events and events[0][0] <= now:
            _, _, version, job_id = heapq.heappop(events)
            job = self.jobs[job_id]
            if job.version == version and job.state == JobState.RUNNING:
                self._end(job)
        while self._waiting and self._waiting[0][0] <= now:  # done waiting in the scheduler's queue
            job = self.jobs[heapq.heappop(self._waiting)[2]]
            if job.state == JobState.PENDING:
                self._queue.append(job)
        self._dispatch()

    def compute_seconds(self, now: Optional[float] = None) -> float:
        """Worker-seconds spent so far, the running attempts' included; with a pool, the worker jobs'
        lifetimes, their idle time included."""
        now = self.clock.t if now is None else now
        if self.pool is not None:
            return self.pool.lifetime_seconds(now)
        return self.busy_seconds + sum(now - job.start for job in self._running.values())

    @property
    def idle(self) -> bool:
        return not self._running and not self._queue and self.next_event_time() is None

    def finish(self) -> None:
        """The search is over (``Executor.finish``): with a pool, its worker jobs end now (those still
        in the queue are cancelled; a run one still holds, which a finished driver has cancelled
        already, is stopped as cancelled). Without a pool, nothing happens."""
        if self.pool is None or not self.pool.alive:
            return
        for job_id in list(self._worker_of):
            job = self.jobs[job_id]
            self._stop_running(job, self.clock.t)
            job.state = JobState.CANCELLED
            self.workspace.results[job.run_id] = RESULT_SEARCH_STOPPED
            self.counts["cancelled"] += 1
        self._worker_of.clear()
        self.pool.close(self.clock.t)

    def pool_summary(self) -> Optional[Dict[str, object]]:
        """The pool's figures (``WorkerPool.summary``) at ``clock.t``; None without a pool."""
        now = self.clock.t
        busy = self.busy_seconds + sum(now - job.start for job in self._running.values())
        return None if self.pool is None else self.pool.summary(now, busy)

    # ---- internals ---------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self.pool is not None:
            self._dispatch_pool(self.clock.t)
        else:
            while self._queue and len(self._running) < self.workers:
                self._start(self._queue.popleft())
        if self.timeline is not None:
            self.timeline.append((self.clock.t, len(self._running), len(self._queue)))

    def _dispatch_pool(self, now: float) -> None:
        """Waiting runs go FIFO to idle workers; while some still wait, the pool grows."""
        pool = self.pool
        while True:
            while self._queue and pool.has_idle:
                job = self._queue.popleft()
                self._worker_of[job.job_id] = pool.take(job.job_id)
                self._start(job, now)
            if not self._queue or not pool.grow(now, len(self._queue), len(self._running)):
                return

    def _advance_pool(self, now: float) -> None:
        """``advance`` with a pool: run ends and worker events up to ``now``, in time order (a run
        that ends at the moment its worker's time runs out ends first), each followed by a dispatch."""
        events, pool = self._events, self.pool
        while True:
            while events and self.jobs[events[0][3]].version != events[0][2]:
                heapq.heappop(events)
            pool_time = pool.next_event_time()
            if events and events[0][0] <= now and (pool_time is None or events[0][0] <= pool_time):
                _, _, _, job_id = heapq.heappop(events)
                job = self.jobs[job_id]
                at = job.end
                if job.state == JobState.RUNNING:
                    self._end(job)
            else:
                due = pool.pop_due(now)
                if due is None:
                    break
                at, kind, worker = due
                if kind == "start":
                    pool.start(worker, at)
                elif kind == "limit":
                    if worker.job_id is not None:
                        self._stop_at_time_limit(self.jobs[worker.job_id], at)
                    pool.end(worker, at, "time_limit")
            self._dispatch_pool(at)
        if self.timeline is not None:
            self.timeline.append((self.clock.t, len(self._running), len(self._queue)))

    def _start(self, job: _Job, at: Optional[float] = None) -> None:
        now = self.clock.t if at is None else at
        spec = self.workspace.specs.pop(job.run_id)
        trial_id, to_length, hparams = spec.trial_id, spec.target_length, spec.hparams
        start_length = self.workspace.start_length(trial_id, spec.parent_checkpoint)
        result = self.objective(hparams, to_length)
        seconds_to = float(result["seconds"])
        seconds_from = float(self.objective(hparams, start_length)["seconds"]) if start_length > 0 else 0.0
        work = max(seconds_to - seconds_from, 0.0)
        faults = self.faults
        duration = work
        end_kind = "completed"
        job.slowdown = 1.0
        if faults.stragglers or faults.failures or faults.preemptions:
            rng = Rng(run_seed(self.seed, job.run_id))
            if rng.random() < faults.stragglers:
                duration *= faults.straggler_factor
                job.slowdown = faults.straggler_factor
                self.counts["stragglers"] += 1
            draw, at = rng.random(), rng.random()
            if draw < faults.failures:
                end_kind, duration = "failed", duration * at
            elif draw < faults.failures + faults.preemptions:
                end_kind, duration = "preempted", duration * at
                job.reached = self._reached(hparams, start_length, to_length, seconds_from, seconds_from + work * at)
        job.state = JobState.RUNNING
        job.start = now
        job.end = now + duration
        job.outcome = end_kind
        job.trial_id = trial_id
        job.to_length = to_length
        job.metrics = {key: value for key, value in result.items() if key != "seconds"}
        job.hparams, job.start_length, job.seconds_from = hparams, start_length, seconds_from
        self.workspace.starts[job.run_id] = self.workspace.starts.get(job.run_id, 0) + 1
        self.workspace.times[job.run_id] = (self.clock.origin + now, None)
        self._running[job.job_id] = job
        self._seq += 1
        heapq.heappush(self._events, (job.end, self._seq, job.version, job.job_id))

    def _reached(self, hparams: Dict[str, Any], low: int, high: int, seconds_low: float, budget: float) -> int:
        """The longest length in [low, high) whose cumulative seconds fit in ``budget``."""
        lo, hi = low, high - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if float(self.objective(hparams, mid)["seconds"]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _stop_running(self, job: _Job, now: float) -> None:
        del self._running[job.job_id]
        self.workspace.times[job.run_id] = (self.clock.origin + job.start, self.clock.origin + now)
        job.version += 1
        self.busy_seconds += now - job.start
        self.last_end = max(self.last_end, now)

    def _stop_at_time_limit(self, job: _Job, now: float) -> None:
        """The worker running ``job`` reached its time limit at ``now``: the trial checkpoints what it
        reached (as at a preemption) and the run ends TIMEOUT."""
        trained = (now - job.start) / job.slowdown
        reached = self._reached(job.hparams, job.start_length, job.to_length, job.seconds_from,
                                job.seconds_from + trained) if job.to_length > job.start_length else job.start_length
        self._stop_running(job, now)
        del self._worker_of[job.job_id]
        if reached > self.workspace.checkpoints.get(job.trial_id, 0):
            self.workspace.checkpoints[job.trial_id] = reached
        self.workspace.results[job.run_id] = RESULT_TIME_LIMIT
        job.state, job.exit_code = JobState.TIMEOUT, 0

    def _end(self, job: _Job) -> None:
        now = job.end
        self._stop_running(job, now)
        if self.pool is not None:
            worker = self._worker_of.pop(job.job_id)
            if job.outcome == "preempted":
                self.pool.end(worker, now, "preempted")  # the scheduler took the worker's allocation
            else:
                self.pool.release(worker, now)
        workspace = self.workspace
        if job.outcome == "completed":
            workspace.lines.setdefault(job.trial_id, []).append(
                MetricLine("validation", job.to_length, job.metrics, job.run_id, self.clock.origin + now))
            workspace.checkpoints[job.trial_id] = job.to_length
            workspace.results[job.run_id] = RESULT_EXITED
            job.state, job.exit_code = JobState.COMPLETED, 0
            self.counts["completed"] += 1
            if self.on_validation is not None:
                self.on_validation(job.trial_id, job.to_length, job.metrics, self.compute_seconds(now))
        elif job.outcome == "preempted":
            if job.reached > workspace.checkpoints.get(job.trial_id, 0):
                workspace.checkpoints[job.trial_id] = job.reached
            workspace.results[job.run_id] = RESULT_PREEMPTED
            job.state, job.exit_code = JobState.PREEMPTED, 0
            self.counts["preempted"] += 1
        else:
            workspace.results[job.run_id] = RESULT_INJECTED_FAILURE
            job.state, job.exit_code = JobState.FAILED, 1
            self.counts["failed"] += 1
