"""``searcher.sampler`` and ``searcher.tpe``: how a search that samples (random, adaptive_asha,
async_halving, pbt) picks a new trial's hyperparameters.

    searcher:
      sampler: tpe            # random (the default: Determined's uniform draws) or tpe
      tpe:                    # optional; BOHB's defaults (Falkner et al., 2018)
        top_n_percent: 15     # good = the best 15 % of the results at the modelled length
        num_samples: 64       # candidates drawn from the good density; the best good/bad ratio wins
        random_fraction: 0.33 # share of trials still drawn uniformly
        bandwidth_factor: 3   # candidates are drawn with the good density's bandwidths this much wider
        min_bandwidth: 0.001  # floor on every bandwidth, in the unit cube
        min_std: 0.1          # floor on each hyperparameter's spread before the bandwidth rule (0: BOHB's)
        min_points_in_model:  # results needed at a length before it is modelled (default: searched dims + 1)
        max_points_in_model: 512  # results per length the model keeps (the best ones and the latest ones)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from hpo_slurm.config.checks import Checker, join

SAMPLERS = ("random", "tpe")
SAMPLING_SEARCHERS = ("random", "adaptive_asha", "async_halving", "pbt")
TPE_KEYS = ("top_n_percent", "num_samples", "random_fraction", "bandwidth_factor", "min_bandwidth", "min_std",
            "min_points_in_model", "max_points_in_model")


@dataclass(frozen=True)
class SamplerConfig:
    """``name`` random or tpe; the other fields are TPE's and keep BOHB's defaults."""

    name: str = "random"
    top_n_percent: float = 15.0
    num_samples: int = 64
    random_fraction: float = 1.0 / 3.0
    bandwidth_factor: float = 3.0
    min_bandwidth: float = 1e-3
    # not BOHB's: a floor on each dimension's spread (in the unit cube) before the bandwidth rule, so a
    # small good set of near-twins does not shrink the model onto one point
    min_std: float = 0.1
    min_points_in_model: Optional[int] = None  # None: the number of searched hyperparameters + 1
    max_points_in_model: int = 512

    def min_points(self, searched: int) -> int:
        """Results each density needs before a length is modelled, for ``searched`` hyperparameters."""
        return max(1, self.min_points_in_model or searched + 1)

    def cap(self, searched: int) -> int:
        """Results per length that enter a fit: ``max_points_in_model``, but never fewer than a fit needs."""
        return max(self.max_points_in_model, 2 * self.min_points(searched))


def parse_sampler(ck: Checker, section: Dict[str, Any], path: str) -> SamplerConfig:
    """The sampler of the searcher ``section`` (at key path ``path``), whose name samples."""
    name = ck.choice(section.get("sampler", "random"), join(path, "sampler"), SAMPLERS, "sampler")
    tpe = section.get("tpe")
    if tpe is None:
        return SamplerConfig(name=name)
    tpe_path = join(path, "tpe")
    if name != "tpe":
        ck.fail(tpe_path, "TPE's options need `sampler: tpe`")
    options = ck.mapping(tpe, tpe_path)
    ck.check_keys(options, tpe_path, TPE_KEYS, {}, {})
    values: Dict[str, Any] = {}

    def read(key: str, reader, **limits) -> None:
        if options.get(key) is not None:
            values[key] = reader(options[key], join(tpe_path, key), **limits)

    read("top_n_percent", ck.number, above=0, maximum=50)
    read("num_samples", ck.integer, minimum=1, maximum=100_000)
    read("random_fraction", ck.number, minimum=0, maximum=1)
    read("bandwidth_factor", ck.number, above=0, maximum=1000)
    read("min_bandwidth", ck.number, above=0, maximum=1)
    read("min_std", ck.number, minimum=0, maximum=1)
    read("min_points_in_model", ck.integer, minimum=1, maximum=100_000)
    read("max_points_in_model", ck.integer, minimum=4, maximum=100_000)
    return SamplerConfig(name=name, **values)


def check_population(ck: Checker, sampler: SamplerConfig, population_size: int, searched: int, path: str) -> None:
    """PBT's members report at one length per round, so its model can fit only when a round's results
    are enough for both densities: ``population_size >= 2 x min_points_in_model`` (default: the
    ``searched`` hyperparameters + 1)."""
    if sampler.name != "tpe":
        return
    min_points = sampler.min_points(searched)
    if population_size < 2 * min_points:
        ck.fail(join(path, "sampler"),
                f"tpe fits its model on one round's results: population_size {population_size} is below "
                f"2 x min_points_in_model ({min_points}{'' if sampler.min_points_in_model else ': searched hyperparameters + 1'}); "
                f"raise population_size to {2 * min_points} or set searcher.tpe.min_points_in_model")

