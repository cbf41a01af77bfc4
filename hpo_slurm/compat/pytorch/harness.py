"""Determined's legacy harness: ``entrypoint: model_def:MyTrial`` (or ``python3 -m
determined.launch.torch_distributed --trial model_def:MyTrial``) trains the trial class itself.

``run_trial_class`` builds the context as ``det.pytorch.init()`` does on hpo-slurm (seeded with the
trial seed, the process group joined, the run's hyperparameters and experiment config), instantiates
the class with it and trains to the run's target length (which the search must have:
``searcher.max_length`` or ``max_time``), reading from the experiment config what Determined's harness
reads:

- ``min_validation_period`` and ``min_checkpoint_period`` (``{batches|records|epochs: N}``): validate
  and checkpoint every N, as well as at the target (and checkpoint at a stop);
- ``scheduling_unit`` (default 100): a training report every that many batches;
- ``perform_initial_validation``: validate before the first batch of a fresh trial;
- ``checkpoint_policy``: ``all`` also checkpoints after every validation (``best``, the default, and
  ``none`` do not: see ``Trainer.fit``);
- ``optimizations.aggregation_frequency``; ``records_per_epoch`` (the epoch length: ``loop``).

It resumes from the trial's latest checkpoint (or its PBT parent's).
"""

from __future__ import annotations

from typing import Any, Dict, Type

from hpo_slurm.compat.pytorch.lengths import Batch, from_config
from hpo_slurm.compat.pytorch.loop import TrainingLoop
from hpo_slurm.compat.pytorch.trainer import init, on_hpo_slurm
from hpo_slurm.compat.pytorch.trial import PyTorchTrial
from hpo_slurm.core.protocol import SPEC_ENV


def run_trial_class(trial_class: Type[PyTorchTrial]) -> None:
    """Train ``trial_class`` in this run (module docstring). ``RuntimeError`` outside an hpo-slurm run,
    ``ValueError`` when the run has no target length or the config's periods are not lengths."""
    if not (isinstance(trial_class, type) and issubclass(trial_class, PyTorchTrial)):
        raise TypeError(f"{trial_class!r} is not a subclass of determined.pytorch.PyTorchTrial")
    if not on_hpo_slurm():
        raise RuntimeError(f"run_trial_class outside an hpo-slurm run (${SPEC_ENV} is not set): start the trial "
                           "with `hpo-slurm launch`")
    with init() as context:
        session = context._session
        if session.target_length <= 0:
            raise ValueError(f"entrypoint {trial_class.__module__}:{trial_class.__qualname__} trains to the searcher's "
                             "length: set searcher.max_length (or time_metric and max_time)")
        config: Dict[str, Any] = session.experiment_config or {}
        trial = trial_class(context)  # type: ignore[call-arg]
        TrainingLoop(
            trial, context, session, max_length=None, target_length=session.target_length,
            latest_checkpoint=session.latest_checkpoint(),
            validation_period=from_config(config.get("min_validation_period"), "min_validation_period"),
            checkpoint_period=from_config(config.get("min_checkpoint_period"), "min_checkpoint_period"),
            reporting_period=Batch(int(config.get("scheduling_unit") or 100)),
            checkpoint_policy=str(config.get("checkpoint_policy") or "best"),
            step_zero_validation=bool(config.get("perform_initial_validation", False)),
        ).run()
