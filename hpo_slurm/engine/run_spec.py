"""What a run's job is told: the run spec the driver writes for it (read by ``hpo_slurm.tasks.job``
and ``hpo_slurm.trial.TrialContext``)."""

from __future__ import annotations

import json
from typing import Any, Mapping

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.protocol import RunSpec


def build_spec(config: ExperimentConfig, experiment: str, experiment_dir: str, context_dir: str,
               trial: Mapping[str, Any], run: Mapping[str, Any]) -> RunSpec:
    """The spec of ``run`` of ``trial``: where the experiment is (resolved folders: jobs run elsewhere),
    the trial's hyperparameters, how far to train and how."""
    return RunSpec(
        experiment=experiment, experiment_dir=experiment_dir, context_dir=context_dir,
        trial_id=trial["id"], run_id=run["id"], hparams=json.loads(trial["hparams"]),
        target_length=run["to_length"], from_length=run["from_length"],
        unit=config.searcher.unit, parent_checkpoint=trial["parent_checkpoint"],
        entrypoint=config.entrypoint,
        metric=config.searcher.metric, smaller_is_better=config.searcher.smaller_is_better,
        time_limit_s=run["time_minutes"] * 60 if run["time_minutes"] else None,
        signal_delay_s=config.slurm.signal_delay_s,
        data=config.data, records_per_epoch=config.records_per_epoch,
    )
