"""An experiment's results as plain data, read once from its database (read-only), for the commands
that look back at a search: ``plot``, ``report``, ``best``, ``export`` and ``tensorboard``.

``load(layout)`` reads one consistent snapshot; everything else here is a pure function of it.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from hpo_slurm.config.schema import ExperimentConfig, load_config
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.experiment.store import Store
from hpo_slurm.config.space import Categorical, Const, Nested, Param

Curve = List[Tuple[int, float]]


@dataclass(frozen=True)
class Results:
    """One experiment as read: rows from the store with JSON columns decoded
    (``trials[i]["hparams"]`` and ``metrics[i]["metrics"]`` are dicts)."""

    layout: ExperimentLayout
    config: ExperimentConfig
    experiment: Dict[str, Any]
    trials: List[Dict[str, Any]]
    runs: List[Dict[str, Any]]
    metrics: List[Dict[str, Any]]
    read_at: float

    @property
    def metric(self) -> str:
        return self.config.searcher.metric

    @property
    def smaller_is_better(self) -> bool:
        return self.config.searcher.smaller_is_better

    @property
    def unit(self) -> str:
        return self.config.searcher.unit

    def trial(self, trial_id: int) -> Dict[str, Any]:
        for row in self.trials:
            if row["id"] == trial_id:
                return row
        raise KeyError(trial_id)


def load(layout: ExperimentLayout) -> Results:
    """Read the experiment's config and database, or raise a UserError naming what is unreadable."""
    store = Store.open_for_reading(layout.database)
    try:
        with store.snapshot_read():
            experiment = store.experiment()
            trials = store.trials()
            runs = store.runs()
            metrics = store.metrics()
    finally:
        store.close()
    for row in trials:
        row["hparams"] = json.loads(row["hparams"])
    return Results(layout, load_config(str(layout.config)), experiment, trials, runs, metrics, time.time())


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validation_curves(results: Results) -> Dict[int, Curve]:
    """Trial id -> [(length, value)] of the searcher's metric, sorted by length, finite values only.
    A length reported twice (a resumed run validating again) keeps the later report."""
    by_trial: Dict[int, Dict[int, float]] = {}
    for row in results.metrics:
        value = row["metrics"].get(results.metric)
        if row["kind"] == "validation" and finite(value):
            by_trial.setdefault(row["trial_id"], {})[row["length"]] = float(value)
    return {trial_id: sorted(points.items()) for trial_id, points in sorted(by_trial.items())}


def ranked_trials(results: Results) -> List[Dict[str, Any]]:
    """Trials with a finite best metric, best first (ties: lower id first)."""
    scored = [t for t in results.trials if finite(t["best_metric"])]
    sign = 1.0 if results.smaller_is_better else -1.0
    return sorted(scored, key=lambda t: (sign * t["best_metric"], t["id"]))


def length_reached(trial: Dict[str, Any]) -> int:
    return trial["validated_length"] or 0


CHECKPOINT_NAME = re.compile(r"length-(\d+)$")


def parent_length(trial: Dict[str, Any]) -> Optional[int]:
    """The length of the checkpoint a PBT child started from (read from its folder name), or None."""
    match = CHECKPOINT_NAME.search(str(trial["parent_checkpoint"] or "").rstrip("/"))
    return int(match.group(1)) if match else None


def searched_leaves(space: Nested) -> List[Tuple[str, Param]]:
    """(dotted name, parameter) for every hyperparameter that varies: consts and one-value
    categoricals are left out."""
    return [(".".join(path), param) for path, param in space.leaves()
            if not isinstance(param, Const) and not (isinstance(param, Categorical) and len(param.vals) < 2)]


def leaf_value(hparams: Dict[str, Any], dotted: str) -> Any:
    node: Any = hparams
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def flatten(tree: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)``, in insertion order."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def compute_hours_at(results: Results, moment: float) -> float:
    """Accelerator hours spent by all runs up to ``moment``: job hours times slots_per_trial, or plain
    job hours when trials use no GPU (slots_per_trial 0). A run still going counts up to now."""
    factor = results.config.slots_per_trial or 1
    seconds = 0.0
    for run in results.runs:
        start = run["started_at"]
        if not start:
            continue
        end = run["ended_at"] or results.read_at
        seconds += max(0.0, min(end, moment) - start)
    return seconds * factor / 3600.0


class ComputeClock:
    """Wall seconds all runs spent up to a moment, as ``compute_hours_at`` counts them (a run counts
    from its start to its end or the moment, whichever is first), for many moments: the starts and
    ends sorted, with their prefix sums, make each moment two binary searches instead of a pass over
    the runs. ``starts`` and ``ends`` are sequences of epoch seconds, a run still going ending now."""

    def __init__(self, starts: Sequence[float], ends: Sequence[float]):
        import numpy as np

        starts = np.asarray(starts, dtype=float)
        ends = np.maximum(np.asarray(ends, dtype=float), starts)
        # times from the first start: prefix sums of epoch seconds would cancel away their precision
        self._origin = float(starts.min()) if len(starts) else 0.0
        self._starts = np.sort(starts - self._origin)
        self._ends = np.sort(ends - self._origin)
        self._start_sums = np.concatenate([[0.0], np.cumsum(self._starts)])
        self._end_sums = np.concatenate([[0.0], np.cumsum(self._ends)])

    @classmethod
    def of_runs(cls, runs: Sequence[Dict[str, Any]], now: float) -> "ComputeClock":
        """The clock of run rows (``started_at``, ``ended_at``); runs not started are left out."""
        started = [run for run in runs if run["started_at"]]
        return cls([run["started_at"] for run in started], [run["ended_at"] or now for run in started])

    def seconds_at(self, at: float) -> float:
        import numpy as np

        moment = at - self._origin
        started = int(np.searchsorted(self._starts, moment))
        ended = int(np.searchsorted(self._ends, moment))
        # runs started before t contribute t - start; those also ended before t give back t - end
        total = (moment * started - self._start_sums[started]) - (moment * ended - self._end_sums[ended])
        return float(max(0.0, total))


def compute_label_for(slots: int) -> str:
    """Axis label for compute of trials of ``slots`` GPUs: GPU-hours, or compute hours (said so) for
    CPU-only trials."""
    if slots:
        return f"GPU-hours ({slots} GPU{'s' if slots > 1 else ''} per trial × job hours)"
    return "compute hours (job hours; slots_per_trial is 0, no GPUs)"


def compute_label(results: Results) -> str:
    """``compute_label_for`` the experiment's slots_per_trial."""
    return compute_label_for(results.config.slots_per_trial)


def best_so_far(results: Results) -> List[Tuple[float, float, float, int]]:
    """Every validation of the searcher's metric in time order as (compute hours at that moment,
    the value reported, the best value so far, trial id)."""
    events = sorted(
        (row["time"], float(row["metrics"][results.metric]), row["trial_id"])
        for row in results.metrics
        if row["kind"] == "validation" and finite(row["metrics"].get(results.metric))
    )
    clock = ComputeClock.of_runs(results.runs, results.read_at)
    hours_per_second = (results.config.slots_per_trial or 1) / 3600.0
    best: Optional[float] = None
    points = []
    for moment, value, trial_id in events:
        better = best is None or (value < best if results.smaller_is_better else value > best)
        best = value if better else best
        points.append((clock.seconds_at(moment) * hours_per_second, value, best, trial_id))
    return points


def total_compute_hours(results: Results) -> float:
    return compute_hours_at(results, results.read_at)
