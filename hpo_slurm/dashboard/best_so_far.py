"""The steps of an experiment's best-so-far line, kept by the dashboard between requests and brought
up to date from the metrics rows ingested since: a page that polls a live search costs a read of its
new rows, not of the whole table.

A step is a validation better than every earlier one, earlier meaning by (time reported, row id).
Rows arrive in id order but not in time order (a trial's report can be ingested after later ones), so
a new candidate is placed where its time puts it: it is a step when it beats the last step before it,
and then the steps after it that it beats or ties stop being steps.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from hpo_slurm.experiment.store import Store

Step = Tuple[float, int, float, int]  # (time, metrics row id, value, trial id)


def merge_steps(steps: List[Step], candidates: Iterable[Step], smaller_is_better: bool) -> List[Step]:
    """``steps`` (the line so far, in (time, id) order) with ``candidates`` placed in it: a new list."""
    merged = list(steps)
    keys = [(s[0], s[1]) for s in merged]

    def beats(value: float, other: float) -> bool:
        return value < other if smaller_is_better else value > other

    for candidate in sorted(candidates, key=lambda c: (c[0], c[1])):
        at = bisect.bisect_left(keys, (candidate[0], candidate[1]))
        if at and not beats(candidate[2], merged[at - 1][2]):
            continue
        end = at
        while end < len(merged) and not beats(merged[end][2], candidate[2]):
            end += 1
        merged[at:end] = [candidate]
        keys[at:end] = [(candidate[0], candidate[1])]
    return merged


@dataclass
class _Line:
    smaller_is_better: bool
    steps: List[Step] = field(default_factory=list)
    last_id: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class BestSoFarLines:
    """One line per (experiment database, experiment uid, metric, direction), owned by the dashboard
    application; requests for the same line wait for each other instead of reading the table twice."""

    def __init__(self) -> None:
        self._lines: Dict[Tuple[str, str, str, bool], _Line] = {}
        self._guard = threading.Lock()

    def steps(self, database: Path, metric: str, smaller_is_better: bool) -> List[Step]:
        """The steps of ``metric``'s line in the experiment database at ``database``, up to date: read
        in a snapshot taken after this line's lock, so it never lags the line's last reader."""
        with Store.reading(database) as store:
            uid = store.experiment()["uid"]
            key = (str(database), uid, metric, smaller_is_better)
            with self._guard:
                line = self._lines.setdefault(key, _Line(smaller_is_better))
            with line.lock, store.snapshot_read():
                candidates, last_id = store.best_candidates(metric, smaller_is_better, after_id=line.last_id)
                if last_id < line.last_id:  # rows gone: not the table the line was built from
                    candidates, last_id = store.best_candidates(metric, smaller_is_better)
                    line.steps = []
                line.steps = merge_steps(line.steps, candidates, smaller_is_better)
                line.last_id = last_id
                return list(line.steps)
