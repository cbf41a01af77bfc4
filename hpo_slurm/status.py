"""What ``hpo-slurm status`` reports, as plain data read from the experiment database (read-only)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Dict, List

from .config import load_config
from .errors import UserError
from .layout import ExperimentLayout
from .lock import driver_alive
from .store import Store
from .types import TrialState


def open_readonly(layout: ExperimentLayout) -> Store:
    """The experiment database for reading, or a UserError saying it cannot be read."""
    try:
        return Store.open(layout.database, readonly=True)
    except sqlite3.Error as exc:
        raise UserError(f"{layout.database}: cannot read the experiment database ({exc})") from exc


def summarize(layout: ExperimentLayout, with_trials: bool = True) -> Dict[str, Any]:
    """One JSON-able object: the experiment, its driver, the best trial and (optionally) every trial
    with its runs. Reads one consistent snapshot of the database."""
    store = open_readonly(layout)
    try:
        with store.snapshot_read():
            experiment = store.experiment()
            trials = store.trials()
            runs = store.runs() if with_trials else []
    finally:
        store.close()
    config = load_config(str(layout.config))
    smaller = config.searcher.smaller_is_better
    progress = float(experiment.get("progress") or 0.0)
    runs_by_trial: Dict[int, List[Dict[str, Any]]] = {}
    for run in runs:
        runs_by_trial.setdefault(run["trial_id"], []).append(run)
    best = _best(trials, smaller)
    counts: Dict[str, int] = {state.value: 0 for state in TrialState}
    for trial in trials:
        counts[trial["state"]] += 1
    summary: Dict[str, Any] = {
        "name": experiment["name"],
        "state": experiment["state"],
        "searcher": experiment["searcher"],
        "executor": experiment["executor"],
        "metric": config.searcher.metric,
        "smaller_is_better": smaller,
        "progress": progress,
        "driver": driver_alive(layout.lock),
        "trial_counts": counts,
        "gpu_hours": _gpu_hours(runs, config.slots_per_trial) if with_trials else None,
        "checkpoint_bytes": sum(t["checkpoint_bytes"] or 0 for t in trials),
        "best": best,
        "created_at": experiment["created_at"],
        "ended_at": experiment["ended_at"],
    }
    if with_trials:
        summary["trials"] = [_trial(t, runs_by_trial.get(t["id"], [])) for t in trials]
    return summary


def _trial(trial: Dict[str, Any], runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "id": trial["id"],
        "state": trial["state"],
        "hparams": json.loads(trial["hparams"]),
        "parent": trial["parent"],
        "length_done": trial["validated_length"] or 0,
        "target_length": trial["target_length"],
        "latest_metric": trial["latest_metric"],
        "best_metric": trial["best_metric"],
        "restarts": trial["restarts"] or 0,
        "preemptions": trial["preemptions"] or 0,
        "checkpoint_bytes": trial["checkpoint_bytes"] or 0,
        "message": trial["message"],
        "runs": [
            {"run_id": r["id"], "job_id": r["job_id"], "from_length": r["from_length"], "to_length": r["to_length"],
             "state": r["state"], "reason": r["reason"]}
            for r in runs
        ],
    }


def _best(trials: List[Dict[str, Any]], smaller_is_better: bool) -> Any:
    scored = [t for t in trials if t["best_metric"] is not None]
    if not scored:
        return None
    pick = min if smaller_is_better else max
    best = pick(scored, key=lambda t: t["best_metric"])
    return {"trial_id": best["id"], "metric": best["best_metric"], "length": best["best_length"],
            "hparams": json.loads(best["hparams"])}


def _gpu_hours(runs: List[Dict[str, Any]], gpus_per_trial: int) -> float:
    seconds = sum((r["ended_at"] or 0) - r["started_at"] for r in runs if r["started_at"] and r["ended_at"])
    return seconds * max(gpus_per_trial, 0) / 3600.0
