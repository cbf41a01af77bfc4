"""The simulated cluster's world apart from its scheduler (``executors.simulated``): the virtual clock
the driver reads, the fault model, and the in-memory workspace its jobs "write" to.

* ``VirtualClock``: the time the driver sees (``Driver(clock=...)``); only the simulation moves it.
* ``Faults``: per-attempt probabilities of stragglers, failures and preemptions, and the queue wait.
* ``SimulatedWorkspace``: the in-memory ``Workspace``: metric lines, results, attempts, checkpoints and
  run specs are kept in dicts (results and specs as the protocol's ``RunResult`` and ``RunSpec``).

Nothing here touches the filesystem; every random draw is seeded by ``run_seed(seed, run id)``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from hpo_slurm.core.protocol import MetricLine, RunResult, RunSpec, StopReason
from hpo_slurm.core.rng import Rng
from hpo_slurm.executors.base import Workspace

SIM_ROOT = Path("/simulated")  # run folders and spec paths the driver names; never created


class VirtualClock:
    """``clock()`` is ``origin + t``: the driver sees epoch-like times, while the simulation keeps
    ``t`` (seconds since it began, moved only by the simulation loop) so that its own arithmetic does
    not depend on the origin."""

    def __init__(self, origin: float = 0.0):
        self.origin = float(origin)
        self.t = 0.0

    def __call__(self) -> float:
        return self.origin + self.t


@dataclass(frozen=True)
class Faults:
    """Probabilities, per run attempt, of a straggler, a failure and a preemption; and the wait of each
    submitted job in the scheduler's queue before it may take a worker: lognormal with median
    ``queue_wait_median_s`` and shape ``queue_wait_sigma`` (0 s: no wait)."""

    stragglers: float = 0.0
    straggler_factor: float = 4.0
    failures: float = 0.0
    preemptions: float = 0.0
    queue_wait_median_s: float = 0.0
    queue_wait_sigma: float = 1.0

    def __post_init__(self) -> None:
        for name in ("stragglers", "failures", "preemptions"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if self.failures + self.preemptions > 1.0:
            raise ValueError("failures + preemptions must not exceed 1")
        if self.straggler_factor < 1.0:
            raise ValueError(f"straggler_factor must be at least 1, got {self.straggler_factor}")
        if self.queue_wait_median_s < 0 or self.queue_wait_sigma < 0:
            raise ValueError("queue_wait_median_s and queue_wait_sigma must not be negative")

    def queue_wait(self, seed: int, run_id: str) -> float:
        """How long the job of ``run_id`` (or the pool's worker job of that name) waits in the scheduler's
        queue (seconds; 0 without a wait)."""
        if self.queue_wait_median_s <= 0:
            return 0.0
        return self.queue_wait_median_s * math.exp(self.queue_wait_sigma * Rng(run_seed(seed, f"{run_id}/queue")).gauss())


class SimulatedWorkspace(Workspace):
    """What jobs leave behind, in memory. Metric offsets are indexes into a trial's list of lines."""

    def __init__(self) -> None:
        self.lines: Dict[int, List[MetricLine]] = {}
        self.results: Dict[str, RunResult] = {}
        self.starts: Dict[str, int] = {}
        self.times: Dict[str, Tuple[Optional[float], Optional[float]]] = {}  # run -> (started, ended)
        self.checkpoints: Dict[int, int] = {}  # trial -> length of its latest checkpoint
        self.specs: Dict[str, RunSpec] = {}  # run -> what its job reads (dropped when it starts)
        self.stop_requests: Set[str] = set()
        self.stop_search = False

    # the driver's side
    def stop_requested(self) -> bool:
        return self.stop_search

    def read_metrics(self, trial_id: int, offset: int) -> Tuple[List[MetricLine], int, List[str]]:
        lines = self.lines.get(trial_id)
        if not lines or offset >= len(lines):
            return [], offset, []
        return lines[offset:], len(lines), []

    def read_result(self, run_id: str) -> Optional[RunResult]:
        return self.results.get(run_id)

    def attempts(self, run_id: str) -> int:
        return self.starts.get(run_id, 0)

    def earlier_interruptions(self, run_id: str) -> List[StopReason]:
        return [StopReason.PREEMPTED] * max(0, self.attempts(run_id) - 1)  # the simulator requeues preemptions

    def run_times(self, run_id: str) -> Tuple[Optional[float], Optional[float]]:
        return self.times.get(run_id, (None, None))

    def latest_checkpoint(self, trial_id: int) -> Optional[str]:
        length = self.checkpoints.get(trial_id)
        return None if length is None else checkpoint_path(trial_id, length)

    def prepare_run(self, run_id: str, trial_id: int, spec: RunSpec) -> None:
        self.specs[run_id] = spec

    def request_stop(self, run_id: str) -> None:
        self.stop_requests.add(run_id)

    def collect_garbage(self, config, trials, trial_id, validations, referenced) -> int:
        return 0

    def run_dir(self, run_id: str) -> Path:
        return SIM_ROOT  # nothing is written there; one constant saves building two paths per run

    def spec_path(self, run_id: str) -> Path:
        return SIM_ROOT

    # the jobs' side
    def start_length(self, trial_id: int, parent_checkpoint: Optional[str]) -> int:
        """Where a run of the trial starts: its latest checkpoint, else its parent's, else 0."""
        if trial_id in self.checkpoints:
            return self.checkpoints[trial_id]
        if parent_checkpoint:
            return checkpoint_length(parent_checkpoint)
        return 0


def checkpoint_path(trial_id: int, length: int) -> str:
    return f"sim://trials/{trial_id}/length-{length}"


def checkpoint_length(path: str) -> int:
    return int(path.rsplit("length-", 1)[1])


def run_seed(seed: int, run_id: str) -> int:
    """A stable 64-bit seed for one run's random draws (independent of Python's hash seed)."""
    digest = hashlib.blake2b(f"{seed}:{run_id}".encode(), digest_size=8).digest()
    return struct.unpack("<Q", digest)[0]
