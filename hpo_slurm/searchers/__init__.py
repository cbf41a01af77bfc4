"""Search methods (pure state machines) behind one driver-facing ``Searcher``.

    searcher = make_searcher(config)              # a fresh search, seeded by config.seed
    searcher = restore_searcher(config, snapshot) # continue from Searcher.snapshot()
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from hpo_slurm.config.schema import OPEN_ENDED_SEARCHERS, ExperimentConfig
from hpo_slurm.searchers.adaptive_asha import adaptive_asha
from hpo_slurm.searchers.asha import AsyncHalving
from hpo_slurm.searchers.base import Context, SearchMethod
from hpo_slurm.searchers.grid import GridSearch
from hpo_slurm.searchers.pbt import PBT
from hpo_slurm.searchers.random_search import RandomSearch, single_search
from hpo_slurm.searchers.samplers import RandomSampler, make_sampler
from hpo_slurm.searchers.wrapper import Searcher

_METHODS = {
    "single": single_search,
    "random": RandomSearch,
    "grid": GridSearch,
    "async_halving": AsyncHalving,
    "adaptive_asha": adaptive_asha,
    "pbt": PBT,
}


def build_method(config: ExperimentConfig, ctx: Context, state: Optional[Dict[str, Any]] = None) -> SearchMethod:
    name = config.searcher.name
    if name not in _METHODS:
        raise ValueError(f"unknown searcher {name!r}; expected one of {', '.join(_METHODS)}")
    if config.searcher.open_ended and name not in OPEN_ENDED_SEARCHERS:
        raise ValueError(f"the {name} searcher needs a max_length: it stops trials at lengths of its own")
    return _METHODS[name](config.searcher, config.hyperparameters, ctx, state)


def make_searcher(config: ExperimentConfig) -> Searcher:
    """A fresh search for ``config``; call ``initial()`` on it first."""
    ctx = Context.from_seed(config.seed, _sampler(config, None))
    return Searcher(config.searcher.name, build_method(config, ctx), ctx)


def restore_searcher(config: ExperimentConfig, snapshot: Dict[str, Any]) -> Searcher:
    """The search ``snapshot`` (from ``Searcher.snapshot()``, possibly through JSON) was taken of."""
    if snapshot.get("searcher") != config.searcher.name:
        raise ValueError(
            f"the snapshot is of a {snapshot.get('searcher')!r} search, the config asks for {config.searcher.name!r}"
        )
    started_with = "tpe" if "sampler" in snapshot["context"] else "random"
    if started_with != config.searcher.sampler.name:
        raise ValueError(f"the search was started with sampler: {started_with}, the config asks for "
                         f"{config.searcher.sampler.name}: a search keeps the sampler it started with")
    ctx = Context.from_snapshot(snapshot["context"], _sampler(config, snapshot["context"].get("sampler")))
    method = build_method(config, ctx, snapshot["method"])
    return Searcher(config.searcher.name, method, ctx, snapshot["wrapper"])


def _sampler(config: ExperimentConfig, state: Optional[Dict[str, Any]]) -> Optional[RandomSampler]:
    """The search's sampler (None for uniform draws, which keep no state)."""
    if config.searcher.sampler.name == "random":
        return None
    return make_sampler(config.searcher.sampler, config.searcher.smaller_is_better,
                        len(config.hyperparameters.searched()), state)


__all__ = ["Searcher", "make_searcher", "restore_searcher", "build_method"]
