"""Where a trial's ranks go on a Slurm cluster: ``slurm.gpus_per_node`` when the config sets it (it
must not exceed what the partition's nodes have), else the GPUs the partition's nodes have, learned
from ``sinfo`` (asked only for trials of more than one GPU)."""

from __future__ import annotations

from typing import Optional

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.placement import Placement
from hpo_slurm.executors.base import SchedulerError, placement_or_error
from hpo_slurm.executors.slurm.commands import partition_gpus_per_node


def slurm_placement(config: ExperimentConfig) -> Placement:
    """The placement of ``config``'s trials on its partition. ``UserError`` naming the config's key
    when no layout of the partition's nodes holds a trial; ``SchedulerError`` when sinfo cannot answer
    and the config sets no ``slurm.gpus_per_node`` (with it, the configured value is used as it is:
    launch checked it against the partition)."""
    configured = config.slurm.gpus_per_node
    if config.slots_per_trial <= 1:
        return placement_or_error(config, configured)
    try:
        learned = partition_gpus_per_node(config.slurm.partition)
    except SchedulerError:
        if configured is None:
            raise
        return placement_or_error(config, configured)  # checked against sinfo when the search was launched
    partition = f"partition {config.slurm.partition}" if config.slurm.partition else "the default partition"
    if configured is not None and learned is not None and configured > learned:
        raise UserError(f"{config.source}: slurm.gpus_per_node: {configured}, but the nodes of {partition} "
                        f"have at most {learned} GPUs")
    return placement_or_error(config, configured if configured is not None else learned)


class PartitionPlacement:
    """For the executors that submit to a partition: ``placement(config)`` is ``slurm_placement``,
    asked of the cluster the first time only."""

    _placement: Optional[Placement] = None

    def placement(self, config: ExperimentConfig) -> Placement:
        if self._placement is None:
            self._placement = slurm_placement(config)
        return self._placement
