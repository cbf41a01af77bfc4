"""Several search methods run side by side; each event goes to the method that created the trial.

As Determined's tournament.go. The methods share one Context, so trial ids stay globally unique.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any, Dict, List, Optional

from ..types import Action, Create, ExitReason
from .base import SearchMethod


class Tournament(SearchMethod):
    """State: which method owns each trial (``owner``); each method keeps its own state."""

    def __init__(self, methods: List[SearchMethod], state: Optional[Dict[str, Any]] = None):
        self.methods = methods
        self.state = {"owner": copy.deepcopy(state["owner"]) if state else {}}

    def initial(self) -> List[Action]:
        actions: List[Action] = []
        for index, method in enumerate(self.methods):
            actions += self._claim(index, method.initial())
        return actions

    def on_created(self, trial_id: int) -> List[Action]:
        return self._route(trial_id, lambda method: method.on_created(trial_id))

    def on_validation(self, trial_id: int, length: int, metric: float) -> List[Action]:
        return self._route(trial_id, lambda method: method.on_validation(trial_id, length, metric))

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        return self._route(trial_id, lambda method: method.on_early_exit(trial_id, reason))

    def on_closed(self, trial_id: int) -> List[Action]:
        return self._route(trial_id, lambda method: method.on_closed(trial_id))

    def progress(self) -> float:
        return sum(method.progress() for method in self.methods) / len(self.methods)

    def snapshot(self) -> Dict[str, Any]:
        return {
            "owner": pickle.loads(pickle.dumps(self.state["owner"], pickle.HIGHEST_PROTOCOL)),  # deep copy, fast
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

    def _claim(self, index: int, actions: List[Action]) -> List[Action]:
        for action in actions:
            if isinstance(action, Create):
                self.state["owner"][str(action.trial_id)] = index
        return actions


def restore_methods_state(state: Optional[Dict[str, Any]], count: int) -> List[Optional[Dict[str, Any]]]:
    """The per-method states inside a tournament snapshot (all None for a fresh tournament)."""
    if state is None:
        return [None] * count
    if len(state["methods"]) != count:
        raise ValueError(f"the snapshot holds {len(state['methods'])} brackets but the config gives {count}")
    return list(state["methods"])
