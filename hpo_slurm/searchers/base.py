"""The contract every search method keeps.

A search method is a pure state machine: events in, actions out, no I/O and no clock. All of its state
lives in ``self.state``, a JSON-able dict, plus the ``Context`` it shares with the rest of the search:
the random generator's state and the next trial id (as Determined keeps its RNG next to the method
state). ``snapshot()`` of the method together with ``Context.snapshot()`` is the whole state, so
restoring both continues exactly where it left off and the same seed with the same events gives the
same actions. The brackets of a tournament share one ``Context``: one random stream, one id sequence.

Trial ids are assigned by the method (1, 2, 3, ... in creation order). Lengths are absolute, in the
searcher's unit. A ``Train(t, L)`` asks for trial ``t`` to be trained until length ``L`` and validated
there; the driver answers with ``on_validation(t, L, metric)`` (or ``on_early_exit``). A trial that has
validated and received neither another ``Train`` nor a ``Close`` is paused.

Metrics are raw values as reported: the method applies ``smaller_is_better`` itself and treats NaN and
infinities as the worst possible value.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, Optional

from hpo_slurm.core.rng import Rng
from hpo_slurm.core.types import Action, ExitReason

#: The signed metric of an early-exited trial, or of a NaN / infinite / missing metric.
WORST = sys.float_info.max


def signed_metric(value: Any, smaller_is_better: bool) -> float:
    """``value`` as a float where smaller is always better; non-numbers and non-finite values are WORST."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return WORST
    if not math.isfinite(number):
        return WORST
    return number if smaller_is_better else -number


class Context:
    """The random generator, trial-id counter and hyperparameter sampler one search shares across all
    of its parts. ``sampler`` is a ``searchers.samplers`` sampler; None draws uniformly (as the random
    sampler does) and keeps nothing."""

    def __init__(self, rng: Rng, next_trial_id: int = 1, sampler: Any = None):
        self.rng = rng
        self.next_trial_id = next_trial_id
        self.sampler = sampler

    @classmethod
    def from_seed(cls, seed: int, sampler: Any = None) -> "Context":
        return cls(Rng(seed), sampler=sampler)

    @classmethod
    def from_snapshot(cls, data: Dict[str, Any], sampler: Any = None) -> "Context":
        """The context ``snapshot()`` saved; ``sampler`` is built by the caller from the snapshot's
        ``"sampler"`` entry (absent for samplers that keep nothing)."""
        return cls(Rng(data["rng"]), data["next_trial_id"], sampler)

    def new_trial_id(self) -> int:
        trial_id = self.next_trial_id
        self.next_trial_id += 1
        return trial_id

    def sample(self, space: Any) -> Dict[str, Any]:
        """A new trial's hyperparameters from ``space`` (a ``config.space.Nested``)."""
        return space.sample(self.rng) if self.sampler is None else self.sampler.sample(space, self.rng)

    def snapshot(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"rng": self.rng.state, "next_trial_id": self.next_trial_id}
        sampler_state = self.sampler.snapshot() if self.sampler is not None else None
        if sampler_state is not None:
            data["sampler"] = sampler_state
        return data


class SearchMethod:
    """One search algorithm. Subclasses implement the callbacks; callers never mutate ``state``."""

    state: Dict[str, Any]

    def initial(self) -> List[Action]:
        """The actions that start the search. Called once, before any event."""
        raise NotImplementedError

    def on_created(self, trial_id: int) -> List[Action]:
        """The driver has recorded trial ``trial_id``."""
        return []

    def on_validation(self, trial_id: int, length: int, metric: float) -> List[Action]:
        """Trial ``trial_id`` reached ``length`` (the length of its outstanding Train) with ``metric``."""
        raise NotImplementedError

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        """Trial ``trial_id`` ended without completing its outstanding Train (or, rarely, while paused).
        The driver calls ``on_closed`` for it afterwards; the method must not ask it for more work."""
        raise NotImplementedError

    def on_closed(self, trial_id: int) -> List[Action]:
        """Trial ``trial_id`` is closed (after a Close action or an early exit)."""
        return []

    def extra_trial(self) -> List[Action]:
        """A new trial beyond the method's own concurrency, if it still has trials to create (a
        tournament hands it a slot another method no longer needs); else no actions."""
        return []

    def progress(self) -> float:
        """Fraction of the search done, from 0.0 to 1.0."""
        raise NotImplementedError

    def snapshot(self) -> Dict[str, Any]:
        """A JSON-able copy of the whole state (the shared Context is saved by its owner)."""
        raise NotImplementedError

    # Sizing, read by the wrapper's invariant checks and by preview.

    def trial_budget(self) -> int:
        """The most trials the method creates, not counting replacements of invalid-HP trials."""
        raise NotImplementedError

    def concurrency_cap(self) -> int:
        """The most trials it ever has with an outstanding Train at once."""
        raise NotImplementedError

    def brackets(self) -> Optional[List[Dict[str, Any]]]:
        """The bracket layout for successive-halving methods, else None."""
        return None
