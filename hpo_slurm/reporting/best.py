"""The best trial of an experiment, its hyperparameters as a Determined ``hyperparameters:`` block and
its checkpoint.

In Determined (and hpo-slurm) a bare value in ``hyperparameters:`` is a const and a mapping without a
``type`` key nests, so the block is written with bare values; only a value that is itself a mapping
is written ``{type: const, val: ...}``, so it is not read back as nesting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from hpo_slurm.engine.checkpoints import published_checkpoints
from hpo_slurm.core.errors import UserError
from hpo_slurm.reporting.results import Results, ranked_trials
from hpo_slurm.config.space import Nested


def best_trial(results: Results) -> Dict[str, Any]:
    """The best trial as JSON-able data: id, state, metric, length, hyperparameters and checkpoint
    (the folder at the best length if it is still on disk, else the latest one, else None;
    ``checkpoint_at_best`` says which). A UserError when no trial has reported the metric."""
    ranked = ranked_trials(results)
    if not ranked:
        raise UserError(f"no trial of {results.layout.name} has reported {results.metric} yet")
    trial = ranked[0]
    checkpoints = published_checkpoints(results.layout, trial["id"])
    at_best = trial["best_length"] in checkpoints
    path: Optional[Path] = checkpoints[trial["best_length"]] if at_best else (
        checkpoints[max(checkpoints)] if checkpoints else None)
    return {
        "experiment": results.layout.name,
        "searcher": results.config.searcher.name,
        "sampler": results.config.searcher.sampler.name,
        "trial_id": trial["id"],
        "state": trial["state"],
        "metric_name": results.metric,
        "smaller_is_better": results.smaller_is_better,
        "metric": trial["best_metric"],
        "length": trial["best_length"],
        "length_reached": trial["validated_length"] or 0,
        "unit": results.unit,
        "hparams": trial["hparams"],
        "checkpoint": str(path) if path else None,
        "checkpoint_at_best": at_best,
    }


def const_hyperparameters(hparams: Dict[str, Any], space: Nested) -> Dict[str, Any]:
    """``hparams`` as a Determined ``hyperparameters:`` mapping of consts, nested like ``space`` and in
    its declaration order."""
    nested = {name: node for name, node in space.items if isinstance(node, Nested)}
    order = [name for name, _ in space.items if name in hparams] + [k for k in hparams if k not in dict(space.items)]
    out: Dict[str, Any] = {}
    for key, value in ((k, hparams[k]) for k in order):
        if key in nested and isinstance(value, dict):
            out[key] = const_hyperparameters(value, nested[key])
        elif isinstance(value, dict):
            out[key] = {"type": "const", "val": value}
        else:
            out[key] = value
    return out


def render_yaml(best: Dict[str, Any], space: Nested) -> str:
    """A YAML document: comments saying which trial it is, then the ``hyperparameters:`` block."""
    direction = "min" if best["smaller_is_better"] else "max"
    where = best["checkpoint"] or "none on disk"
    if best["checkpoint"] and not best["checkpoint_at_best"]:
        where += "  (the best length's checkpoint is gone; this is the latest)"
    header = [
        f"# best trial of {best['experiment']}: trial {best['trial_id']} ({best['state']}), "
        f"found by {best['searcher']} with {best['sampler']} sampling",
        f"# {best['metric_name']} ({direction}) {best['metric']:.6g} at {best['length']} {best['unit']}",
        f"# checkpoint: {where}",
        "# bare values are consts: paste this block into a Determined const.yaml",
    ]
    block = yaml.safe_dump({"hyperparameters": const_hyperparameters(best["hparams"], space)},
                           sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + block
