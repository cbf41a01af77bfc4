"""What the dashboard's experiment pages show, as JSON-able data read from one experiment's database.

Every function opens the database read-only for one short snapshot (a driver writing in WAL mode is
never blocked by it) and reads through the store's paged and streamed reads, so its cost and memory
follow what the page shows (a page of trials, the curves of a few hundred trials, a sample of
trials for the hyperparameter charts), not the size of the experiment: the best-so-far line's steps
are picked by SQLite and kept between requests (best_so_far.py), never a table in Python.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hpo_slurm.config.schema import ExperimentConfig, load_config
from hpo_slurm.config.space import Categorical, Int, Log
from hpo_slurm.core.types import TrialState
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.dashboard.best_so_far import BestSoFarLines
from hpo_slurm.experiment.lock import driver_alive
from hpo_slurm.experiment.rows import TrialRow
from hpo_slurm.core.errors import UserError
from hpo_slurm.experiment.store import Store, StoreError
from hpo_slurm.experiment.store_reads import TRIAL_SORT_COLUMNS
from hpo_slurm.reporting.results import ComputeClock, compute_label_for, leaf_value, searched_leaves
from hpo_slurm.reporting.status import summarize

CURVES_SHOWN = 200  # learning curves drawn on the experiment page: every trial's up to this many, else the best
HPARAM_SAMPLE = 2000  # trials drawn in the hyperparameter charts: spread over the ids ...
HPARAM_BEST = 200  # ... plus the best ones, always
PAGE_SIZES = (10, 25, 50, 100, 250)
TRIAL_STATES = tuple(state.value for state in TrialState)
TRIAL_ID = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also takes "²"
WHOLE = re.compile(r"[0-9]{1,10}")


class BadRequest(ValueError):
    """A query parameter the dashboard cannot use; its message names the parameter."""


@dataclass(frozen=True)
class Experiment:
    """One experiment as the dashboard reads it: its folder and its validated config."""

    layout: ExperimentLayout
    config: ExperimentConfig

    @classmethod
    def at(cls, layout: ExperimentLayout) -> "Experiment":
        return cls(layout, load_config(str(layout.config)))

    @property
    def metric(self) -> str:
        return self.config.searcher.metric

    @property
    def smaller_is_better(self) -> bool:
        return self.config.searcher.smaller_is_better


def overview(layout: ExperimentLayout) -> Dict[str, Any]:
    """One line of the experiment list: name (its folder, as URLs take it), title (the name it was
    launched with), state, searcher, sampler, progress, trials (count by
    state), best (trial_id and metric, or None), driver alive, created_at; or, when the experiment
    cannot be read, its name with ``error``."""
    try:
        experiment = Experiment.at(layout)
        with Store.reading(layout.database) as store, store.snapshot_read():
            row = store.experiment()
            counts = {t.state: t.count for t in store.trial_totals_by_state()}
            best = store.best_trials(1, experiment.smaller_is_better)
    except (UserError, OSError, StoreError) as exc:  # one unreadable experiment must not hide the others
        return {"name": layout.name, "error": str(exc) or type(exc).__name__}
    return {
        "name": layout.name, "title": row["name"], "state": row["state"], "searcher": row["searcher"],
        "sampler": experiment.config.searcher.sampler.name, "metric": experiment.metric,
        "progress": float(row.get("progress") or 0.0), "trials": counts, "trial_count": sum(counts.values()),
        "best": best and {"trial_id": best[0]["id"], "metric": best[0]["best_metric"]},
        "driver_alive": driver_alive(layout.lock)["alive"], "created_at": row["created_at"],
    }


def detail(experiment: Experiment) -> Dict[str, Any]:
    """The experiment page's summary: ``hpo-slurm status``'s summary (status.summarize) plus what the
    charts need: the metric's direction and unit, the compute label, the searched hyperparameters and
    the lengths trials stopped at (rungs: none when the search has no max_length, ``max_length`` None,
    since its trials stop wherever their code does)."""
    summary = summarize(experiment.layout, page_cache_kib=0)  # a server keeps no 64 MiB cache per request
    rungs: List[int] = []
    if not experiment.config.searcher.open_ended:
        with Store.reading(experiment.layout.database) as store:
            rungs = store.lengths_reached()
    return {**summary, "unit": experiment.config.searcher.unit,
            "compute_label": compute_label_for(experiment.config.slots_per_trial),
            "hyperparameters": _params(experiment), "rungs": rungs,
            "max_length": experiment.config.searcher.max_length}


def _params(experiment: Experiment) -> List[Dict[str, Any]]:
    """Each searched hyperparameter: dotted name, kind (int, double, log, categorical) and its range of
    values (a log parameter's too, not its exponents) or its values as labels."""
    described = []
    for name, param in searched_leaves(experiment.config.hyperparameters):
        if isinstance(param, Categorical):
            described.append({"name": name, "kind": "categorical", "vals": [_label(v) for v in param.vals]})
        elif isinstance(param, Log):  # its bounds are exponents: the charts want the values
            described.append({"name": name, "kind": "log", "minval": param.base ** param.minval,
                              "maxval": param.base ** param.maxval})
        else:
            kind = "int" if isinstance(param, Int) else "double"
            described.append({"name": name, "kind": kind, "minval": param.minval, "maxval": param.maxval})
    return described


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def trial_rows(experiment: Experiment, sort: str = "id", order: str = "asc", states: str = "",
               text: str = "", offset: str = "0", limit: str = "50") -> Dict[str, Any]:
    """A page of the trial table: ``total`` trials, ``matched`` by the filters, and ``rows`` (each a
    trial's id, state, metrics, lengths, counts and hyperparameters). Parameters arrive as query
    strings; a bad one is a BadRequest naming it."""
    if sort not in TRIAL_SORT_COLUMNS:
        raise BadRequest(f"sort: expected one of {', '.join(TRIAL_SORT_COLUMNS)}, got {sort!r}")
    if order not in ("asc", "desc"):
        raise BadRequest(f"order: expected asc or desc, got {order!r}")
    start = _whole(offset, "offset", 0)
    size = _whole(limit, "limit", 1)
    if size not in PAGE_SIZES:
        raise BadRequest(f"limit: expected one of {', '.join(map(str, PAGE_SIZES))}, got {size}")
    wanted = [s for s in states.split(",") if s]
    unknown = [s for s in wanted if s not in TRIAL_STATES]
    if unknown:
        raise BadRequest(f"states: expected trial states ({', '.join(TRIAL_STATES)}), got {unknown[0][:40]!r}")
    filtered = bool(wanted or text.strip())
    with Store.reading(experiment.layout.database) as store, store.snapshot_read():
        matched, rows = store.trial_page(sort, order == "desc", wanted, text.strip()[:200], start, size)
        total = store.trial_totals().count if filtered else matched
    return {"total": total, "matched": matched, "offset": start, "rows": [trial_row(t) for t in rows]}


def _whole(text: str, name: str, minimum: int) -> int:
    if not WHOLE.fullmatch(text) or int(text) < minimum:
        raise BadRequest(f"{name}: expected a whole number from {minimum}, got {text[:40]!r}")
    return int(text)


def trial_row(trial: TrialRow) -> Dict[str, Any]:
    return {
        "id": trial["id"], "state": trial["state"], "hparams": json.loads(trial["hparams"]),
        "parent": trial["parent"], "best_metric": _finite(trial["best_metric"]),
        "best_length": trial["best_length"], "latest_metric": _finite(trial["latest_metric"]),
        "validated_length": trial["validated_length"] or 0,
        "trained_length": max(trial.get("trained_length") or 0, trial["validated_length"] or 0),
        "target_length": trial["target_length"], "restarts": trial["restarts"] or 0,
        "preemptions": trial["preemptions"] or 0, "time_limits": trial.get("time_limits") or 0,
        "message": trial["message"],
        "created_at": trial["created_at"], "ended_at": trial["ended_at"],
    }


def _finite(value: Optional[float]) -> Optional[float]:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def parse_ids(text: str, name: str = "ids", most: int = CURVES_SHOWN) -> List[int]:
    """``"3,1,7"`` -> [3, 1, 7] (duplicates dropped, order kept); a BadRequest naming ``name`` when an
    item is not a trial id or there are more than ``most``."""
    ids: List[int] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not TRIAL_ID.fullmatch(item):
            raise BadRequest(f"{name}: expected trial ids separated by commas, got {item[:40]!r}")
        if int(item) not in ids:
            ids.append(int(item))
    if len(ids) > most:
        raise BadRequest(f"{name}: at most {most} trials, got {len(ids)}")
    return ids


def curves(experiment: Experiment, ids: Sequence[int] = ()) -> Dict[str, Any]:
    """Learning curves of the searcher's metric: of the trials ``ids`` when given, else of every
    trial when there are at most CURVES_SHOWN scored trials, else of the CURVES_SHOWN best. ``curves``
    maps trial id -> [[length, value], ...]; ``parents`` maps a PBT child to [parent id, length it
    started from]; ``scored`` counts the trials with a value; ``best`` is the best trial's id."""
    smaller = experiment.smaller_is_better
    with Store.reading(experiment.layout.database) as store, store.snapshot_read():
        scored = store.scored_trial_count()
        best = store.best_trials(1, smaller)
        chosen = store.trials_by_id(list(ids)) if ids else store.best_trials(CURVES_SHOWN, smaller)
        wanted = [t["id"] for t in chosen]
        parents = {t["id"]: t["parent"] for t in chosen if t["parent"] is not None}
        points = store.validation_curves(sorted(set(wanted) | set(parents.values())), experiment.metric)
    starts = {child: _start_length(points.get(parent, []), points.get(child, []))
              for child, parent in parents.items()}
    return {
        "metric": experiment.metric, "smaller_is_better": smaller, "scored": scored,
        "best": best[0]["id"] if best else None,
        "curves": {str(i): points[i] for i in wanted if i in points},
        "parents": {str(child): [parents[child], start] for child, start in starts.items() if start is not None},
    }


def _start_length(parent: List[Tuple[int, float]], child: List[Tuple[int, float]]) -> Optional[int]:
    """The longest length of the parent's curve before the child's first point (where PBT cloned it)."""
    if not parent or not child:
        return None
    before = [length for length, _ in parent if length < child[0][0]]
    return before[-1] if before else None


def best_vs_compute(experiment: Experiment, lines: BestSoFarLines, now: Optional[float] = None) -> Dict[str, Any]:
    """The best value so far against compute spent: ``points`` are [compute hours, best value, trial
    id] at each validation that improved on the best, and ``total_hours`` the compute spent until now
    (a run still going counts up to now). Compute is job hours times slots_per_trial (plain job hours
    when trials use no GPU). ``lines`` keeps the steps between requests (best_so_far.py); the runs'
    times go straight from SQLite into numpy for the ComputeClock."""
    import numpy as np

    moment_now = time.time() if now is None else now
    factor = experiment.config.slots_per_trial or 1
    smaller = experiment.smaller_is_better
    steps = lines.steps(experiment.layout.database, experiment.metric, smaller)
    with Store.reading(experiment.layout.database) as store:
        intervals = np.fromiter(store.run_intervals(moment_now), dtype=[("start", "f8"), ("end", "f8")])
    clock = ComputeClock(intervals["start"], intervals["end"])
    if len(intervals):  # a simulated search's clock can run ahead of this one
        moment_now = max(moment_now, float(intervals["end"].max()))
    points = [[clock.seconds_at(moment) * factor / 3600.0, value, trial_id] for moment, _, value, trial_id in steps]
    return {"metric": experiment.metric, "smaller_is_better": smaller, "points": points,
            "total_hours": clock.seconds_at(moment_now) * factor / 3600.0,
            "compute_label": compute_label_for(experiment.config.slots_per_trial)}


def hyperparameter_points(experiment: Experiment) -> Dict[str, Any]:
    """Each scored trial's searched hyperparameters with its best metric, for the scatter and
    parallel-coordinates charts: ``params`` (as in ``detail``) and ``rows`` of [trial id, metric,
    value per param] (categorical values as their labels). At most HPARAM_SAMPLE trials spread over
    the ids plus the HPARAM_BEST best; ``scored`` says how many there are in all."""
    with Store.reading(experiment.layout.database) as store, store.snapshot_read():
        scored = store.scored_trial_count()
        trials = store.trial_sample(HPARAM_SAMPLE, HPARAM_BEST, experiment.smaller_is_better)
    params = _params(experiment)
    rows = []
    for trial in trials:
        metric = _finite(trial["best_metric"])
        if metric is None:
            continue
        hparams = json.loads(trial["hparams"])
        values = [leaf_value(hparams, p["name"]) for p in params]
        rows.append([trial["id"], metric, *[_label(v) if p["kind"] == "categorical" else v
                                             for p, v in zip(params, values)]])
    return {"metric": experiment.metric, "smaller_is_better": experiment.smaller_is_better, "params": params,
            "rows": rows, "scored": scored}
