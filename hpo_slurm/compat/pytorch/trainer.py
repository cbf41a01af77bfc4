"""Determined's Trainer API: ``det.pytorch.init()`` and ``det.pytorch.Trainer(trial, context).fit(...)``.

On hpo-slurm (``$HPO_SLURM_SPEC`` set, ``det.get_cluster_info()`` not None), ``init()``:

- seeds Python's ``random``, NumPy's and torch's generators with the trial seed (``RunSpec.trial_seed``),
  the same on every rank, before the trial is built, as Determined does;
- with several ranks, joins the trial's process group if the script has not (nccl on GPUs, gloo on the
  CPU: ``hpo_slurm.torch.init_distributed``) and leaves it on exit;
- gives the context the run's hyperparameters and experiment config when ``hparams``/``exp_conf`` are
  not passed, and ``optimizations.aggregation_frequency`` when ``aggregation_frequency`` is not.

``fit()`` then trains to the run's target length (its rung) when it has one, whatever ``max_length``
says (a ``max_length`` that disagrees with the searcher's length is warned about), validating and
checkpointing there; a later run resumes from that checkpoint when ``latest_checkpoint`` is
``det.get_cluster_info().latest_checkpoint``. A run without a target (no ``searcher.max_length``)
trains to ``max_length``. Lengths are reported in the search's unit (``loop``'s docstring).

Off hpo-slurm, ``init(hparams=..., exp_conf=...)`` and ``fit(max_length=...)`` train in the process
(several with ``torchrun``): metrics are logged, checkpoints written to ``./checkpoints/``, nothing is
seeded, and ``latest_checkpoint`` may name a folder there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from hpo_slurm.compat.distributed import DistributedContext, DummyDistributedContext
from hpo_slurm.compat.pytorch.context import PyTorchTrialContext
from hpo_slurm.compat.pytorch.lengths import Batch, Epoch, Record, TrainUnit
from hpo_slurm.compat.pytorch.loop import TrainingLoop
from hpo_slurm.compat.pytorch.session import HpoSession, LocalSession, Session
from hpo_slurm.compat.pytorch.trial import PyTorchTrial
from hpo_slurm.core.protocol import SPEC_ENV
from hpo_slurm.torch import close_distributed, init_distributed

log = logging.getLogger("determined.pytorch")


def on_hpo_slurm() -> bool:
    """Whether this process is a run of an hpo-slurm trial (the rule of ``det.get_cluster_info()``)."""
    return bool(os.environ.get(SPEC_ENV))


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (every device's) from ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.manual_seed(seed)


@contextlib.contextmanager
def init(*, hparams: Optional[Dict[str, Any]] = None, exp_conf: Optional[Dict[str, Any]] = None,
         distributed: Optional[DistributedContext] = None, aggregation_frequency: Optional[int] = None,
         enable_tensorboard_logging: bool = True) -> Iterator[PyTorchTrialContext]:
    """The ``PyTorchTrialContext`` for the trial of this process (see the module docstring). Build the
    trial and call ``Trainer(...).fit`` inside the block."""
    joined = False
    if on_hpo_slurm():
        session: Session = HpoSession.start()
        if session.world_size > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            init_distributed(session)
            joined = True
        dist = _distributed(distributed, session.world_size)
        if (dist.rank, dist.size) != (session.rank, session.world_size):
            raise ValueError(f"the DistributedContext is rank {dist.rank} of {dist.size}, but hpo-slurm started this "
                             f"process as rank {session.rank} of {session.world_size}")
        hparams = hparams if hparams is not None else session.hparams
        exp_conf = exp_conf if exp_conf is not None else session.experiment_config
        assert session.trial_seed is not None
        seed_everything(session.trial_seed)
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if distributed is None and world > 1 and not torch.distributed.is_initialized():
            init_distributed(None)
            joined = True
        dist = _distributed(distributed, world)
        session = LocalSession(dist, hparams, exp_conf)
    if aggregation_frequency is None:
        optimizations = (exp_conf or {}).get("optimizations") or {}
        aggregation_frequency = int(optimizations.get("aggregation_frequency") or 1)
    context = PyTorchTrialContext(session, dist, hparams, exp_conf, session.trial_seed, aggregation_frequency,
                                  enable_tensorboard_logging)
    try:
        yield context
    finally:
        if context._tensorboard_writer is not None:
            context._tensorboard_writer.close()
        if joined:
            close_distributed()


def _distributed(given: Optional[DistributedContext], world_size: int) -> DistributedContext:
    if given is not None:
        return given
    return DistributedContext.from_torch_distributed() if world_size > 1 else DummyDistributedContext()


class Trainer:
    """Trains a ``PyTorchTrial`` built with ``context`` (from ``init()``)."""

    def __init__(self, trial: PyTorchTrial, context: PyTorchTrialContext):
        self._trial = trial
        self._context = context

    def configure_profiler(self, *args: Any, **kwargs: Any) -> None:
        """Replaced by ``fit(profiling_enabled=...)`` in Determined; does nothing."""
        log.error("`trainer.configure_profiler` has been replaced with `fit(..., profiling_enabled=True)`")

    def fit(self, checkpoint_period: Optional[TrainUnit] = None, validation_period: Optional[TrainUnit] = None,
            max_length: Optional[TrainUnit] = None, reporting_period: TrainUnit = Batch(100),  # noqa: B008
            checkpoint_policy: str = "best", latest_checkpoint: Optional[str] = None,
            step_zero_validation: bool = False, test_mode: bool = False, profiling_enabled: bool = False) -> None:
        """Train (module docstring). ``checkpoint_policy``: ``"all"`` checkpoints after every validation;
        ``"best"`` and ``"none"`` add no checkpoint to the periodic ones, the one at the length and the one
        at a stop (a trial cannot see the other trials' validations to tell the best)."""
        session = self._context._session
        if max_length is not None and (not isinstance(max_length, (Batch, Epoch, Record))
                                       or not isinstance(max_length.value, int)):
            raise TypeError("max_length must either be a det.pytorch.Batch(int) or det.pytorch.Epoch(int) type")
        if profiling_enabled:
            log.warning("fit(profiling_enabled=True): hpo-slurm has no profiler; ignored")
        target = 0
        if session.on_cluster:
            if test_mode:
                raise ValueError("test_mode is only supported in local training mode.")
            if latest_checkpoint is None and session.latest_checkpoint() is not None:
                log.warning("latest_checkpoint has not been configured: this run starts afresh instead of resuming. "
                            "Did you mean to set `fit(latest_checkpoint=info.latest_checkpoint)`?")
            target = session.target_length
            if target == 0 and max_length is None:
                raise ValueError("`fit(max_length=X)` must be set with your desired training length (the search has "
                                 "no searcher.max_length)")
            if target > 0 and max_length is not None:
                _check_searcher_length(session, max_length)
        elif max_length is None:
            raise ValueError("max_length must be defined in local training mode.")
        TrainingLoop(self._trial, self._context, session, max_length=max_length, target_length=target,
                     latest_checkpoint=latest_checkpoint, validation_period=validation_period,
                     checkpoint_period=checkpoint_period, reporting_period=reporting_period,
                     checkpoint_policy=checkpoint_policy, step_zero_validation=step_zero_validation,
                     test_mode=test_mode).run()


def _check_searcher_length(session: Session, max_length: TrainUnit) -> None:
    """Warn when ``max_length`` is not the searcher's length (its unit and amount, from the config)."""
    searcher = (session.experiment_config or {}).get("searcher") or {}
    configured = searcher.get("max_length")
    if isinstance(configured, dict) and len(configured) == 1:
        (unit, amount), = configured.items()
    elif searcher.get("time_metric") is not None:
        unit, amount = searcher.get("time_metric"), searcher.get("max_time")
    else:
        return
    kinds = {"batches": Batch, "epochs": Epoch, "records": Record}
    if kinds.get(unit) is not type(max_length) or amount != max_length.value:
        log.warning("max_length passed to fit() (%r) is not the searcher's length (%s %s): on hpo-slurm each run "
                    "trains to its own target length, in %s", max_length, amount, unit, session.unit)
