"""Determined's Core API (``det.core``) on hpo-slurm.

    with det.core.init(distributed=...) as core_context:
        core_context.train.report_validation_metrics(steps_completed, {...})
        with core_context.checkpoint.store_path({"steps_completed": n}) as (path, storage_id): ...
        if core_context.preempt.should_preempt(): return

Each part's module says how it maps onto hpo-slurm: ``_train`` (metric lines), ``_checkpoint``
(published checkpoint folders, storage ids), ``_preempt`` (stops, and the searcher's rungs),
``_searcher`` (one operation per run), ``_context`` (``init``). Job side: no torch at import.
"""

from hpo_slurm.compat.core._checkpoint import CheckpointContext, merge_metadata
from hpo_slurm.compat.core._context import LOG_FORMAT, Context, ProfilerContext, init
from hpo_slurm.compat.core._enums import (DownloadMode, EarlyExitReason, PreemptMode, SearcherMode,
                                          TensorboardMode, Unit)
from hpo_slurm.compat.core._preempt import PreemptContext
from hpo_slurm.compat.core._searcher import SearcherContext, SearcherOperation
from hpo_slurm.compat.core._train import TrainContext
from hpo_slurm.compat.distributed import DistributedContext, DummyDistributedContext

__all__ = [
    "CheckpointContext", "Context", "DistributedContext", "DownloadMode", "DummyDistributedContext",
    "EarlyExitReason", "LOG_FORMAT", "PreemptContext", "PreemptMode", "ProfilerContext", "SearcherContext",
    "SearcherMode", "SearcherOperation", "TensorboardMode", "TrainContext", "Unit", "init", "merge_metadata",
]
