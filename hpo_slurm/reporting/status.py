"""What ``hpo-slurm status`` reports, as plain data read from the experiment database (read-only).

The summary is computed with the store's SQL aggregates (counts by state, sums, ``ORDER BY ... LIMIT``), so its
cost does not grow with a Python object per trial: a 100,000-trial experiment summarizes in a few
table scans. The listing of trials with their runs is asked for explicitly (``trials="all"`` or the
latest N). The nodes of a run come from its attempts file, read only for the RUNNING runs the summary
shows, so that cost follows the jobs running now, not the experiment's size."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Tuple, Union

from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.experiment.lock import driver_alive
from hpo_slurm.experiment.rows import RunRow, TrialRow
from hpo_slurm.experiment.store import Store
from hpo_slurm.reporting.nodes import last_attempt_nodes
from hpo_slurm.reporting.pool import read_pool
from hpo_slurm.core.types import RunState, TrialState

TOP_TRIALS = 10  # trials listed by their best metric in every summary
ACTIVE_RUNS = 20  # active (submitted or running) runs listed in a summary; run_counts has them all
ACTIVE_RUN_STATES = (RunState.SUBMITTED.value, RunState.RUNNING.value)
RUNNING_RUNS_READ = 10_000  # RUNNING runs whose hours so far count in a pool's run hours (at most one a worker)
READ_CACHE_KIB = 64 * 1024  # SQLite page cache of the reading connection (the default is 2 MiB)
TrialsWanted = Union[None, str, int]  # None: no listing; "all": every trial; N: the latest N trials


def parse_trials_option(value: Optional[str]) -> TrialsWanted:
    """``--trials`` as given on the command line: None, ``"all"`` or a positive whole number N.
    Anything else is a UserError naming the value."""
    if value is None:
        return None
    text = value.strip().lower()
    if text == "all":
        return "all"
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise UserError(f"--trials: expected all or a positive whole number of trials, got {value!r}")


def summarize(layout: ExperimentLayout, trials: TrialsWanted = None, page_cache_kib: int = READ_CACHE_KIB) -> Dict[str, Any]:
    """One JSON-able object read from one consistent snapshot of the database:

    ``name`` (as launched), ``folder`` (the experiment's folder: the name when that is a safe folder
    name, else a safe spelling of it), ``state``, ``searcher``, ``executor``, ``metric``, ``smaller_is_better``, ``progress``,
    ``driver``, ``trial_counts`` and ``run_counts`` (every state, zeros included; ``runs_unsubmitted``
    says how many of the SUBMITTED runs have no job yet), ``job_hours`` (wall
    hours of the runs that started and ended), ``slots_per_trial`` and ``gpu_hours`` (job hours times
    ``slots_per_trial``: 0 when trials use no GPU), ``checkpoint_bytes``, ``best`` (trial_id, metric,
    length, hparams; None before any validation), ``top_trials`` (the TOP_TRIALS best trials by the
    searcher's metric, best first, each with its runs), ``active_runs`` (at most ACTIVE_RUNS submitted or
    running runs, oldest first), ``created_at``, ``ended_at``; and, only when ``trials`` is ``"all"`` or
    N, ``trials``: every trial (or the N with the highest ids) in id order, each with its runs. Every run
    has ``nodes``: for a RUNNING run, the node names its job's last attempt recorded (None when it
    recorded none yet); None for every other run. In a search without max_length, a training trial's
    ``target_length`` and its runs' ``to_length`` are 0 (NO_TARGET: it trains until its code stops)
    and ``length_done`` is the longest length it validated at. ``page_cache_kib``: the reading connection's SQLite page
    cache (0: SQLite's default, for a long-lived process that reads often).

    ``pool``: None when the config has no ``slurm.pool``; else the pool of worker jobs, read from its
    files after the database (``reporting.pool.read_pool``: ``max_workers``, ``idle_timeout_s``,
    ``workers``, each with its job id, state, the run it holds, idle seconds, runs done, host, start and
    end, and ``totals``: workers live, runs queued, worker hours and idle hours). Its ``run_hours`` are
    the wall hours of the runs that ended plus those of the RUNNING runs so far."""
    from hpo_slurm.config.schema import load_config

    config = load_config(str(layout.config))
    smaller = config.searcher.smaller_is_better
    pooled = config.slurm.pool
    run_seconds, now = 0.0, time.time()
    store = Store.open_for_reading(layout.database)
    try:
        if page_cache_kib:
            store.use_page_cache(page_cache_kib)  # the trials table is scanned twice: keep it in memory
        with store.snapshot_read():
            experiment = store.experiment()
            trial_counts = {state.value: 0 for state in TrialState}
            checkpoint_bytes = 0
            for trial_totals in store.trial_totals_by_state():
                trial_counts[trial_totals.state] = trial_totals.count
                checkpoint_bytes += trial_totals.checkpoint_bytes
            run_counts = {state.value: 0 for state in RunState}
            job_seconds = 0.0
            unsubmitted = 0
            for run_totals in store.run_totals_by_state():  # one scan of the runs
                run_counts[run_totals.state] = run_totals.count
                job_seconds += run_totals.job_seconds
                if run_totals.state == RunState.SUBMITTED.value:
                    unsubmitted = run_totals.without_job
            top = store.best_trials(TOP_TRIALS, smaller)
            active = store.runs_in_states(ACTIVE_RUN_STATES, ACTIVE_RUNS)  # oldest recorded first
            top_runs = store.runs_by_trial([t["id"] for t in top])
            listed = _listing(store, trials)
            if pooled is not None:  # every run of a pooled search ran on its workers
                held = store.runs_in_states((RunState.RUNNING.value,), RUNNING_RUNS_READ)
                run_seconds = job_seconds + sum(max(0.0, now - r["started_at"]) for r in held if r["started_at"])
    finally:
        store.close()
    best = top[0] if top else None
    shown = [*active, *(r for runs in top_runs.values() for r in runs),
             *(r for runs in (listed[1].values() if listed else ()) for r in runs)]
    running = dict.fromkeys(r["id"] for r in shown if r["state"] == RunState.RUNNING.value)
    nodes = {run_id: last_attempt_nodes(layout.attempts_file(run_id)) for run_id in running}
    summary: Dict[str, Any] = {
        "name": experiment["name"],
        "folder": layout.name,
        "state": experiment["state"],
        "searcher": experiment["searcher"],
        "sampler": config.searcher.sampler.name,
        "executor": experiment["executor"],
        "metric": config.searcher.metric,
        "smaller_is_better": smaller,
        "progress": float(experiment.get("progress") or 0.0),
        "driver": driver_alive(layout.lock),
        "trial_counts": trial_counts,
        "run_counts": run_counts,
        "runs_unsubmitted": unsubmitted,
        "job_hours": job_seconds / 3600.0,
        "slots_per_trial": config.slots_per_trial,
        "gpu_hours": job_seconds * config.slots_per_trial / 3600.0,
        "checkpoint_bytes": checkpoint_bytes,
        "best": best and {"trial_id": best["id"], "metric": best["best_metric"], "length": best["best_length"],
                          "hparams": json.loads(best["hparams"])},
        "top_trials": [_trial(t, top_runs.get(t["id"], []), nodes) for t in top],
        "active_runs": [_run(r, nodes) for r in active],
        "created_at": experiment["created_at"],
        "ended_at": experiment["ended_at"],
    }
    summary["pool"] = None if pooled is None else read_pool(layout.dir, pooled, run_seconds, now)
    if listed is not None:
        rows, runs = listed
        summary["trials"] = [_trial(t, runs.get(t["id"], []), nodes) for t in rows]
    return summary


def _listing(store: Store, trials: TrialsWanted) -> Optional[Tuple[List[TrialRow], Dict[int, List[RunRow]]]]:
    """(trial rows in id order, their runs by trial) for ``trials``, or None when no listing is wanted."""
    if trials is None:
        return None
    if trials == "all":
        return store.trials(), store.runs_by_trial()
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"trials must be None, 'all' or a positive int, not {trials!r}")
    rows = store.latest_trials(trials)
    return rows, store.runs_by_trial([t["id"] for t in rows])


def _trial(trial: TrialRow, runs: List[RunRow], nodes: Dict[str, Optional[List[str]]]) -> Dict[str, Any]:
    return {
        "id": trial["id"],
        "state": trial["state"],
        "hparams": json.loads(trial["hparams"]),
        "parent": trial["parent"],
        "length_done": trial["validated_length"] or 0,
        "length_trained": max(trial.get("trained_length") or 0, trial["validated_length"] or 0),
        "target_length": trial["target_length"],
        "latest_metric": trial["latest_metric"],
        "best_metric": trial["best_metric"],
        "best_length": trial["best_length"],
        "restarts": trial["restarts"] or 0,
        "preemptions": trial["preemptions"] or 0,
        "time_limits": trial.get("time_limits") or 0,
        "checkpoint_bytes": trial["checkpoint_bytes"] or 0,
        "message": trial["message"],
        "runs": [
            {"run_id": r["id"], "job_id": r["job_id"], "from_length": r["from_length"], "to_length": r["to_length"],
             "state": r["state"], "reason": r["reason"], "nodes": nodes.get(r["id"])}
            for r in runs
        ],
    }


def _run(run: RunRow, nodes: Dict[str, Optional[List[str]]]) -> Dict[str, Any]:
    return {"run_id": run["id"], "trial_id": run["trial_id"], "job_id": run["job_id"], "state": run["state"],
            "from_length": run["from_length"], "to_length": run["to_length"], "submitted_at": run["submitted_at"],
            "started_at": run["started_at"], "nodes": nodes.get(run["id"])}
