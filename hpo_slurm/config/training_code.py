"""Config keys that only a Determined PyTorchTrial reads (``hpo_slurm.compat.pytorch.harness``), checked
at launch so a typo fails there and not in every trial: ``checkpoint_policy`` and ``optimizations``."""

from __future__ import annotations

from typing import Any, Dict

from hpo_slurm.config.checks import Checker

CHECKPOINT_POLICIES = ("best", "all", "none")
OPTIMIZATION_KEYS = ("aggregation_frequency",)
IGNORED_OPTIMIZATION_KEYS = {key: None for key in (
    "average_aggregated_gradients", "average_training_metrics", "gradient_compression", "mixed_precision",
    "tensor_fusion_threshold", "tensor_fusion_cycle_time", "auto_tune_tensor_fusion", "grad_updates_size_file")}


def check_training_code_keys(ck: Checker, top: Dict[str, Any]) -> None:
    """``checkpoint_policy``: best, all or none. ``optimizations``: a mapping whose
    ``aggregation_frequency`` (batches per optimizer step) is a positive integer; Determined's other
    optimization keys are ignored with a warning. Errors go through ``ck`` (one line naming the key)."""
    if top.get("checkpoint_policy") is not None:
        ck.choice(top["checkpoint_policy"], "checkpoint_policy", CHECKPOINT_POLICIES, "checkpoint policy")
    optimizations = ck.mapping(top.get("optimizations"), "optimizations")
    ck.check_keys(optimizations, "optimizations", OPTIMIZATION_KEYS, IGNORED_OPTIMIZATION_KEYS)
    if optimizations.get("aggregation_frequency") is not None:
        ck.integer(optimizations["aggregation_frequency"], "optimizations.aggregation_frequency", minimum=1)
