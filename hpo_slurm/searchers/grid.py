"""``grid``: one trial per grid point (``Nested.grid()``), each trained straight to ``max_length`` (without
one, as long as its own code decides: ``searchers.independent``).

Determined's grid.go: at most ``max_concurrent_trials`` in flight (0: all at once); the next grid point
starts whenever a trial closes. A grid point whose trial fails is not retried by the searcher.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from hpo_slurm.config.schema import SearcherConfig
from hpo_slurm.config.space import Nested
from hpo_slurm.core.types import Action, ExitReason
from hpo_slurm.searchers.base import Context
from hpo_slurm.searchers.independent import IndependentTrials, concurrency


class GridSearch(IndependentTrials):
    def __init__(
        self, config: SearcherConfig, space: Nested, ctx: Context, state: Optional[Dict[str, Any]] = None
    ):
        self.ctx = ctx
        self.max_length = config.train_length
        self.points = space.grid()
        self.cap = concurrency(config.max_concurrent_trials, len(self.points))
        self.state = copy.deepcopy(state) if state else {"next_point": 0, "closed": 0}

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        return []

    def on_closed(self, trial_id: int) -> List[Action]:
        self.state["closed"] += 1
        return self._create() if self.state["next_point"] < len(self.points) else []

    def progress(self) -> float:
        return self.state["closed"] / len(self.points)

    def trial_budget(self) -> int:
        return len(self.points)

    def _next_hparams(self) -> Dict[str, Any]:
        point = self.points[self.state["next_point"]]
        self.state["next_point"] += 1
        return copy.deepcopy(point)
