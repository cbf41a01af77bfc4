"""When the driver submits, and how it backs off: retries after failed submissions, a cap on runs per
submission after the cluster refused more for its queued-jobs cap, and the runs whose last submission
may have created jobs (looked up by name before they are submitted again). Holds no I/O: the driver
asks it and tells it what happened."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, TypeVar

from hpo_slurm.core.types import awaits_submission

SUBMIT_BACKOFF_S = (5.0, 15.0, 60.0, 300.0)
SUBMIT_LIMIT_RETRY_S = 10.0  # after a refusal for a queued-jobs cap: jobs that end make room

T = TypeVar("T")


class SubmissionPolicy:
    """The driver's submission state between ticks (lost with the driver: a resumed driver starts
    afresh, and looks up every unbound run by name first)."""

    def __init__(self) -> None:
        self.next_submit_at = -math.inf
        self.failures = 0
        self.batch_cap: Optional[int] = None  # most runs per submission, after a queued-jobs cap refused more
        self.uncertain: Set[str] = set()  # runs whose last submission attempt may have created a job

    def may_submit(self, now: float) -> bool:
        return now >= self.next_submit_at

    def take(self, ready: List[T]) -> List[T]:
        """The runs to submit now, oldest first, at most the current cap."""
        return ready[:self.batch_cap]

    def wait_for_lookup(self, now: float) -> None:
        """Runs that may have been submitted could not be looked up: try again after the first backoff."""
        self.next_submit_at = now + SUBMIT_BACKOFF_S[0]

    def refused(self, now: float, failed: Iterable[str], retry: bool, limit: bool) -> float:
        """A submission failed for ``failed`` runs. ``retry``: it may work later (and may have created
        jobs: they become uncertain); ``limit``: the cluster's cap on queued jobs refused them, so later
        submissions take half as many. Returns the delay before the next try."""
        failed = list(failed)
        self.failures += 1
        delay = SUBMIT_BACKOFF_S[min(self.failures, len(SUBMIT_BACKOFF_S)) - 1]
        if limit:
            self.batch_cap, delay = max(1, len(failed) // 2), SUBMIT_LIMIT_RETRY_S
        if retry:
            self.next_submit_at = now + delay
            self.uncertain.update(failed)
        return delay

    def succeeded(self) -> None:
        """A submission went through: no backoff, and room may have freed up (a refusal halves the cap again)."""
        self.failures = 0
        if self.batch_cap is not None:
            self.batch_cap *= 2


def ready_runs(active: Mapping[int, List[str]], runs: Mapping[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The runs (rows of ``runs`` by id) that wait for a job: of each trial's unfinished runs
    (``active``: trial id -> run ids, oldest first), the first, if unsubmitted; in recording order."""
    ready = [runs[run_ids[0]] for run_ids in active.values() if awaits_submission(runs[run_ids[0]])]
    return sorted(ready, key=lambda r: (r["recorded_at"], r["trial_id"]))
