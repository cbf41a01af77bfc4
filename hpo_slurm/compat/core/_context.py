"""``det.core.init()`` and the ``Context`` it returns, over the hpo-slurm run this process belongs to."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any, Dict, Optional, Union

from hpo_slurm.compat.cluster_info import ClusterInfo
from hpo_slurm.compat.core._checkpoint import CheckpointContext
from hpo_slurm.compat.core._enums import EarlyExitReason, PreemptMode, TensorboardMode
from hpo_slurm.compat.core._preempt import PreemptContext
from hpo_slurm.compat.core._run import CoreRun
from hpo_slurm.compat.core._searcher import SearcherContext
from hpo_slurm.compat.core._train import TrainContext
from hpo_slurm.compat.distributed import DistributedContext, DummyDistributedContext
from hpo_slurm.compat.errors import Unsupported
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import SPEC_ENV, RunSpec
from hpo_slurm.trial import InvalidHP, TrialContext, forward_to_installed_handlers, install_stop_handlers

log = logging.getLogger("determined.core")

LOG_FORMAT = "%(levelname)s: [%(process)s] %(name)s: %(message)s"  # Determined's det.LOG_FORMAT


class ProfilerContext:
    """Determined's profiler: accepted, records nothing."""

    def on(self, sampling_interval: int = 1, samples_per_report: int = 10) -> None:
        """Nothing is sampled."""

    def off(self) -> None:
        """Nothing is sampled."""

    def _close(self) -> None:
        """Nothing to release."""


class Context:
    """Determined's ``core.Context``: ``.train``, ``.checkpoint``, ``.preempt``, ``.searcher``,
    ``.distributed``, ``.info`` (the ``ClusterInfo``), ``.profiler``. Use it as a context manager:
    an ``InvalidHP`` raised in the block ends the run as invalid hyperparameters (exit status 0)."""

    def __init__(self, run: CoreRun, info: ClusterInfo, preempt_mode: PreemptMode) -> None:
        self._run = run
        self.info = info
        self.distributed = run.dist
        self.train = TrainContext(run)
        self.checkpoint = CheckpointContext(run)
        self.preempt = PreemptContext(run, preempt_mode)
        self.searcher = SearcherContext(run)
        self.profiler = ProfilerContext()

    def start(self) -> None:
        """Nothing to start: reports are written as they are made."""

    def close(self, exc_type: Optional[type] = None, exc_val: Optional[BaseException] = None,
              exc_tb: Optional[types.TracebackType] = None) -> None:
        """Leaving without an exception, the ranks of a trial of several leave together (an allgather):
        a rank whose peers are gone while it still talks to them may abort in torch's gloo."""
        self.preempt.close()
        if exc_type is None and self.distributed.size > 1:
            self.distributed.allgather(None)
        self.distributed.close()

    def __enter__(self) -> "Context":
        self.start()
        return self

    def __exit__(self, exc_type: Optional[type], exc_val: Optional[BaseException],
                 exc_tb: Optional[types.TracebackType]) -> None:
        self.close(exc_type, exc_val, exc_tb)
        if isinstance(exc_val, InvalidHP):
            self.train.report_early_exit(EarlyExitReason.INVALID_HP)
            log.info("InvalidHP detected, converting InvalidHP to exit(0)")
            sys.exit(0)


def init(*, distributed: Optional[DistributedContext] = None,
         checkpoint_storage: Optional[Union[str, Dict[str, Any]]] = None,
         preempt_mode: PreemptMode = PreemptMode.WorkersAskChief,
         tensorboard_mode: TensorboardMode = TensorboardMode.AUTO) -> Context:
    """The ``Context`` of the hpo-slurm run this process belongs to.

    ``distributed`` is required when the trial runs as several ranks (``ValueError`` without it, as in
    Determined), and must match the rank hpo-slurm gave this process; ``preempt_mode`` WorkersAskMaster
    is ``Unsupported`` on several ranks. ``checkpoint_storage`` is
    ignored (logged): checkpoints are always the experiment folder's. ``tensorboard_mode`` is accepted.
    Outside an hpo-slurm run (no ``$HPO_SLURM_SPEC``) this raises ``RuntimeError``: hpo-slurm's
    ``determined`` is only put on a trial's path. With several ranks, torch.distributed's process group
    is destroyed at the process's exit if the script left it initialized. Called from the main thread,
    it routes the stop signals (preemption, time limit) to ``preempt.should_preempt()``; handlers
    already installed in this process still run after it."""
    spec_path = os.environ.get(SPEC_ENV)
    if not spec_path:
        raise RuntimeError(f"det.core.init() outside an hpo-slurm run (${SPEC_ENV} is not set): start the "
                           "script with `hpo-slurm launch`")
    spec = RunSpec.read(Path(spec_path))
    trial = TrialContext(spec)
    dist = _check_distributed(distributed, trial)
    if PreemptMode(preempt_mode) is PreemptMode.WorkersAskMaster and dist.size > 1:
        # each rank would answer alone, and only the chief sees the run's target reached
        raise Unsupported("det.core.init(preempt_mode=WorkersAskMaster) on several ranks",
                          "keep the default, WorkersAskChief (every rank gets the chief's answer), or ChiefOnly")
    if checkpoint_storage is not None:
        log.warning("det.core.init(checkpoint_storage=...) is ignored on hpo-slurm: checkpoints are published "
                    "in the experiment folder")
    TensorboardMode(tensorboard_mode)
    if threading.current_thread() is threading.main_thread():
        _route_stop_signals(trial)
    if dist.size > 1:
        atexit.register(_leave_process_group)
    run = CoreRun(trial=trial, spec=spec, layout=ExperimentLayout(Path(spec.experiment_dir)), dist=dist)
    return Context(run, ClusterInfo(spec), PreemptMode(preempt_mode))


def _check_distributed(distributed: Optional[DistributedContext], trial: TrialContext) -> DistributedContext:
    """``distributed``, checked against the ranks hpo-slurm launched (a lone process may run its own)."""
    if trial.world_size > 1:
        if distributed is None:
            raise ValueError("you must provide a valid DistributedContext for a multi-slot task: "
                             "det.core.init(distributed=det.core.DistributedContext.from_torch_distributed())")
        if distributed.size != trial.world_size or distributed.rank != trial.rank:
            raise ValueError(f"the DistributedContext is rank {distributed.rank} of {distributed.size}, but hpo-slurm "
                             f"started this process as rank {trial.rank} of {trial.world_size}")
    return distributed if distributed is not None else DummyDistributedContext()


def _leave_process_group() -> None:
    """At exit, destroy torch.distributed's process group if the script left it initialized: gloo's
    threads that outlive it race the interpreter's shutdown and may abort the process (status 134)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _route_stop_signals(trial: TrialContext) -> None:
    """The stop signals mark ``trial`` as asked to stop, then reach the handlers installed before."""
    install_stop_handlers(trial.request_stop, trial.run_spec, forward_to_installed_handlers())
