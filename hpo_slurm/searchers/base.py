"""The contract every search method keeps.

A search method is a pure state machine: events in, actions out, no I/O and no clock. All of its state
lives in ``self.state``, a JSON-able dict with the random generator's state inside, so
``restore(snapshot())`` continues exactly where it left off and the same seed with the same events gives
the same actions.

Trial ids are assigned by the method (1, 2, 3, ... in creation order). Lengths are absolute, in the
searcher's unit. A ``Train(t, L)`` asks for trial ``t`` to be trained until length ``L`` and validated
there; the driver answers with ``on_validation(t, L, metric)`` (or ``on_early_exit``). A trial that has
validated and received neither another ``Train`` nor a ``Close`` is paused.

Metrics are raw values as reported: the method applies ``smaller_is_better`` itself and treats NaN and
infinities as the worst possible value.
"""

from __future__ import annotations

from typing import Any, Dict, List

from ..types import Action, ExitReason


class SearchMethod:
    """One search algorithm. Subclasses implement the callbacks; callers never mutate ``state``."""

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
        """Trial ``trial_id`` ended without completing its outstanding Train. The driver calls
        ``on_closed`` for it afterwards; the method must not ask it for more work."""
        raise NotImplementedError

    def on_closed(self, trial_id: int) -> List[Action]:
        """Trial ``trial_id`` is closed (after a Close action or an early exit)."""
        return []

    def progress(self) -> float:
        """Fraction of the search done, from 0.0 to 1.0."""
        raise NotImplementedError

    def snapshot(self) -> Dict[str, Any]:
        """A JSON-able copy of the whole state."""
        raise NotImplementedError
