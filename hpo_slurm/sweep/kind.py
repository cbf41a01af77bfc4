"""What makes an experiment a sweep: a search that needs no decisions (``SWEEP_SEARCHERS``), run by
the ``array`` executor (``EXECUTOR``, recorded in the experiment's database)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout

if TYPE_CHECKING:  # pragma: no cover  (the config module and YAML are imported by the functions that read a config)
    from hpo_slurm.config.schema import ExperimentConfig

SWEEP_SEARCHERS = ("single", "grid", "random")
EXECUTOR = "array"


def check_sweepable(config: ExperimentConfig) -> None:
    """A UserError naming ``launch`` when the config's searcher adapts to results, or asks for a pool of
    workers (a sweep's array tasks are its workers: there is no driver to hand them runs)."""
    if config.slurm.pool is not None:
        raise UserError(f"{config.source}: slurm.pool: a sweep runs each trial as a task of a job array, with no "
                        f"driver to hand runs to a pool's workers; remove slurm.pool, or use "
                        f"`hpo-slurm launch {config.source}`")
    if config.searcher.name not in SWEEP_SEARCHERS:
        raise UserError(
            f"{config.source}: searcher.name: a sweep runs searches that need no decisions "
            f"({', '.join(SWEEP_SEARCHERS)}); {config.searcher.name} adapts to results, so it needs the "
            f"driver: use `hpo-slurm launch {config.source}`")


def is_sweep(layout: ExperimentLayout) -> bool:
    """Whether the experiment runs as job arrays with no driver; a UserError when its database
    cannot be read (locked for longer than the busy timeout, damaged)."""
    from hpo_slurm.experiment.store import Store

    with Store.reading(layout.database) as store:
        return store.experiment().get("executor") == EXECUTOR
