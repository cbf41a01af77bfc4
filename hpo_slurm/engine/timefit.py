"""Time limits fitted to each run's work, so short rung continuations fit backfill windows."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional

from hpo_slurm.config.schema import NO_TARGET

MARGIN = 1.5  # measured time x this
OVERHEAD_S = 120.0  # job start-up, imports, checkpoint loading and saving


def fitted_time_minutes(
    earlier_runs: Iterable[Dict[str, Any]],
    from_length: int,
    to_length: int,
    limit_minutes: Optional[int],
    signal_delay_s: int,
) -> Optional[int]:
    """Minutes to ask for a run that trains ``from_length`` -> ``to_length``: the trial's measured
    seconds per unit on its earlier successful runs, times ``MARGIN``, plus start-up overhead and the
    warning-signal delay, never above ``limit_minutes``. Without a measurement (a trial's first run),
    without a limit, or for a run without a target (``to_length`` NO_TARGET: it trains as long as its
    code decides), ``limit_minutes`` itself."""
    if limit_minutes is None or to_length == NO_TARGET:
        return limit_minutes
    seconds = units = 0.0
    for run in earlier_runs:
        if run["state"] == "SUCCEEDED" and run["started_at"] is not None and run["ended_at"] is not None:
            trained = run["to_length"] - run["from_length"]
            if trained > 0:
                seconds += run["ended_at"] - run["started_at"]
                units += trained
    if units <= 0:
        return limit_minutes
    needed = (seconds / units) * (to_length - from_length) * MARGIN + OVERHEAD_S + signal_delay_s
    return max(1, min(limit_minutes, math.ceil(needed / 60.0)))
