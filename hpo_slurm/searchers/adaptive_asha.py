"""``adaptive_asha``: a tournament of ASHA brackets laid out as Determined's adaptive_asha.go.

``R = min(max_rungs, ilog(max_length) + 1, ilog(max_trials) + 1)`` with ``ilog`` the integer logarithm in
base ``divisor`` (exact, where Determined's float log turns log(1000)/log(10) into 2.9999...). Bracket
rungs by mode: aggressive ``[R]``; standard ``[R, R-1, ..., (R-1)//2 + 1]``; conservative
``[R, ..., 1]``; ``bracket_rungs`` overrides (sorted, most rungs first). Trials are split in proportion to
``divisor**(rungs-1) / rungs`` (each bracket at least 1, the remainder to the first); a non-zero
``max_concurrent_trials`` is split evenly (at least 1 each, remainder to the first brackets), while 0
gives every bracket ``max(trials of the last bracket, int(divisor))``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from hpo_slurm.config.schema import SearcherConfig
from hpo_slurm.config.space import Nested
from hpo_slurm.searchers.asha import AsyncHalving
from hpo_slurm.searchers.base import Context
from hpo_slurm.searchers.tournament import Tournament, restore_methods_state

MODES = ("aggressive", "standard", "conservative")


def integer_log(value: float, base: float) -> int:
    """The largest k >= 0 with ``base**k <= value`` (base > 1), robust to float rounding."""
    k, power = 0, 1.0
    while power * base <= value * (1 + 1e-12):
        power *= base
        k += 1
    return k


def max_rungs(config: SearcherConfig) -> int:
    return min(
        config.max_rungs,
        integer_log(config.max_length, config.divisor) + 1,
        integer_log(config.max_trials, config.divisor) + 1,
    )


def bracket_rungs(config: SearcherConfig) -> List[int]:
    """Rungs of each bracket, most rungs (most early stopping) first."""
    if config.bracket_rungs:
        return sorted(config.bracket_rungs, reverse=True)
    top = max_rungs(config)
    if config.mode == "aggressive":
        rungs = [top]
    elif config.mode == "standard":
        rungs = list(range((top - 1) // 2 + 1, top + 1))
    elif config.mode == "conservative":
        rungs = list(range(1, top + 1))
    else:
        raise ValueError(f"adaptive_asha mode must be one of {', '.join(MODES)}, got {config.mode!r}")
    return sorted(rungs, reverse=True)


def bracket_max_trials(max_trials: int, divisor: float, rungs: List[int]) -> List[int]:
    """Trials per bracket, for roughly equal training budget per bracket."""
    weights = [divisor ** (n - 1) / n for n in rungs]
    total = sum(weights)
    trials = [max(int(weight / total * max_trials), 1) for weight in weights]
    trials[0] += max(max_trials - sum(trials), 0)
    return trials


def bracket_max_concurrent_trials(max_concurrent_trials: int, divisor: float, trials: List[int]) -> List[int]:
    count = len(trials)
    if max_concurrent_trials == 0:
        return [max(trials[-1], int(divisor))] * count
    cap = max(max_concurrent_trials, count)
    shares = [cap // count] * count
    for index in range(cap % count):
        shares[index] += 1
    return shares


def layout(config: SearcherConfig) -> List[Dict[str, int]]:
    """``num_rungs``, ``max_trials`` and ``max_concurrent_trials`` (as configured) of each bracket."""
    rungs = bracket_rungs(config)
    trials = bracket_max_trials(config.max_trials, config.divisor, rungs)
    concurrent = bracket_max_concurrent_trials(config.max_concurrent_trials, config.divisor, trials)
    return [
        {"num_rungs": n, "max_trials": t, "max_concurrent_trials": c}
        for n, t, c in zip(rungs, trials, concurrent)
    ]


def adaptive_asha(
    config: SearcherConfig, space: Nested, ctx: Context, state: Optional[Dict[str, Any]] = None
) -> Tournament:
    brackets = layout(config)
    states = restore_methods_state(state, len(brackets))
    methods = [
        AsyncHalving(config, space, ctx, bracket_state, **bracket)
        for bracket, bracket_state in zip(brackets, states)
    ]
    return Tournament(methods, state)
