"""What the dashboard's trial and comparison pages show: one trial's row, runs, metrics lines,
checkpoints and the tail of its logs; 2 to 5 trials side by side.

Files are only ever found from what the database says: a run's log files are those of a run the
database lists for that trial, looked up in that run's folder, and every path read is checked to lie
inside the experiment's folder after symbolic links are resolved. No name from a request becomes a
path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

from hpo_slurm.core.layout import CHECKPOINT_META
from hpo_slurm.dashboard.experiment_reads import BadRequest, Experiment, trial_row
from hpo_slurm.experiment.rows import RunRow
from hpo_slurm.experiment.store import Store
from hpo_slurm.reporting.logs import run_log_files

METRIC_LINES = 500  # metrics lines of a trial sent to its page: the latest ones
LOG_TAIL_BYTES = 64 * 1024  # of each log file, the last this many bytes
CHECKPOINT_FILES = 10_000  # files counted in one checkpoint folder's size, at most
COMPARED = (2, 5)  # how many trials a comparison holds


class NotFound(LookupError):
    """What a request names does not exist (an experiment, a trial, a run of that trial)."""


def trial_page(experiment: Experiment, trial_id: int) -> Dict[str, Any]:
    """``trial`` (as a row of the trial table), its ``runs`` (every column), its latest METRIC_LINES
    ``metrics`` lines of each kind (validation, then training) with ``metric_counts`` (how many
    lines of each kind it reported), its ``checkpoints`` (name, length, bytes, published) and the experiment's
    ``metric``; NotFound when there is no such trial."""
    with Store.reading(experiment.layout.database) as store, store.snapshot_read():
        row = store.trial(trial_id)
        if row is None:
            raise NotFound(f"no trial {trial_id} in {experiment.layout.name}")
        runs = store.runs(trial_id)
        lines = [line for kind in ("validation", "training")
                 for line in store.trial_metric_rows(trial_id, METRIC_LINES, kind)]
        counts = {kind: store.trial_metric_count(trial_id, kind) for kind in ("validation", "training")}
    return {"trial": trial_row(row), "runs": runs, "metrics": lines, "metric_counts": counts,
            "metric": experiment.metric,
            "smaller_is_better": experiment.smaller_is_better, "unit": experiment.config.searcher.unit,
            "checkpoints": _checkpoints(experiment, trial_id),
            "parent_checkpoint": row["parent_checkpoint"]}


def _inside(experiment: Experiment, path: Path) -> bool:
    try:
        path.resolve().relative_to(experiment.layout.dir.resolve())
    except (ValueError, OSError):
        return False
    return True


def _checkpoints(experiment: Experiment, trial_id: int) -> List[Dict[str, Any]]:
    folder = experiment.layout.checkpoints_dir(trial_id)
    if not folder.is_dir() or not _inside(experiment, folder):
        return []
    found = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:  # the trial's folder went while we looked
        return []
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False) or not entry.name.startswith("length-"):
                continue
            path = Path(entry.path)
            length_text = entry.name[len("length-"):]
            found.append({"name": entry.name, "length": int(length_text) if length_text.isdigit() else None,
                          "published": (path / CHECKPOINT_META).is_file(), "bytes": _folder_bytes(path),
                          "modified": entry.stat(follow_symlinks=False).st_mtime})
        except FileNotFoundError:  # the checkpoint collector removed it while it was listed
            continue
    return found


def _folder_bytes(path: Path) -> int:
    total, seen = 0, 0
    for directory, _, files in os.walk(path):
        for name in files:
            seen += 1
            if seen > CHECKPOINT_FILES:
                return total
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue  # removed while counted: the checkpoint collector got there first
    return total


def trial_logs(experiment: Experiment, trial_id: int, run_id: str) -> Dict[str, Any]:
    """The last LOG_TAIL_BYTES of each log file of run ``run_id`` of trial ``trial_id``: ``files`` of
    name, bytes (whole size) and text (decoded, bad bytes replaced), or ``error`` for a file that could
    not be read. Only files inside the experiment folder once links are resolved. NotFound when the
    trial has no such run."""
    with Store.reading(experiment.layout.database) as store:
        runs: List[RunRow] = store.runs(trial_id)
    if run_id not in {run["id"] for run in runs}:
        raise NotFound(f"trial {trial_id} of {experiment.layout.name} has no run {run_id!r}")
    files = []
    for path in run_log_files(experiment.layout, run_id):
        if not _inside(experiment, path) or not path.is_file():
            continue
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(max(0, size - LOG_TAIL_BYTES))
                data = handle.read(LOG_TAIL_BYTES)
        except OSError as exc:  # gone or unreadable: said in its place, the other files still shown
            files.append({"name": path.name, "bytes": 0, "truncated": False, "text": "",
                          "error": exc.strerror or str(exc)})
            continue
        files.append({"name": path.name, "bytes": size, "truncated": size > LOG_TAIL_BYTES,
                      "text": data.decode("utf-8", errors="replace")})
    return {"run_id": run_id, "files": files}


def compare(experiment: Experiment, trial_ids: Sequence[int]) -> Dict[str, Any]:
    """2 to 5 trials side by side: each as a row of the trial table with its ``runs`` and its
    validation ``curve`` of the searcher's metric; BadRequest for another count, NotFound when one
    does not exist."""
    low, high = COMPARED
    if not low <= len(trial_ids) <= high:
        raise BadRequest(f"ids: compare {low} to {high} trials, got {len(trial_ids)}")
    with Store.reading(experiment.layout.database) as store, store.snapshot_read():
        rows = store.trials_by_id(list(trial_ids))
        missing = sorted(set(trial_ids) - {row["id"] for row in rows})
        if missing:
            raise NotFound(f"no trial {missing[0]} in {experiment.layout.name}")
        runs = store.runs_by_trial(list(trial_ids))
        curves = store.validation_curves(list(trial_ids), experiment.metric)
    by_id = {row["id"]: row for row in rows}
    return {"metric": experiment.metric, "smaller_is_better": experiment.smaller_is_better,
            "unit": experiment.config.searcher.unit,
            "trials": [{**trial_row(by_id[i]), "runs": runs.get(i, []), "curve": curves.get(i, [])}
                       for i in trial_ids]}

