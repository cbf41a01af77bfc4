"""What one driver tick changed, and how it becomes durable: in ONE store transaction (with a searcher
snapshot when ``engine.searcher_log`` says one is due). A decision is durable once this transaction
commits; only then does the driver act on it (submit, cancel, write files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Set

from hpo_slurm.experiment.store import Store


@dataclass
class TickChanges:
    """What one tick changed, written in one transaction. ``new_*`` name rows created this tick (written
    whole); ``trials``/``runs`` hold changed fields of older rows."""

    new_trials: List[int] = field(default_factory=list)
    trials: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    new_runs: List[str] = field(default_factory=list)
    runs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    metrics: List[Dict[str, Any]] = field(default_factory=list)
    events: List[Dict[str, Any]] = field(default_factory=list)
    experiment: Dict[str, Any] = field(default_factory=dict)
    searcher_events: List[Dict[str, Any]] = field(default_factory=list)
    cancel: List[str] = field(default_factory=list)  # run ids to cancel in the act phase
    touched_trials: Set[int] = field(default_factory=set)  # trials whose checkpoints to collect

    def empty(self) -> bool:
        return not (self.new_trials or self.trials or self.new_runs or self.runs or self.metrics
                    or self.events or self.experiment or self.searcher_events)

    def write(self, store: Store, trials: Dict[int, Dict[str, Any]], runs: Dict[str, Dict[str, Any]],
              progress: Callable[[], float]) -> None:
        """Write every change into ``store`` inside the caller's transaction; ``trials``/``runs`` are the
        driver's rows by id. ``progress()`` is recorded when the searcher saw events."""
        store.insert_trials(trials[t] for t in self.new_trials)
        store.update_trials(self.trials.items())
        store.insert_runs(runs[r] for r in self.new_runs)
        store.update_runs(self.runs.items())
        store.insert_metrics(self.metrics)
        store.append_events(self.events)
        if self.searcher_events:
            self.experiment["progress"] = progress()
        if self.experiment:
            store.update_experiment(**self.experiment)
        store.append_searcher_events(self.searcher_events)
