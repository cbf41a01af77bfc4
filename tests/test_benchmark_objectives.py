"""The built-in objectives of hpo_slurm.benchmarks have the properties their docstrings promise."""

from __future__ import annotations

import math
import random

import pytest

from hpo_slurm.benchmarks import curves, hartmann, zero
from hpo_slurm.benchmarks.ranks import spearman


def random_configs(names, count, seed=0):
    rng = random.Random(seed)
    return [{name: rng.random() for name in names} for _ in range(count)]


def test_hartmann6_global_minimum_at_full_fidelity():
    optimum = dict(zip(hartmann.NAMES, hartmann.OPTIMUM))
    for preset in hartmann.PRESETS:
        result = hartmann.make(preset)(optimum, hartmann.MAX_FIDELITY)
        assert result["loss"] == pytest.approx(-3.32237, abs=1e-5)
        assert result["seconds"] == pytest.approx(hartmann.SECONDS_PER_UNIT * 100)
    # nothing random beats it
    for config in random_configs(hartmann.NAMES, 500):
        assert hartmann.good(config, 100)["loss"] > -3.32237


def test_hartmann6_presets_are_mfpbench_s():
    assert hartmann.PRESETS == {"good": (2.5, 2.0), "moderate": (3.0, 3.0), "bad": (3.5, 4.0),
                                "terrible": (4.0, 5.0)}


def test_hartmann6_low_fidelity_is_biased_noisy_and_deterministic():
    configs = random_configs(hartmann.NAMES, 300, seed=1)
    final = [hartmann.good(c, 100)["loss"] for c in configs]
    for preset in ("good", "terrible"):
        objective = hartmann.make(preset)
        low = [objective(c, 1)["loss"] for c in configs]
        assert low == [objective(c, 1)["loss"] for c in configs]  # same input, same value
        assert low != final
    # correlation with the final ranking shrinks from good to terrible, and grows with fidelity
    rho = {p: spearman([hartmann.make(p)(c, 6)["loss"] for c in configs], final) for p in hartmann.PRESETS}
    assert rho["good"] > rho["terrible"]
    good_by_length = [spearman([hartmann.good(c, z)["loss"] for c in configs], final) for z in (1, 25, 100)]
    assert good_by_length[0] < good_by_length[1] < good_by_length[2] == pytest.approx(1.0)


@pytest.mark.parametrize("rho", [0.9, 0.5, 0.1])
def test_curves_early_final_rank_correlation_matches_parameter(rho):
    objective = curves.make(rank_correlation=rho)
    configs = random_configs(curves.NAMES, 4000, seed=2)
    early = [objective(c, 1)["loss"] for c in configs]
    final = [objective(c, curves.MAX_LENGTH)["loss"] for c in configs]
    assert spearman(early, final) == pytest.approx(rho, abs=0.04)


def test_curves_cost_is_lognormal_per_configuration_and_cumulative():
    sigma = 0.5
    objective = curves.make(rank_correlation=0.9, cost_sigma=sigma)
    configs = random_configs(curves.NAMES, 4000, seed=3)
    per_unit = [objective(c, 10)["seconds"] / 10 for c in configs]
    logs = [math.log(v) for v in per_unit]
    mean = sum(logs) / len(logs)
    std = math.sqrt(sum((v - mean) ** 2 for v in logs) / len(logs))
    assert std == pytest.approx(sigma, rel=0.05)
    assert sum(per_unit) / len(per_unit) == pytest.approx(curves.SECONDS_PER_UNIT, rel=0.05)
    for config in configs[:50]:  # seconds are cumulative: linear in length for one configuration
        assert objective(config, 200)["seconds"] == pytest.approx(2 * objective(config, 100)["seconds"])


def test_curves_mostly_improve_with_length():
    objective = curves.high
    configs = random_configs(curves.NAMES, 200, seed=4)
    improving = sum(objective(c, 256)["loss"] < objective(c, 16)["loss"] < objective(c, 1)["loss"] for c in configs)
    assert improving >= 190


def test_zero_costs_nothing():
    result = zero.objective({"x0": 0.3, "x1": 0.3}, 10)
    assert result["seconds"] == 0.0
    assert result["loss"] == pytest.approx(1 / 11)
