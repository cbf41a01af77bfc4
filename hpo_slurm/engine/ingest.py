"""Reading the searcher's metric out of what trials report."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional


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
