"""What ``random``, ``single`` and ``grid`` share: independent trials, each trained straight to
``max_length`` and closed at its one validation, at most ``cap`` in flight, a new one started when one
closes. Subclasses say where the next trial's hyperparameters come from and when to stop creating.

Without a ``max_length`` (``SearcherConfig.open_ended``) each trial's one Train asks for NO_TARGET:
the trial trains as long as its own code decides, and the validation it is closed at is its last one."""

from __future__ import annotations

import copy
from typing import Any, Dict, List

from hpo_slurm.core.types import Action, Close, Create, Train
from hpo_slurm.searchers.base import SearchMethod


def concurrency(cap: int, budget: int) -> int:
    """``max_concurrent_trials`` bounded by the number of trials; 0 means all of them at once."""
    return min(cap, budget) if cap > 0 else budget


class IndependentTrials(SearchMethod):
    """Needs ``self.ctx``, ``self.max_length`` (``SearcherConfig.train_length``: NO_TARGET when open-ended),
    ``self.cap`` and ``self.state`` set by the subclass."""

    def initial(self) -> List[Action]:
        actions: List[Action] = []
        for _ in range(self.cap):
            actions += self._create()
        return actions

    def on_validation(self, trial_id: int, length: int, metric: float) -> List[Action]:
        return [Close(trial_id)]

    def snapshot(self) -> Dict[str, Any]:
        return copy.deepcopy(self.state)

    def concurrency_cap(self) -> int:
        return self.cap

    def _create(self) -> List[Action]:
        trial_id = self.ctx.new_trial_id()
        return [Create(trial_id, self._next_hparams()), Train(trial_id, self.max_length)]

    def _next_hparams(self) -> Dict[str, Any]:
        raise NotImplementedError
