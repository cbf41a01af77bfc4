"""Several search methods run side by side; each event goes to the method that created the trial.

As Determined's tournament.go, with one difference: a slot a method frees and does not fill again (it
has created all its trials) goes to the first method that still has trials to create, so no worker
idles while any bracket has work (Determined keeps each bracket's share of max_concurrent_trials
fixed, and a bracket that is done leaves its share unused). The total never exceeds the sum of the
methods' caps. The methods share one Context, so trial ids stay globally unique.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any, Dict, List, Optional

from hpo_slurm.core.types import Action, Create, ExitReason, Train
from hpo_slurm.searchers.base import SearchMethod


class Tournament(SearchMethod):
    """State: which method owns each trial (``owner``) and which trials have an outstanding Train
    (``training``; absent from snapshots of earlier versions, which then lend only slots freed by
    trials trained since); each method keeps its own state."""

    def __init__(self, methods: List[SearchMethod], state: Optional[Dict[str, Any]] = None):
        self.methods = methods
        self.state = {
            "owner": copy.deepcopy(state["owner"]) if state else {},
            "training": copy.deepcopy(state.get("training", {})) if state else {},
        }

    def initial(self) -> List[Action]:
        actions: List[Action] = []
        for index, method in enumerate(self.methods):
            actions += self._claim(index, method.initial())
        return actions

    def on_created(self, trial_id: int) -> List[Action]:
        return self._route(trial_id, lambda method: method.on_created(trial_id))

    def on_validation(self, trial_id: int, length: int, metric: float) -> List[Action]:
        return self._route_end(trial_id, lambda method: method.on_validation(trial_id, length, metric))

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        return self._route_end(trial_id, lambda method: method.on_early_exit(trial_id, reason))

    def on_closed(self, trial_id: int) -> List[Action]:
        return self._route(trial_id, lambda method: method.on_closed(trial_id))

    def progress(self) -> float:
        return sum(method.progress() for method in self.methods) / len(self.methods)

    def snapshot(self) -> Dict[str, Any]:
        return {
            "owner": pickle.loads(pickle.dumps(self.state["owner"], pickle.HIGHEST_PROTOCOL)),  # deep copy, fast
            "training": dict(self.state["training"]),
            "methods": [method.snapshot() for method in self.methods],
        }

    def trial_budget(self) -> int:
        return sum(method.trial_budget() for method in self.methods)

    def concurrency_cap(self) -> int:
        return sum(method.concurrency_cap() for method in self.methods)

    def brackets(self) -> Optional[List[Dict[str, Any]]]:
        layouts = [method.brackets() for method in self.methods]
        if any(layout is None for layout in layouts):
            return None
        return [bracket for layout in layouts for bracket in layout]

    def _route(self, trial_id: int, call) -> List[Action]:
        index = self.state["owner"][str(trial_id)]
        return self._claim(index, call(self.methods[index]))

    def _route_end(self, trial_id: int, call) -> List[Action]:
        """Route an event that ends the trial's outstanding Train; lend the slot if it went unused."""
        training = self.state["training"]
        before = len(training)
        training.pop(str(trial_id), None)
        actions = self._route(trial_id, call)
        return actions + self._lend(before - len(training))

    def _lend(self, slots: int) -> List[Action]:
        """Up to ``slots`` new trials from the first methods that still have trials to create."""
        actions: List[Action] = []
        for index, method in enumerate(self.methods):
            while slots > 0:
                extra = method.extra_trial()
                if not extra:
                    break
                actions += self._claim(index, extra)
                slots -= 1
        return actions

    def _claim(self, index: int, actions: List[Action]) -> List[Action]:
        for action in actions:
            if isinstance(action, Create):
                self.state["owner"][str(action.trial_id)] = index
            elif isinstance(action, Train):
                self.state["training"][str(action.trial_id)] = True
        return actions


def restore_methods_state(state: Optional[Dict[str, Any]], count: int) -> List[Optional[Dict[str, Any]]]:
    """The per-method states inside a tournament snapshot (all None for a fresh tournament)."""
    if state is None:
        return [None] * count
    if len(state["methods"]) != count:
        raise ValueError(f"the snapshot holds {len(state['methods'])} brackets but the config gives {count}")
    return list(state["methods"])
