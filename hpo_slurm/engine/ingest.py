"""Reading the searcher's metric out of what trials report."""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

from hpo_slurm.config.schema import NO_TARGET


def metric_value(metrics: Dict[str, Any], name: str) -> float:
    """The searcher's metric as a float; missing or non-numeric values are NaN (the worst)."""
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def is_better(candidate: float, incumbent: Optional[float], smaller_is_better: bool) -> bool:
    """Whether ``candidate`` beats ``incumbent``; NaN and infinities in the wrong direction never win."""
    if not math.isfinite(candidate):
        return False
    if incumbent is None or not math.isfinite(incumbent):
        return True
    return candidate < incumbent if smaller_is_better else candidate > incumbent


def validation_fields(trial: Mapping[str, Any], length: int, value: float, smaller_is_better: bool) -> Dict[str, Any]:
    """The trial fields (a trials row's) that its validation of ``value`` at ``length`` changes: the
    latest metric (None when not finite), the best metric and its length when ``value`` beats it, and,
    for an open trial training without a target (NO_TARGET), ``validated_length``: the longest length
    it validated at, whose job's return then makes its last validation its result."""
    fields: Dict[str, Any] = {"latest_metric": value if math.isfinite(value) else None}
    if is_better(value, trial["best_metric"], smaller_is_better):
        fields.update(best_metric=value, best_length=length)
    if not trial["closed"] and trial["target_length"] == NO_TARGET:
        fields["validated_length"] = max(length, trial["validated_length"] or 0)
    return fields


def reaches_target(trial: Mapping[str, Any], length: int) -> bool:
    """Whether a validation at ``length`` completes the open trial's Train: it has a target (not
    NO_TARGET: that Train ends when its job returns) and ``length`` reaches it, past what it validated."""
    target = trial["target_length"]
    return (not trial["closed"] and target is not None and target != NO_TARGET
            and length >= target > (trial["validated_length"] or 0))
