"""Multi-fidelity Hartmann-6, as mfpbench's ``MFHartmann6`` (after Kandasamy et al., 2017).

At fidelity ``z`` in [1, 100], with ``s = log(z) / log(100)``:

    f(x, z) = -sum_i (alpha_i - bias * (1 - s)) * exp(-sum_j A_ij (x_j - P_ij)^2)  +  |eps| * noise * (1 - s)

``eps`` is a standard normal number fixed by (x, z), so a configuration gives the same value at the same
fidelity every time. At z = 100 this is the plain Hartmann-6 function, global minimum -3.32237 at
``OPTIMUM``. Lower fidelities flatten the function (bias) and add noise, both shrinking linearly in
log-fidelity; mfpbench's presets set how misleading the low fidelities are:

    good (bias 2.5, noise 2.0), moderate (3.0, 3.0), bad (3.5, 4.0), terrible (4.0, 5.0)

Here the length is the fidelity (``searcher.max_length: 100``; longer lengths count as 100). Training
cost is linear in length, ``SECONDS_PER_UNIT`` per unit (an hour for a full-length trial), which is
less kind to early stopping than mfpbench's quadratic cost model. Hyperparameters: ``x0`` .. ``x5``
in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Sequence

from hpo_slurm.benchmarks._hashing import hash_normals

ALPHA = (1.0, 1.2, 3.0, 3.2)
A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
P = tuple(tuple(p * 1e-4 for p in row) for row in (
    (1312, 1696, 5569, 124, 8283, 5886),
    (2329, 4135, 8307, 3736, 1004, 9991),
    (2348, 1451, 3522, 2883, 3047, 6650),
    (4047, 8828, 8732, 5743, 1091, 381),
))
OPTIMUM = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
MINIMUM = -3.32237
MAX_FIDELITY = 100
PRESETS = {"good": (2.5, 2.0), "moderate": (3.0, 3.0), "bad": (3.5, 4.0), "terrible": (4.0, 5.0)}
SECONDS_PER_UNIT = 36.0
NAMES = tuple(f"x{i}" for i in range(6))


def hartmann6(x: Sequence[float], fidelity: float, bias: float, noise: float, seed: int = 1337) -> float:
    """The multi-fidelity Hartmann-6 value of ``x`` (six numbers in [0, 1]) at ``fidelity``."""
    z = min(max(float(fidelity), 1.0), float(MAX_FIDELITY))
    gap = 1.0 - math.log(z) / math.log(MAX_FIDELITY)
    total = 0.0
    for alpha, a_row, p_row in zip(ALPHA, A, P):
        inner = sum(a * (xj - p) ** 2 for a, xj, p in zip(a_row, x, p_row))
        total -= (alpha - bias * gap) * math.exp(-inner)
    if noise and gap > 0:
        total += abs(hash_normals(f"hartmann6:{seed}:{z}", x, 1)[0]) * noise * gap
    return total


def make(preset: str, seconds_per_unit: float = SECONDS_PER_UNIT) -> Callable[[Dict[str, Any], int], Dict[str, float]]:
    """The objective for one of ``PRESETS``."""
    bias, noise = PRESETS[preset]

    def objective(hparams: Dict[str, Any], length: int) -> Dict[str, float]:
        x = [float(hparams[name]) for name in NAMES]
        value = hartmann6(x, length, bias, noise) if length > 0 else 0.0
        return {"loss": value, "seconds": seconds_per_unit * length}

    objective.__name__ = f"hartmann6_{preset}"
    return objective


good = make("good")
moderate = make("moderate")
bad = make("bad")
terrible = make("terrible")
