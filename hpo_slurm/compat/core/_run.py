"""What every part of one ``core.Context`` shares: the run, this process's place, what it reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Set

from hpo_slurm.compat.distributed import DistributedContext
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import RunSpec
from hpo_slurm.trial import TrialContext


@dataclass
class CoreRun:
    """One ``core.Context``'s view of its run. ``validated`` maps each length this process reported a
    validation at (in this run) to the metric names it reported there."""

    trial: TrialContext
    spec: RunSpec
    layout: ExperimentLayout
    dist: DistributedContext
    validated: Dict[int, Set[str]] = field(default_factory=dict)

    @property
    def is_chief(self) -> bool:
        """Rank 0 of the trial: its reports are the ones recorded."""
        return self.dist.rank == 0 and self.trial.is_chief

    @property
    def target_length(self) -> int:
        """The length this run must reach (its rung); 0: the trial's own code decides."""
        return self.spec.target_length

    @property
    def searcher_metric(self) -> str:
        """The name of the metric the search compares (``searcher.metric``)."""
        if self.spec.metric:
            return self.spec.metric
        searcher = self.spec.experiment_config.get("searcher")
        name = searcher.get("metric") if isinstance(searcher, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError("the experiment config names no searcher.metric")
        return name

    def reached_target(self) -> bool:
        """Whether this process reported a validation at or past a nonzero target length in this run:
        the search has what it asked of the run (the driver counts a validation at or past the target)."""
        target = self.target_length
        return target > 0 and any(length >= target for length in self.validated)
