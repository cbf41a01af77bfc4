"""Parametric learning curves with a chosen early/final rank correlation and lognormal per-unit cost.

Hyperparameters ``x0`` .. ``x3`` in [0, 1]. A configuration has a final quality ``u`` and a nuisance
``e``, both standard normal over uniformly drawn configurations:

* ``u`` is smooth in x: with ``a_i = Phi^-1(x_i)``, ``q = sum a_i^2`` is chi-square(4), so
  ``G = 1 - exp(-q/2)(1 + q/2)`` is uniform and ``u = Phi^-1(G)`` standard normal; the best
  configurations lie around x = (0.5, 0.5, 0.5, 0.5).
* ``e`` is a fixed pseudo-random normal number of the configuration (what early training shows that
  the final result does not).

At length l the loss is ``(0.1 + 0.9 / sqrt(l)) * exp(0.25 * z(l))`` with
``z(l) = w(l) u + sqrt(1 - w(l)^2) e``, ``w`` linear in log-length from ``w(early_length) = r`` to
``w(max_length) = 1``. For jointly normal variables Spearman's rho is ``(6/pi) asin(r/2)``, so
``r = 2 sin(pi rho / 6)`` makes the Spearman rank correlation between the losses at ``early_length``
and ``max_length`` equal to ``rank_correlation`` (over uniformly sampled configurations).

Cost: ``seconds(l) = l * seconds_per_unit * exp(cost_sigma * c - cost_sigma^2 / 2)``, ``c`` another
fixed normal number of the configuration: per-unit costs are lognormal with mean ``seconds_per_unit``,
so some configurations are stragglers.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Callable, Dict

from hpo_slurm.benchmarks._hashing import hash_normals

NAMES = ("x0", "x1", "x2", "x3")
MAX_LENGTH = 256
SECONDS_PER_UNIT = 14.0  # about an hour for a full-length trial
_NORMAL = NormalDist()
_EPS = 1e-12


def quality(hparams: Dict[str, Any]) -> float:
    """``u``: the configuration's final quality as a standard normal number (smaller is better)."""
    q = 0.0
    for name in NAMES:
        x = min(max(float(hparams[name]), _EPS), 1.0 - _EPS)
        q += _NORMAL.inv_cdf(x) ** 2
    g = 1.0 - math.exp(-q / 2.0) * (1.0 + q / 2.0)
    return _NORMAL.inv_cdf(min(max(g, _EPS), 1.0 - _EPS))


def make(rank_correlation: float = 0.9, cost_sigma: float = 0.5, max_length: int = MAX_LENGTH,
         early_length: int = 1, seconds_per_unit: float = SECONDS_PER_UNIT,
         seed: int = 0) -> Callable[[Dict[str, Any], int], Dict[str, float]]:
    """An objective whose losses at ``early_length`` and ``max_length`` have Spearman correlation
    ``rank_correlation`` (in [-1, 1])."""
    if not -1.0 <= rank_correlation <= 1.0:
        raise ValueError(f"rank_correlation must be in [-1, 1], got {rank_correlation}")
    if not 1 <= early_length < max_length:
        raise ValueError("need 1 <= early_length < max_length")
    pearson = 2.0 * math.sin(math.pi * rank_correlation / 6.0)
    span = math.log(max_length / early_length)

    def objective(hparams: Dict[str, Any], length: int) -> Dict[str, float]:
        x = [float(hparams[name]) for name in NAMES]
        nuisance, cost_draw = hash_normals(f"curves:{seed}", x, 2)
        per_unit = seconds_per_unit * math.exp(cost_sigma * cost_draw - cost_sigma ** 2 / 2.0)
        if length <= 0:
            return {"loss": 1.0, "seconds": 0.0}
        progress = min(max(math.log(length / early_length) / span, 0.0), 1.0)
        w = pearson + (1.0 - pearson) * progress
        z = w * quality(hparams) + math.sqrt(max(1.0 - w * w, 0.0)) * nuisance
        loss = (0.1 + 0.9 / math.sqrt(length)) * math.exp(0.25 * z)
        return {"loss": loss, "seconds": length * per_unit}

    objective.__name__ = f"curves_rho{rank_correlation:g}"
    return objective


high = make(0.9)  # early ranks mostly right
medium = make(0.5)
low = make(0.1)  # early ranks nearly useless
