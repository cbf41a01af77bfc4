"""The simulated cluster's worker pool (``slurm.pool``): worker jobs that each wait in the scheduler's
queue once, then run the search's runs one after another. ``SimulatedExecutor`` owns one when the
config has a pool; this module keeps the workers' book and knows nothing of runs beyond the job id a
worker holds.

The contract (times are the simulation's seconds, ``VirtualClock.t``):

* **Size.** At most ``cap = min(settings.workers, slots)`` workers are alive (waiting in the queue or
  started) at once; a started worker holds one of the cluster's ``slots`` until it ends. ``grow(now,
  waiting, running)``, called while ``waiting`` runs have no worker, submits ``min(cap, waiting +
  running) - alive`` new workers. Nothing else submits workers, and nothing shrinks the pool but the
  endings below.
* **Queue wait.** Worker k (1, 2, ... in submission order) is named ``pool.w<k>`` and waits
  ``queue_wait(name)`` seconds in the scheduler's queue before it starts (0: it starts at once). The
  wait is drawn from the name alone, so the same seed gives the same waits whatever the runs are.
* **Work.** A started worker is idle or holds one run (``take``: the longest-idle worker gets it;
  ``release``: its run ended and it is idle again). Handing a run to an idle worker takes no time.
* **Endings.** ``pop_due(now)`` yields, in time order, each worker event due by ``now``: ``start`` (its
  queue wait is over: the caller calls ``start``), ``idle`` (idle for ``idle_timeout_s`` without a break:
  the worker has already ended, ``idle_timeout``) and ``limit`` (it reached ``time_limit_s`` since its
  start: the caller stops the run it holds, then calls ``end(..., "time_limit")``). A worker whose run
  was preempted ends with it (``"preempted"``); ``close`` ends every worker when the search is over
  (``"search_over"``; one still in the queue is cancelled and never started).
* **Cost.** A worker costs from its start to its end, idle or not (``lifetime_seconds``); the queue
  costs nothing. ``waits`` holds the queue wait of every worker that started, in start order.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

from hpo_slurm.config.pool_section import PoolSettings

ENDINGS = ("idle_timeout", "time_limit", "preempted", "search_over")


class Worker:
    """One worker job: queued until ``started_at``, alive until ``ended_at``; ``job_id`` is the run's
    job it holds (None: idle). ``version`` changes whenever its pending idle timer becomes void."""

    __slots__ = ("name", "wait", "submitted_at", "started_at", "ended_at", "job_id", "version", "ended_by")

    def __init__(self, name: str, wait: float, submitted_at: float):
        self.name = name
        self.wait = wait
        self.submitted_at = submitted_at
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.job_id: Optional[str] = None
        self.version = 0
        self.ended_by = ""


class WorkerPool:
    """The pool's workers and their timers (see the module docstring for the contract)."""

    def __init__(self, settings: PoolSettings, slots: int, queue_wait: Callable[[str], float],
                 time_limit_s: Optional[float] = None):
        if settings.workers < 1 or slots < 1:
            raise ValueError(f"a pool needs at least one worker and one slot, got {settings.workers} and {slots}")
        if settings.idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be positive, got {settings.idle_timeout_s}")
        if time_limit_s is not None and time_limit_s <= 0:
            raise ValueError(f"time_limit_s must be positive, got {time_limit_s}")
        self.settings = settings
        self.cap = min(settings.workers, slots)
        self.idle_timeout_s = float(settings.idle_timeout_s)
        self.time_limit_s = time_limit_s
        self._queue_wait = queue_wait
        self.workers: List[Worker] = []  # every worker ever submitted, in order
        self._alive: Dict[str, Worker] = {}
        self._idle: "OrderedDict[str, Worker]" = OrderedDict()  # started and holding no run, longest idle first
        self._timers: List[Tuple[float, int, str, str, int]] = []  # (time, seq, kind, worker name, version)
        self._seq = 0
        self._ended_seconds = 0.0  # the lifetimes of ended workers
        self.waits: List[float] = []
        self.ended_by: Dict[str, int] = {name: 0 for name in ENDINGS}
        self.cancelled_in_queue = 0
        self.max_alive = 0

    # ---- size --------------------------------------------------------------------------------------
    @property
    def alive(self) -> int:
        return len(self._alive)

    @property
    def has_idle(self) -> bool:
        return bool(self._idle)

    def grow(self, now: float, waiting: int, running: int) -> int:
        """Submit workers so that ``min(cap, waiting + running)`` are alive, if runs are ``waiting``.
        Returns how many of them started at once (no queue wait): they are idle now."""
        if waiting <= 0:
            return 0
        started = 0
        for _ in range(min(self.cap, waiting + running) - len(self._alive)):
            name = f"pool.w{len(self.workers) + 1}"
            worker = Worker(name, float(self._queue_wait(name)), now)
            self.workers.append(worker)
            self._alive[name] = worker
            if worker.wait > 0:
                self._push(now + worker.wait, "start", worker)
            else:
                self.start(worker, now)
                started += 1
        self.max_alive = max(self.max_alive, len(self._alive))
        return started

    # ---- work --------------------------------------------------------------------------------------
    def start(self, worker: Worker, now: float) -> None:
        """The worker's queue wait is over: it takes a slot and is idle."""
        if worker.started_at is not None or worker.name not in self._alive:
            raise RuntimeError(f"{worker.name} cannot start: it started or ended already")
        worker.started_at = now
        self.waits.append(worker.wait)
        if self.time_limit_s is not None:
            self._push(now + self.time_limit_s, "limit", worker)
        self._set_idle(worker, now)

    def take(self, job_id: str) -> Worker:
        """The longest-idle worker, now holding ``job_id``."""
        if not self._idle:
            raise RuntimeError("no idle worker to take a run")
        _, worker = self._idle.popitem(last=False)
        worker.job_id = job_id
        worker.version += 1
        return worker

    def release(self, worker: Worker, now: float) -> None:
        """The run the worker held ended (or was cancelled): the worker is idle from ``now``."""
        if worker.name not in self._alive or worker.job_id is None:
            raise RuntimeError(f"{worker.name} holds no run to release")
        self._set_idle(worker, now)

    def end(self, worker: Worker, now: float, why: str) -> None:
        """The worker ends at ``now`` (``why``: one of ``ENDINGS``); its slot is free. It must hold no
        run: the caller stops that first."""
        if worker.name not in self._alive:
            raise RuntimeError(f"{worker.name} has ended already")
        del self._alive[worker.name]
        self._idle.pop(worker.name, None)
        worker.ended_at, worker.ended_by, worker.job_id = now, why, None
        worker.version += 1
        if worker.started_at is None:
            self.cancelled_in_queue += 1
        else:
            self._ended_seconds += now - worker.started_at
            self.ended_by[why] += 1

    def close(self, now: float) -> List[str]:
        """The search is over: every worker ends at ``now``. Returns the job ids they still held (the
        caller has stopped those runs first, or stops them now)."""
        held = [w.job_id for w in self._alive.values() if w.job_id is not None]
        for worker in list(self._alive.values()):
            worker.job_id = None
            self.end(worker, now, "search_over")
        return held

    # ---- time --------------------------------------------------------------------------------------
    def next_event_time(self) -> Optional[float]:
        self._drop_void()
        return self._timers[0][0] if self._timers else None

    def pop_due(self, now: float) -> Optional[Tuple[float, str, Worker]]:
        """The earliest worker event due by ``now``: (time, kind, worker), or None. An ``idle`` event
        has already ended its worker; ``start`` and ``limit`` are for the caller to act on."""
        self._drop_void()
        if not self._timers or self._timers[0][0] > now:
            return None
        at, _, kind, name, _ = heapq.heappop(self._timers)
        worker = self._alive[name]
        if kind == "idle":
            self.end(worker, at, "idle_timeout")
        return at, kind, worker

    def lifetime_seconds(self, now: float) -> float:
        """Worker-seconds spent by ``now``: every started worker from its start to its end (or ``now``)."""
        return self._ended_seconds + sum(now - w.started_at for w in self._alive.values() if w.started_at is not None)

    def summary(self, now: float, busy_seconds: float) -> Dict[str, object]:
        """The pool's figures for a simulation result; ``busy_seconds``: the worker-seconds runs held."""
        lifetime = self.lifetime_seconds(now)
        return {"workers": self.settings.workers, "idle_timeout_s": self.idle_timeout_s,
                "time_limit_s": self.time_limit_s, "workers_started": len(self.waits),
                "cancelled_in_queue": self.cancelled_in_queue, "max_alive": self.max_alive,
                "ended_by": dict(self.ended_by), "worker_seconds": lifetime, "busy_seconds": busy_seconds,
                "idle_seconds": lifetime - busy_seconds}

    # ---- internals ---------------------------------------------------------------------------------
    def _set_idle(self, worker: Worker, now: float) -> None:
        worker.job_id = None
        worker.version += 1
        self._idle[worker.name] = worker
        self._push(now + self.idle_timeout_s, "idle", worker)

    def _push(self, at: float, kind: str, worker: Worker) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (at, self._seq, kind, worker.name, worker.version))

    def _void(self, timer: Tuple[float, int, str, str, int]) -> bool:
        """A timer whose worker ended, or (an idle timer) whose worker took a run since it was set."""
        _, _, kind, name, version = timer
        worker = self._alive.get(name)
        if worker is None:
            return True
        if kind == "idle":
            return worker.version != version or worker.job_id is not None
        if kind == "start":
            return worker.started_at is not None
        return False

    def _drop_void(self) -> None:
        while self._timers and self._void(self._timers[0]):
            heapq.heappop(self._timers)
