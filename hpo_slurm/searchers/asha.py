"""``async_halving``: one bracket of asynchronous successive halving, as Determined's asha.go.

Rung ``k`` of ``n`` trains to ``max(int(max_length / divisor**(n-1-k)), 1)``. A trial that finishes a rung
is inserted into that rung's metrics, sorted best first (ties after earlier entries). Promotion is
asynchronous: ``int(len(rung) / divisor)`` of a rung's trials should have been promoted so far; the new
trial goes up at once if it ranks inside that number, otherwise the number's growth (if any) promotes the
best trial not yet promoted, which is PAUSED and resumes from its checkpoint. When nothing was promoted a
new trial is created, until ``max_trials`` exist; so the number of trials in flight stays constant.
Top-rung trials are closed. Once every trial has reported at rung 0, paused trials in rungs with nothing
outstanding below them are closed (Determined's closeOutRungs).

``stop_once`` (Determined's stopping variant) never pauses: a trial is kept going only if it ranks in the
top ``max(int(len(rung) / divisor), 1)`` (ties before earlier entries), otherwise it is closed at once.

An early-exited trial counts as the worst metric in its rung; if it is later promoted it counts as the
worst at the next rung too. An invalid-HP trial is forgotten (its metrics removed) and replaced.
When two rungs have the same length (tiny ``max_length``), a promotion between them carries the metric
up without training, instead of asking for a zero-length Train.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any, Dict, List, Optional, Tuple

from hpo_slurm.config.schema import SearcherConfig
from hpo_slurm.config.space import Nested
from hpo_slurm.core.types import Action, Close, Create, ExitReason, Train
from hpo_slurm.searchers.base import WORST, Context, SearchMethod, signed_metric


def rung_lengths(max_length: int, divisor: float, num_rungs: int) -> List[int]:
    """Absolute length of each rung, lowest first."""
    return [max(int(max_length / divisor ** (num_rungs - 1 - k)), 1) for k in range(num_rungs)]


def default_concurrency(max_concurrent_trials: int, divisor: float, num_rungs: int, max_trials: int) -> int:
    """Trials started at once: the cap if set, else enough for one trial to reach the top rung."""
    if max_concurrent_trials > 0:
        return min(max_concurrent_trials, max_trials)
    return max(min(int(divisor ** (num_rungs - 1)), max_trials), 1)


def _insert_index(metrics: List[list], metric: float, ties_first: bool) -> int:
    """Binary search in ``metrics`` (sorted by entry[1]) for where ``metric`` goes."""
    low, high = 0, len(metrics)
    while low < high:
        mid = (low + high) // 2
        value = metrics[mid][1]
        if value < metric or (value == metric and not ties_first):
            low = mid + 1
        else:
            high = mid
    return low


class AsyncHalving(SearchMethod):
    """One ASHA bracket. State: rungs (outstanding count, sorted [trial, metric, promoted] entries),
    each trial's current rung, and the trials that exited early or are closed."""

    def __init__(
        self,
        config: SearcherConfig,
        space: Nested,
        ctx: Context,
        state: Optional[Dict[str, Any]] = None,
        *,
        num_rungs: Optional[int] = None,
        max_trials: Optional[int] = None,
        max_concurrent_trials: Optional[int] = None,
    ):
        if config.divisor <= 1:
            raise ValueError(f"divisor must be greater than 1, got {config.divisor}")
        self.space = space
        self.ctx = ctx
        self.divisor = config.divisor
        self.smaller_is_better = config.smaller_is_better
        self.stop_once = config.stop_once
        self.num_rungs = config.num_rungs if num_rungs is None else num_rungs
        self.max_trials = config.max_trials if max_trials is None else max_trials
        cap = config.max_concurrent_trials if max_concurrent_trials is None else max_concurrent_trials
        self.lengths = rung_lengths(config.max_length, self.divisor, self.num_rungs)
        self.cap = default_concurrency(cap, self.divisor, self.num_rungs, self.max_trials)
        self.state = copy.deepcopy(state) if state else {
            "rungs": [{"outstanding": 0, "metrics": []} for _ in range(self.num_rungs)],
            "trial_rung": {},
            "early_exit": {},
            "closed": {},
            "invalid": 0,
            "closed_count": 0,
        }

    # Events

    def initial(self) -> List[Action]:
        actions: List[Action] = []
        for _ in range(self.cap):
            actions += self._create()
        return actions

    def on_validation(self, trial_id: int, length: int, metric: float) -> List[Action]:
        return self._report(trial_id, signed_metric(metric, self.smaller_is_better))

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        key = str(trial_id)
        rung_index = self.state["trial_rung"][key]
        running = all(entry[0] != trial_id for entry in self._rung(rung_index)["metrics"])
        self.state["early_exit"][key] = True
        self.state["closed"][key] = True
        if reason == ExitReason.INVALID_HP:
            self.state["invalid"] += 1
            if running:
                self._rung(rung_index)["outstanding"] -= 1
            for rung in self.state["rungs"][: rung_index + 1]:
                rung["metrics"] = [entry for entry in rung["metrics"] if entry[0] != trial_id]
            return self._create()
        if not running:  # stopped while paused: nothing to report, it may only free a close-out
            return self._close_out() if self._bottom_rung_full() else []
        return self._report(trial_id, WORST)

    def on_closed(self, trial_id: int) -> List[Action]:
        self.state["closed_count"] += 1
        return []

    def extra_trial(self) -> List[Action]:
        return self._create() if self._valid_created() < self.max_trials else []

    # Queries

    def progress(self) -> float:
        reported = len(self._rung(0)["metrics"])
        progress = reported / (1.2 * self.max_trials)
        if reported == self.max_trials:
            finished = (self.state["closed_count"] - self.state["invalid"]) / self.max_trials
            progress = max(finished, progress)
        return min(progress, 1.0)

    def snapshot(self) -> Dict[str, Any]:
        return pickle.loads(pickle.dumps(self.state, pickle.HIGHEST_PROTOCOL))  # a deep copy, 10x faster

    def trial_budget(self) -> int:
        return self.max_trials

    def concurrency_cap(self) -> int:
        return self.cap

    def brackets(self) -> List[Dict[str, Any]]:
        return [{
            "num_rungs": self.num_rungs,
            "rung_lengths": list(self.lengths),
            "max_trials": self.max_trials,
            "max_concurrent_trials": self.cap,
        }]

    # Internals

    def _rung(self, index: int) -> Dict[str, Any]:
        return self.state["rungs"][index]

    def _exited(self, trial_id: int) -> bool:
        return str(trial_id) in self.state["early_exit"]

    def _closed(self, trial_id: int) -> bool:
        return str(trial_id) in self.state["closed"]

    def _valid_created(self) -> int:
        return len(self.state["trial_rung"]) - self.state["invalid"]

    def _bottom_rung_full(self) -> bool:
        return len(self._rung(0)["metrics"]) == self.max_trials

    def _create(self) -> List[Action]:
        trial_id = self.ctx.new_trial_id()
        self.state["trial_rung"][str(trial_id)] = 0
        self._rung(0)["outstanding"] += 1
        return [Create(trial_id, self.ctx.sample(self.space)), Train(trial_id, self.lengths[0])]

    def _close(self, trial_id: int) -> Close:
        self.state["closed"][str(trial_id)] = True
        return Close(trial_id)

    def _move_up(self, trial_id: int, rung_index: int) -> None:
        self.state["trial_rung"][str(trial_id)] = rung_index + 1
        self._rung(rung_index + 1)["outstanding"] += 1

    def _report(self, trial_id: int, metric: float) -> List[Action]:
        """Trial ``trial_id`` finished its current rung with (signed) ``metric``."""
        if self.stop_once:
            return self._report_stopping(trial_id, metric)
        return self._report_promoting(trial_id, metric)

    def _report_promoting(self, trial_id: int, metric: float) -> List[Action]:
        rung_index = self.state["trial_rung"][str(trial_id)]
        rung = self._rung(rung_index)
        rung["outstanding"] -= 1
        actions: List[Action] = []
        trained = False
        if rung_index == self.num_rungs - 1:
            rung["metrics"].append([trial_id, metric, False])
            if not self._closed(trial_id):
                actions.append(self._close(trial_id))
        else:
            promotion = self._promotion(rung, trial_id, metric)
            if promotion is not None:
                promoted, promoted_metric = promotion
                self._move_up(promoted, rung_index)
                if self._closed(promoted):  # exited early (or closed out before an invalid trial left)
                    return self._report_promoting(promoted, WORST)
                if self.lengths[rung_index + 1] <= self.lengths[rung_index]:
                    return self._report_promoting(promoted, promoted_metric)
                actions.append(Train(promoted, self.lengths[rung_index + 1]))
                trained = True
        if not trained and self._valid_created() < self.max_trials:
            actions += self._create()
        if self._bottom_rung_full():
            actions += self._close_out()
        return actions

    def _promotion(self, rung: Dict[str, Any], trial_id: int, metric: float) -> Optional[Tuple[int, float]]:
        """Insert the result; return the (trial, metric) to promote now, if any (Determined's promotionsAsync)."""
        metrics = rung["metrics"]
        due_before = int(len(metrics) / self.divisor)
        due_now = int((len(metrics) + 1) / self.divisor)
        index = _insert_index(metrics, metric, ties_first=False)
        promote_now = index < due_now
        metrics.insert(index, [trial_id, metric, promote_now])
        if promote_now:
            return trial_id, metric
        if due_now != due_before and not metrics[due_before][2]:
            metrics[due_before][2] = True
            return metrics[due_before][0], metrics[due_before][1]
        return None

    def _close_out(self) -> List[Action]:
        """Close unpromoted trials in every rung that has nothing outstanding at or below it. A settled
        rung below the top that promoted nobody (too few trials for ``1/divisor`` of them to be a whole
        trial) first sends its best open trial up, so every bracket trains at least one trial to
        max_length."""
        actions: List[Action] = []
        for index, rung in enumerate(self.state["rungs"]):
            if rung["outstanding"] > 0:
                break
            best = None
            if index < self.num_rungs - 1 and not any(promoted for _, _, promoted in rung["metrics"]):
                best = next((entry for entry in rung["metrics"] if not self._closed(entry[0])), None)
                if best is not None:
                    best[2] = True
            for trial_id, _, promoted in rung["metrics"]:
                if not promoted and str(trial_id) not in self.state["closed"]:
                    actions.append(self._close(trial_id))
            if best is not None:
                self._move_up(best[0], index)
                if self.lengths[index + 1] <= self.lengths[index]:
                    return actions + self._report_promoting(best[0], best[1])
                return actions + [Train(best[0], self.lengths[index + 1])]
        return actions

    def _report_stopping(self, trial_id: int, metric: float) -> List[Action]:
        rung_index = self.state["trial_rung"][str(trial_id)]
        rung = self._rung(rung_index)
        rung["outstanding"] -= 1
        actions: List[Action] = []
        trained = False
        if rung_index == self.num_rungs - 1:
            rung["metrics"].append([trial_id, metric, False])
            if not self._exited(trial_id):
                actions.append(self._close(trial_id))
        else:
            keep = max(int((len(rung["metrics"]) + 1) / self.divisor), 1)
            index = _insert_index(rung["metrics"], metric, ties_first=True)
            promote = index < keep
            rung["metrics"].insert(index, [trial_id, metric, promote])
            if not self._exited(trial_id):
                if not promote:
                    actions.append(self._close(trial_id))
                else:
                    self._move_up(trial_id, rung_index)
                    if self.lengths[rung_index + 1] <= self.lengths[rung_index]:
                        return self._report_stopping(trial_id, metric)
                    actions.append(Train(trial_id, self.lengths[rung_index + 1]))
                    trained = True
        if not trained and self._valid_created() < self.max_trials:
            actions += self._create()
        return actions
