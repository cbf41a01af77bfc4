"""``random`` and ``single``: independent trials, each trained straight to ``max_length`` (without one,
as long as its own code decides: ``searchers.independent``).

Determined's random.go: at most ``max_concurrent_trials`` trials in flight (0: all at once); a new trial
is created whenever one closes, until ``max_trials`` have been created. A trial that exits with an
invalid-HP error does not count towards ``max_trials``, so it is replaced.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from hpo_slurm.config.schema import SearcherConfig
from hpo_slurm.config.space import Nested
from hpo_slurm.core.types import Action, ExitReason
from hpo_slurm.searchers.base import Context
from hpo_slurm.searchers.independent import IndependentTrials, concurrency


class RandomSearch(IndependentTrials):
    def __init__(
        self,
        config: SearcherConfig,
        space: Nested,
        ctx: Context,
        state: Optional[Dict[str, Any]] = None,
        *,
        max_trials: Optional[int] = None,
        max_concurrent_trials: Optional[int] = None,
    ):
        self.space = space
        self.ctx = ctx
        self.max_length = config.train_length
        self.max_trials = config.max_trials if max_trials is None else max_trials
        cap = config.max_concurrent_trials if max_concurrent_trials is None else max_concurrent_trials
        self.cap = concurrency(cap, self.max_trials)
        self.state = copy.deepcopy(state) if state else {"created": 0, "invalid": 0, "closed": 0}

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        if reason == ExitReason.INVALID_HP:
            self.state["invalid"] += 1
        return []

    def on_closed(self, trial_id: int) -> List[Action]:
        self.state["closed"] += 1
        if self._valid_created() < self.max_trials:
            return self._create()
        return []

    def progress(self) -> float:
        valid_closed = self.state["closed"] - self.state["invalid"]
        return max(valid_closed, 0) / self.max_trials

    def trial_budget(self) -> int:
        return self.max_trials

    def _valid_created(self) -> int:
        return self.state["created"] - self.state["invalid"]

    def _next_hparams(self) -> Dict[str, Any]:
        self.state["created"] += 1
        return self.ctx.sample(self.space)


def single_search(config: SearcherConfig, space: Nested, ctx: Context, state=None) -> RandomSearch:
    """Determined's ``single``: one random-search trial trained to ``max_length``."""
    return RandomSearch(config, space, ctx, state, max_trials=1, max_concurrent_trials=1)
