"""How a search picks a new trial's hyperparameters: ``RandomSampler`` (uniform draws, Determined's
decisions) or ``TPESampler`` (a tree-structured Parzen estimator fitted as BOHB does).

A sampler belongs to the search's shared ``Context``; the ``Searcher`` wrapper tells it every trial's
creation, validations and end, whichever method runs the search, so the brackets of a tournament
share one model. Its whole state is JSON-able (``snapshot``), like every other part of a searcher.
"""

from __future__ import annotations

import math
import pickle
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from hpo_slurm.config.sampler_section import SamplerConfig
from hpo_slurm.config.space import Nested
from hpo_slurm.core.rng import Rng
from hpo_slurm.core.types import ExitReason
from hpo_slurm.searchers.base import WORST, signed_metric

if TYPE_CHECKING:  # numpy is imported only by searches that use the model
    from hpo_slurm.searchers.tpe_encoding import EncodedRows


class RandomSampler:
    """Uniform draws from the space. Stateless: its snapshot is None."""

    name = "random"

    def sample(self, space: Nested, rng: Rng) -> Dict[str, Any]:
        return space.sample(rng)

    def resampler(self, space: Nested, rng: Rng) -> Optional[Callable[[], Dict[str, Any]]]:
        """What PBT's explore step resamples leaves from: None means each leaf's own uniform draw."""
        return None

    def on_created(self, trial_id: int, hparams: Dict[str, Any]) -> None:
        pass

    def on_validation(self, trial_id: int, length: int, metric: Any) -> None:
        pass

    def on_early_exit(self, trial_id: int, reason: ExitReason, length: Optional[int]) -> None:
        """Trial ``trial_id`` ended early while training to ``length`` (None: it had no Train)."""

    def on_closed(self, trial_id: int) -> None:
        pass

    def snapshot(self) -> Optional[Dict[str, Any]]:
        return None


class TPESampler(RandomSampler):
    """BOHB's model-based draws, fitted on the longest length with ``2 x min_points`` results
    (``min_points``: ``min_points_in_model``, else the searched hyperparameters + 1). Results at shorter
    lengths are dropped once a longer one is modelled (the model never goes back to them); per length at
    most ``1.125 x cap`` results are kept (``cap``: ``max_points_in_model``, at least ``2 x
    min_points``): past that, the best ``top_n_percent`` share and the latest of the rest survive. So
    the cost of a draw stays bounded however long the search runs, and memory is that plus the
    hyperparameters of the open trials. Trials still training (created, no result yet) are handed to
    the model as pending points (constant liar), so many trials created at once spread out instead of
    piling onto one point.

    State (the snapshot): ``hparams`` of every open trial and of every trial a kept result names;
    ``open`` trial ids; ``pending`` (open trials without a result yet); ``results``: length ->
    [[signed metric, trial id], ...] in arrival order. How many kept results name each trial is
    counted from ``results`` when the sampler is built, and kept up to date, not saved."""

    name = "tpe"

    def __init__(self, options: SamplerConfig, smaller_is_better: bool, searched: int,
                 state: Optional[Dict[str, Any]] = None):
        """``searched``: how many hyperparameters the space searches (its non-const leaves)."""
        self.options = options
        self.smaller_is_better = smaller_is_better
        self.min_points = options.min_points(searched)
        self.cap = options.cap(searched)
        # a copy: a restored sampler never changes the snapshot it came from
        self.state: Dict[str, Any] = pickle.loads(pickle.dumps(state, pickle.HIGHEST_PROTOCOL)) if state else {
            "hparams": {}, "open": {}, "pending": [], "results": {}}
        self._refs: Dict[str, int] = {}  # trial id -> how many kept results name it
        self._encoded: Optional[EncodedRows] = None  # derived from the state, never saved
        for entries in self.state["results"].values():
            for _, trial_id in entries:
                self._refs[str(trial_id)] = self._refs.get(str(trial_id), 0) + 1

    # ---- drawing ----------------------------------------------------------------------------------
    def sample(self, space: Nested, rng: Rng) -> Dict[str, Any]:
        """A uniform draw with probability ``random_fraction`` (and while no length has enough results),
        else the model's pick."""
        if rng.random() < self.options.random_fraction:
            return space.sample(rng)
        picked = self._suggest(space, rng.next_u64())
        return picked if picked is not None else space.sample(rng)

    def resampler(self, space: Nested, rng: Rng) -> Optional[Callable[[], Dict[str, Any]]]:
        """PBT's explore step resamples leaves from one draw of this sampler, made on first use."""
        drawn: List[Dict[str, Any]] = []

        def draw() -> Dict[str, Any]:
            if not drawn:
                drawn.append(self.sample(space, rng))
            return drawn[0]

        return draw

    def _suggest(self, space: Nested, seed: int) -> Optional[Dict[str, Any]]:
        """The model's pick, fitted on the longest length with enough results (``tpe.suggest``'s
        rule: at least twice ``min_points_in_model``); only that length's results are handed over,
        as rows encoded once per trial and kept while the sampler keeps the trial's hyperparameters."""
        from hpo_slurm.searchers import tpe
        from hpo_slurm.searchers.tpe_encoding import EncodedRows, Encoding

        length = self._longest_ready()
        if length is None:
            return None
        if self._encoded is None or self._encoded.encoding.space is not space:
            self._encoded = EncodedRows(Encoding(space))
        entries = self.state["results"][length]
        hparams = self.state["hparams"]
        encoded = self._encoded
        return tpe.suggest_encoded(encoded.encoding, self.options, [signed for signed, _ in entries],
                                   encoded.rows([trial_id for _, trial_id in entries], hparams),
                                   encoded.rows(self.state["pending"], hparams), seed)

    # ---- what the search tells it -----------------------------------------------------------------
    def on_created(self, trial_id: int, hparams: Dict[str, Any]) -> None:
        key = str(trial_id)
        self.state["hparams"][key] = hparams
        self.state["open"][key] = True
        self.state["pending"].append(trial_id)

    def on_validation(self, trial_id: int, length: int, metric: Any) -> None:
        self._record(trial_id, length, signed_metric(metric, self.smaller_is_better))

    def on_early_exit(self, trial_id: int, reason: ExitReason, length: Optional[int]) -> None:
        """A trial that failed or could not train counts as the worst result where it was headed (as
        BOHB counts a crashed run; a trial without target, NO_TARGET, where open-ended results go); one
        the user cancelled, or one that had no Train, says nothing about its hyperparameters."""
        if reason in (ExitReason.ERRORED, ExitReason.INVALID_HP) and length is not None:
            self._record(trial_id, length, WORST)

    def on_closed(self, trial_id: int) -> None:
        key = str(trial_id)
        self.state["open"].pop(key, None)
        if trial_id in self.state["pending"]:
            self.state["pending"].remove(trial_id)
        self._forget_if_unused(key)

    def snapshot(self) -> Dict[str, Any]:
        return pickle.loads(pickle.dumps(self.state, pickle.HIGHEST_PROTOCOL))  # a deep copy, fast

    # ---- bookkeeping ------------------------------------------------------------------------------
    def _record(self, trial_id: int, length: int, signed: float) -> None:
        key = str(trial_id)
        if key not in self.state["open"]:
            raise ValueError(f"a result of trial {trial_id}, which the sampler does not know as open")
        if trial_id in self.state["pending"]:
            self.state["pending"].remove(trial_id)
        modelled = self._longest_ready()
        if modelled is not None and length < int(modelled):
            return  # shorter than the length the model fits: never read again
        results = self.state["results"].setdefault(str(length), [])
        results.append([signed, trial_id])
        self._refs[key] = self._refs.get(key, 0) + 1
        if len(results) >= self.cap + max(1, self.cap // 8):
            self._prune(str(length))
        if len(results) >= 2 * self.min_points:  # ready: shorter lengths are never modelled again
            for shorter in [other for other in self.state["results"] if int(other) < length]:
                self._drop(self.state["results"].pop(shorter))

    def _longest_ready(self) -> Optional[str]:
        """The longest length with enough results to fit the model, or None."""
        ready = [length for length, entries in self.state["results"].items() if len(entries) >= 2 * self.min_points]
        return max(ready, key=int) if ready else None

    def _prune(self, length: str) -> None:
        """Keep ``max_points_in_model`` results at ``length``: the best ``top_n_percent`` share and the
        latest of the others; the hyperparameters of trials no longer used are dropped."""
        results = self.state["results"][length]
        cap = self.cap
        best_count = max(1, math.ceil(cap * self.options.top_n_percent / 100.0))
        best = set(sorted(range(len(results)), key=lambda i: (results[i][0], i))[:best_count])
        others = [i for i in range(len(results)) if i not in best][-(cap - best_count):]
        keep = best | set(others)
        self.state["results"][length] = [entry for i, entry in enumerate(results) if i in keep]
        self._drop([entry for i, entry in enumerate(results) if i not in keep])

    def _drop(self, entries: List[List[Any]]) -> None:
        """Results no longer kept: their trials' hyperparameters go once nothing uses them."""
        refs = self._refs
        for _, trial_id in entries:
            key = str(trial_id)
            refs[key] -= 1
            self._forget_if_unused(key)

    def _forget_if_unused(self, key: str) -> None:
        if key not in self.state["open"] and self._refs.get(key, 0) <= 0:
            self._refs.pop(key, None)
            self.state["hparams"].pop(key, None)
            if self._encoded is not None:
                self._encoded.forget(int(key))


def make_sampler(options: SamplerConfig, smaller_is_better: bool, searched: int,
                 state: Optional[Dict[str, Any]] = None) -> RandomSampler:
    """The sampler ``options`` name for a space of ``searched`` hyperparameters, continuing from
    ``state`` (its snapshot) when given."""
    if options.name == "tpe":
        return TPESampler(options, smaller_is_better, searched, state)
    return RandomSampler()
