"""Checkpoint garbage collection, following Determined's ``checkpoint_storage`` settings.

Kept for each trial: its ``save_trial_latest`` newest checkpoints (at least one while the trial can
still run), its ``save_trial_best`` best by validation metric, the best checkpoint of the experiment's
``save_experiment_best`` best trials, and any checkpoint a PBT child still has to start from.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Union

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.layout import CHECKPOINT_META, ExperimentLayout, length_in_name
from hpo_slurm.core.protocol import checkpoint_length, latest_checkpoint_in
from hpo_slurm.core.types import TrialState

log = logging.getLogger(__name__)


def latest_checkpoint_path(layout: ExperimentLayout, trial_id: int) -> Optional[Path]:
    return latest_checkpoint_in(layout.checkpoints_dir(trial_id))


def missing_start(trial: Mapping[str, Any], run: Mapping[str, Any], latest: Optional[str]) -> Optional[str]:
    """A one-line warning when ``run`` of ``trial`` (store rows) cannot start where it should: it goes
    on from ``from_length`` > 0, but the trial's newest checkpoint (``latest``, a ``length-N`` folder,
    or None) is missing or shorter, as when a user deleted the checkpoint folder. The trial then trains
    again from that checkpoint, or from the start; its result is the same for a trial that resumes
    exactly. None when the checkpoint is there, and for a PBT child that has none of its own yet (it
    starts from its parent's)."""
    start = run["from_length"] or 0
    if start <= 0 or (latest is None and trial["parent_checkpoint"]):
        return None
    have = 0 if latest is None else length_in_name(latest)
    if have is None:
        return None  # not a folder this driver names: nothing to say about it
    if have >= start:
        return None
    again = f"its checkpoint at length {have}" if latest is not None else "the start"
    return f"trial {trial['id']}: its checkpoint at length {start} is gone; run {run['id']} trains again from {again}"


def published_checkpoints(layout: ExperimentLayout, trial_id: int) -> Dict[int, Path]:
    """Length -> folder for every published checkpoint of the trial."""
    directory = layout.checkpoints_dir(trial_id)
    if not directory.is_dir():
        return {}
    found = {}
    for entry in os.scandir(directory):
        path = Path(entry.path)
        if entry.is_dir() and entry.name.startswith("length-") and (path / CHECKPOINT_META).exists():
            try:
                found[checkpoint_length(path)] = path
            except (OSError, ValueError, KeyError):
                continue
    return found


def collect_garbage(
    layout: ExperimentLayout,
    config: ExperimentConfig,
    trials: Dict[int, Dict[str, Any]],
    trial_id: int,
    validation_metrics: Union[None, Dict[int, float], Callable[[], Dict[int, float]]] = None,
    referenced: Optional[Set[str]] = None,
) -> int:
    """Delete the trial's checkpoints the policy does not keep; returns the bytes still used.
    ``validation_metrics`` (length -> metric, or a function giving it, called only if there are
    checkpoints) ranks them.
    ``referenced`` are checkpoint paths that PBT children still have to start from."""
    checkpoints = published_checkpoints(layout, trial_id)
    if not checkpoints:
        return 0
    policy = config.checkpoint_storage
    trial = trials[trial_id]
    lengths = sorted(checkpoints)
    keep = set(lengths[-policy.save_trial_latest:] if policy.save_trial_latest else [])
    if not TrialState(trial["state"]).terminal:
        keep.add(lengths[-1])
    metrics = (validation_metrics() if callable(validation_metrics) else validation_metrics) or {}
    if trial["best_length"] is not None:
        metrics.setdefault(trial["best_length"], trial["best_metric"])
    ranked = _rank_lengths(lengths, metrics, config.searcher.smaller_is_better)
    keep.update(ranked[: policy.save_trial_best])
    if policy.save_experiment_best and ranked and trial_id in _best_trials(trials, config, policy.save_experiment_best):
        keep.add(ranked[0])
    used = 0
    for length, path in checkpoints.items():
        if length in keep or str(path) in (referenced or ()):
            used += _folder_bytes(path)
        else:
            try:
                shutil.rmtree(path)
            except FileNotFoundError:
                pass  # already gone
            except OSError as exc:  # kept for the next collection; what is left still counts
                log.warning("trial %s: cannot delete checkpoint %s (%s)", trial_id, path, exc)
                used += _folder_bytes(path)
    return used


def _rank_lengths(lengths: List[int], metrics: Dict[int, float], smaller_is_better: bool) -> List[int]:
    """Checkpoint lengths that have a finite validation metric, best first."""
    scored = [(metrics[n], n) for n in lengths if n in metrics and metrics[n] is not None and math.isfinite(metrics[n])]
    scored.sort(key=lambda item: item[0], reverse=not smaller_is_better)
    return [length for _, length in scored]


def _best_trials(trials: Dict[int, Dict[str, Any]], config: ExperimentConfig, count: int) -> List[int]:
    scored = [(t["best_metric"], t["id"]) for t in trials.values() if t["best_metric"] is not None]
    scored.sort(key=lambda item: item[0], reverse=not config.searcher.smaller_is_better)
    return [trial_id for _, trial_id in scored[:count]]


def _folder_bytes(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(directory, name))
            except OSError:
                continue
    return total
