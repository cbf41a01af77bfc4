"""The trials a sweep creates, and the runs (``JobRequest``) their first attempts become."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from hpo_slurm.core.layout import run_name
from hpo_slurm.core.placement import Placement
from hpo_slurm.core.types import Action, Create, Train
from hpo_slurm.executors.base import JobRequest
from hpo_slurm.searchers.drain import drain

if TYPE_CHECKING:  # pragma: no cover  (the config module and YAML are imported by the functions that read a config)
    from hpo_slurm.config.schema import ExperimentConfig

DRY_RUN_PREFIX = "hpo.xxxxxxxx."  # the job-name prefix of scripts rendered before the experiment exists


def planned_trials(config: ExperimentConfig) -> List[Tuple[int, Dict[str, Any], int]]:
    """(trial id, hyperparameters, length) of every trial the sweep creates, from the real searcher;
    the length is NO_TARGET (0) when the search has no max_length: each trial trains until its code stops."""
    from hpo_slurm.searchers import make_searcher

    searcher = make_searcher(config.uncapped())
    trials: Dict[int, Dict[str, Any]] = {}
    lengths: Dict[int, int] = {}

    def handle(action: Action) -> Optional[List[Action]]:
        if isinstance(action, Create):
            trials[action.trial_id] = action.hparams
            return searcher.on_created(action.trial_id)
        if isinstance(action, Train):
            lengths[action.trial_id] = action.length
        return None

    drain(searcher.initial(), handle)
    return [(trial_id, hparams, lengths.get(trial_id, 0)) for trial_id, hparams in trials.items()]


def planned_requests(config: ExperimentConfig, directory: Path, trials: List[Tuple[int, Dict[str, Any], int]],
                     placement: Placement) -> List[JobRequest]:
    """The first run of each trial as the experiment in ``directory`` would submit it, named with
    ``DRY_RUN_PREFIX``: what a dry run shows and what the pre-submission check renders."""
    return [
        JobRequest(run_id=run_name(trial_id, 1), job_name=DRY_RUN_PREFIX + run_name(trial_id, 1),
                   run_dir=directory / "runs" / run_name(trial_id, 1),
                   spec_path=directory / "runs" / run_name(trial_id, 1) / "spec.json",
                   gpus=config.slots_per_trial, time_minutes=config.slurm.time_minutes, placement=placement)
        for trial_id, _, _ in trials
    ]
