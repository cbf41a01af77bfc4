"""What a run's job is told: the run spec the driver writes for it (read by ``hpo_slurm.tasks.job``
and ``hpo_slurm.trial.TrialContext``)."""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Tuple

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.placement import Placement
from hpo_slurm.core.protocol import RunSpec
from hpo_slurm.core.rng import trial_seed_for


class RunSpecs:
    """Builds the specs of one experiment's runs. Its folders are resolved once (symbolic links
    followed: jobs run on other nodes, in other folders), at the first spec."""

    def __init__(self, config: ExperimentConfig, layout: ExperimentLayout):
        self.config = config
        self.layout = layout
        self._dirs: Optional[Tuple[str, str]] = None  # the experiment and context folders, resolved
        self._config_json: Optional[Dict[str, Any]] = None

    def build(self, trial: Mapping[str, Any], run: Mapping[str, Any], placement: Placement) -> RunSpec:
        """The spec of ``run`` of ``trial`` (store rows): where the experiment is, the trial's
        hyperparameters, how far to train, how, within what time, and on which ranks (``placement``)."""
        if self._dirs is None:
            self._dirs = (str(self.layout.dir.resolve()), str(self.layout.context.resolve()))
        config = self.config
        return RunSpec(
            experiment=self.layout.name, experiment_dir=self._dirs[0], context_dir=self._dirs[1],
            trial_id=trial["id"], run_id=run["id"], hparams=json.loads(trial["hparams"]),
            target_length=run["to_length"], from_length=run["from_length"],
            unit=config.searcher.unit, parent_checkpoint=trial["parent_checkpoint"],
            entrypoint=config.entrypoint,
            metric=config.searcher.metric, smaller_is_better=config.searcher.smaller_is_better,
            time_limit_s=run["time_minutes"] * 60 if run["time_minutes"] else None,
            signal_delay_s=config.slurm.signal_delay_s,
            data=config.data, records_per_epoch=config.records_per_epoch,
            nodes=placement.nodes, ranks_per_node=placement.ranks_per_node,
            trial_seed=trial_seed_for(config.seed, trial["id"]), experiment_config=self._experiment_config(),
        )

    def _experiment_config(self) -> Dict[str, Any]:
        """The config as read, JSON values only (a YAML date becomes its text), made once."""
        if self._config_json is None:
            self._config_json = json.loads(json.dumps(self.config.raw, default=str))
        return self._config_json
