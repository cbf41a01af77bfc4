"""``Searcher``: the driver's only handle on a search method, and the bookkeeping every method shares.

The driver's side of the protocol:

* ``initial()`` once; then for every action, in order: on ``Create(t, ...)`` record the trial and call
  ``on_created(t)``; on ``Train(t, L)`` run trial ``t`` to length ``L`` and call ``on_validation(t, L,
  metric)``; on ``Close(t)`` stop the trial and call ``on_closed(t)``; on ``Shutdown`` stop.
* A trial that ends without completing its Train (errors beyond max_restarts, invalid hyperparameters,
  cancelled by the user): ``on_early_exit(t, reason)`` then ``on_closed(t)``. An exit reported after the
  searcher already sent ``Close(t)`` is ignored.
* Actions returned by any call are handled the same way; ``Create(t)`` always comes before ``Train(t)``.
* ``Train(t, NO_TARGET)`` (only a trial's first Train, from a search without max_length): train ``t`` as
  long as its own code decides, then call ``on_validation(t, NO_TARGET, metric)`` with the metric of
  its last validation.

Events that break the protocol raise ``ValueError``. Actions that would break the search's invariants
(more trials than the budget, more in flight than the cap, work for a closed trial) raise
``RuntimeError``: they are bugs in a method. ``Shutdown`` comes exactly once, after the last trial closes;
it is a failure when no trial completed (was closed by the searcher rather than exiting early).
"""

from __future__ import annotations

import copy
import pickle
from typing import Any, Dict, List, Optional

from hpo_slurm.config.schema import NO_TARGET
from hpo_slurm.core.types import Action, Close, Create, ExitReason, Shutdown, Train
from hpo_slurm.searchers.base import Context, SearchMethod

_FRESH = {
    # Open trials only: id -> {"train": outstanding length or None, "length", "created", "close_sent", "exit"}.
    # Ids are handed out in sequence, so a known id without an entry is a closed trial.
    "trials": {},
    "requested": 0,
    "in_flight": 0,  # with an outstanding Train
    "invalid": 0,
    "completed": 0,
    "started": False,
    "shutdown": False,
}


class Searcher:
    """One search: a method, its shared Context, and per-trial protocol bookkeeping."""

    def __init__(self, name: str, method: SearchMethod, ctx: Context, state: Optional[Dict[str, Any]] = None):
        self.name = name
        self.method = method
        self.ctx = ctx
        self.state = copy.deepcopy(state) if state else copy.deepcopy(_FRESH)

    # Events

    def initial(self) -> List[Action]:
        if self.state["started"]:
            raise ValueError("initial() was already called for this search")
        self.state["started"] = True
        actions = self._emit(self.method.initial())
        if not self.state["trials"]:
            actions += self._shutdown()
        return actions

    def on_created(self, trial_id: int) -> List[Action]:
        trial = self._trial(trial_id, "on_created")
        if trial["created"]:
            raise ValueError(f"trial {trial_id} was reported created twice")
        trial["created"] = True
        return self._emit(self.method.on_created(trial_id))

    def on_validation(self, trial_id: int, length: int, metric: Any) -> List[Action]:
        trial = self._live_trial(trial_id, "on_validation")
        if trial["train"] is None:
            raise ValueError(f"trial {trial_id} reported a validation at {length} but has no outstanding Train")
        if length != trial["train"]:
            raise ValueError(
                f"trial {trial_id} reported a validation at {length}, but its Train asks for {trial['train']}"
            )
        self._finish_train(trial)
        trial["length"] = length
        if self.ctx.sampler is not None:
            self.ctx.sampler.on_validation(trial_id, length, metric)
        return self._emit(self.method.on_validation(trial_id, length, metric))

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        reason = ExitReason(reason)
        trial = self._trial(trial_id, "on_early_exit", closed="reported an exit after it was closed")
        if trial["exit"] is not None:
            raise ValueError(f"trial {trial_id} reported an exit twice")
        if trial["close_sent"]:
            return []  # the searcher needed nothing more from it
        if not trial["created"]:
            raise ValueError(f"trial {trial_id} reported an exit before on_created")
        if self.ctx.sampler is not None:
            self.ctx.sampler.on_early_exit(trial_id, reason, trial["train"])
        self._finish_train(trial)
        trial["exit"] = reason.value
        if reason == ExitReason.INVALID_HP:
            self.state["invalid"] += 1
        return self._emit(self.method.on_early_exit(trial_id, reason))

    def on_closed(self, trial_id: int) -> List[Action]:
        trial = self._trial(trial_id, "on_closed", closed="was closed twice")
        if not trial["close_sent"] and trial["exit"] is None:
            raise ValueError(
                f"trial {trial_id} was closed without a Close action or an early exit (report on_early_exit first)"
            )
        del self.state["trials"][str(trial_id)]
        if self.ctx.sampler is not None:
            self.ctx.sampler.on_closed(trial_id)
        actions = self._emit(self.method.on_closed(trial_id))
        if not self.state["trials"]:
            actions += self._shutdown()
        return actions

    # Queries

    @property
    def is_shutdown(self) -> bool:
        return self.state["shutdown"]

    def progress(self) -> float:
        if self.state["shutdown"]:
            return 1.0
        return max(0.0, min(self.method.progress(), 1.0))

    def snapshot(self) -> Dict[str, Any]:
        return {
            "searcher": self.name,
            "context": self.ctx.snapshot(),
            "method": self.method.snapshot(),
            "wrapper": pickle.loads(pickle.dumps(self.state, pickle.HIGHEST_PROTOCOL)),  # a deep copy, fast
        }

    def brackets(self) -> Optional[List[Dict[str, Any]]]:
        """The bracket layout (adaptive_asha, async_halving), as the method itself computed it."""
        return self.method.brackets()

    def trial_budget(self) -> int:
        return self.method.trial_budget()

    def concurrency_cap(self) -> int:
        return self.method.concurrency_cap()

    # Internals

    def _trial(self, trial_id: int, event: str, closed: str = "is closed") -> Dict[str, Any]:
        trial = self.state["trials"].get(str(trial_id))
        if trial is None:
            if isinstance(trial_id, int) and 1 <= trial_id < self.ctx.next_trial_id:
                raise ValueError(f"{event}: trial {trial_id} {closed}")
            raise ValueError(f"{event}: unknown trial {trial_id}")
        return trial

    def _live_trial(self, trial_id: int, event: str) -> Dict[str, Any]:
        trial = self._trial(trial_id, event)
        if not trial["created"]:
            raise ValueError(f"{event}: trial {trial_id} was never reported created (call on_created first)")
        if trial["close_sent"] or trial["exit"] is not None:
            raise ValueError(f"{event}: trial {trial_id} is closed")
        return trial

    def _finish_train(self, trial: Dict[str, Any]) -> None:
        if trial["train"] is not None:
            trial["train"] = None
            self.state["in_flight"] -= 1

    def _shutdown(self) -> List[Action]:
        if self.state["shutdown"]:
            raise RuntimeError("the search shut down twice")
        self.state["shutdown"] = True
        return [Shutdown(failure=self.state["completed"] == 0)]

    def _emit(self, actions: List[Action]) -> List[Action]:
        """Check and record the method's actions before they reach the driver."""
        if actions and self.state["shutdown"]:
            raise RuntimeError(f"{self.name}: actions after Shutdown: {actions}")
        for action in actions:
            if isinstance(action, Create):
                self._record_create(action)
            elif isinstance(action, Train):
                self._record_train(action)
            elif isinstance(action, Close):
                self._record_close(action)
            else:
                raise RuntimeError(f"{self.name}: unexpected action {action!r}")
        return list(actions)

    def _record_create(self, action: Create) -> None:
        key = str(action.trial_id)
        if key in self.state["trials"]:
            raise RuntimeError(f"{self.name}: trial {action.trial_id} created twice")
        self.state["trials"][key] = {"train": None, "length": 0, "created": False, "close_sent": False, "exit": None}
        if self.ctx.sampler is not None:
            self.ctx.sampler.on_created(action.trial_id, action.hparams)
        self.state["requested"] += 1
        valid = self.state["requested"] - self.state["invalid"]
        if valid > self.method.trial_budget():
            raise RuntimeError(f"{self.name}: more than {self.method.trial_budget()} trials")

    def _record_train(self, action: Train) -> None:
        trial = self.state["trials"].get(str(action.trial_id))
        if trial is None or trial["close_sent"] or trial["exit"] is not None:
            raise RuntimeError(f"{self.name}: Train for a trial that is not open: {action!r}")
        if trial["train"] is not None:
            raise RuntimeError(f"{self.name}: second Train for trial {action.trial_id}: {action!r}")
        if action.length == NO_TARGET and trial["length"] != 0:
            raise RuntimeError(f"{self.name}: a Train without target after validations: {action!r}")
        if action.length != NO_TARGET and action.length <= trial["length"]:
            raise RuntimeError(f"{self.name}: Train does not go past length {trial['length']}: {action!r}")
        trial["train"] = action.length
        self.state["in_flight"] += 1
        if self.state["in_flight"] > self.method.concurrency_cap():
            raise RuntimeError(f"{self.name}: more than {self.method.concurrency_cap()} trials in flight")

    def _record_close(self, action: Close) -> None:
        trial = self.state["trials"].get(str(action.trial_id))
        if trial is None or trial["close_sent"] or trial["exit"] is not None:
            raise RuntimeError(f"{self.name}: Close for a trial that is not open: {action!r}")
        if trial["train"] is not None:
            raise RuntimeError(f"{self.name}: Close for a trial with an outstanding Train: {action!r}")
        trial["close_sent"] = True
        self.state["completed"] += 1
