"""``pbt``: population-based training, as Determined's pbt.go with absolute lengths.

The population trains in rounds of ``length_per_round``. When every member has reported the round, the
worst ``int(truncate_fraction * population_size)`` are closed and as many copies of the best replace
them: ``Create(child, explored_hparams, parent=best)`` then ``Train(child, parent_length +
length_per_round)``, the child starting from the parent's checkpoint at ``parent_length``. The others get
``Train(t, length + length_per_round)``. After ``num_rounds`` rounds every member is closed.

Ties rank by trial id. An early-exited trial counts as the worst; it stays a member (reporting the worst
every round) until it is truncated, and it is never copied (Determined's semantics). Unlike Determined, a
round ends when every current member has reported, so a population that lost members cannot stall.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from hpo_slurm.config.schema import SearcherConfig
from hpo_slurm.config.space import Nested
from hpo_slurm.core.types import Action, Close, Create, ExitReason, Train
from hpo_slurm.searchers.base import WORST, Context, SearchMethod, signed_metric


class PBT(SearchMethod):
    """State: current ``members`` (trial ids), this round's signed ``metrics``, ``rounds`` completed,
    members that ``exited`` early, and each member's ``hparams`` and ``length``."""

    def __init__(
        self, config: SearcherConfig, space: Nested, ctx: Context, state: Optional[Dict[str, Any]] = None
    ):
        for name in ("population_size", "num_rounds", "length_per_round"):
            if getattr(config, name) < 1:
                raise ValueError(f"pbt needs a positive {name}, got {getattr(config, name)}")
        self.config = config
        self.space = space
        self.ctx = ctx
        self.num_truncate = int(config.truncate_fraction * config.population_size)
        self.state = copy.deepcopy(state) if state else {
            "members": [],
            "metrics": {},
            "rounds": 0,
            "exited": {},
            "hparams": {},
            "length": {},
        }

    def initial(self) -> List[Action]:
        actions: List[Action] = []
        for _ in range(self.config.population_size):
            actions += self._create(self.ctx.sample(self.space), 0, parent=None)
        return actions

    def on_validation(self, trial_id: int, length: int, metric: float) -> List[Action]:
        self.state["metrics"][str(trial_id)] = signed_metric(metric, self.config.smaller_is_better)
        return self._end_round_if_ready()

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        self.state["exited"][str(trial_id)] = True
        self.state["metrics"][str(trial_id)] = WORST
        return self._end_round_if_ready()

    def progress(self) -> float:
        members = self.state["members"]
        reported = len(self.state["metrics"]) / len(members) if members else 0.0
        return min((self.state["rounds"] + reported) / self.config.num_rounds, 1.0)

    def snapshot(self) -> Dict[str, Any]:
        return copy.deepcopy(self.state)

    def trial_budget(self) -> int:
        return self.config.population_size + (self.config.num_rounds - 1) * self.num_truncate

    def concurrency_cap(self) -> int:
        return self.config.population_size

    # Internals

    def _exited(self, trial_id: int) -> bool:
        return str(trial_id) in self.state["exited"]

    def _create(self, hparams: Dict[str, Any], start: int, parent: Optional[int]) -> List[Action]:
        trial_id = self.ctx.new_trial_id()
        target = start + self.config.length_per_round
        self.state["members"].append(trial_id)
        self.state["hparams"][str(trial_id)] = hparams
        self.state["length"][str(trial_id)] = target
        return [Create(trial_id, copy.deepcopy(hparams), parent=parent), Train(trial_id, target)]

    def _continue(self, trial_id: int) -> Train:
        key = str(trial_id)
        self.state["length"][key] += self.config.length_per_round
        return Train(trial_id, self.state["length"][key])

    def _end_round_if_ready(self) -> List[Action]:
        members = self.state["members"]
        if any(str(t) not in self.state["metrics"] for t in members):
            return []
        self.state["rounds"] += 1
        if self.state["rounds"] >= self.config.num_rounds:
            return [Close(t) for t in sorted(members) if not self._exited(t)]

        metrics = self.state["metrics"]
        ranked = sorted(members, key=lambda t: (metrics[str(t)], t))
        count = min(self.num_truncate, len(ranked) // 2)
        survivors, losers = ranked[: len(ranked) - count], ranked[len(ranked) - count:]
        actions: List[Action] = [Close(t) for t in losers if not self._exited(t)]

        self.state["members"] = []
        self.state["metrics"] = {}
        for parent in ranked[:count]:
            if not self._exited(parent):
                hparams = self.space.explore(
                    self.state["hparams"][str(parent)],
                    self.ctx.rng,
                    self.config.resample_probability,
                    self.config.perturb_factor,
                    self.ctx.sampler.resampler(self.space, self.ctx.rng) if self.ctx.sampler else None,
                )
                actions += self._create(hparams, self.state["length"][str(parent)], parent=parent)
        children = self.state["members"]
        for trial_id in survivors:
            if self._exited(trial_id):
                self.state["metrics"][str(trial_id)] = WORST
            else:
                actions.append(self._continue(trial_id))
        self.state["members"] = sorted(survivors + children)
        self._forget_non_members()
        return actions

    def _forget_non_members(self) -> None:
        keep = {str(t) for t in self.state["members"]}
        for table in ("hparams", "length", "exited"):
            self.state[table] = {k: v for k, v in self.state[table].items() if k in keep}
