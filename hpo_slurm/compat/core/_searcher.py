"""``core_context.searcher``: Determined's (deprecated) searcher operations, as the run's target.

``operations()`` yields ONE ``SearcherOperation`` whose ``length`` is the run's target length (its
rung for ASHA, the whole length for single/random/grid); the run ends after it, and the next rung's
run yields the next length. Without ``searcher.max_length`` there is no length to give:
``operations()`` raises ``Unsupported``. ``op.report_progress(length)`` is checked and logged.
``op.report_completed(metric)`` records a validation of the searcher metric at ``op.length`` unless
this run already reported one there.

``SearcherMode.WorkersAskChief`` (the default): every rank iterates in step; the chief's op length is
broadcast to the others (their ops refuse ``report_*``, as in Determined). ``ChiefOnly``: only the chief
may call ``operations()``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Optional

from hpo_slurm.compat.core._enums import SearcherMode, Unit
from hpo_slurm.compat.core._run import CoreRun
from hpo_slurm.compat.errors import Unsupported

log = logging.getLogger("determined.core")


class SearcherOperation:
    """Train to ``length`` (absolute, in the search's unit), then ``report_completed(metric)``."""

    def __init__(self, run: CoreRun, length: int, is_chief: bool) -> None:
        self._run = run
        self._length = length
        self._is_chief = is_chief
        self._completed = False

    @property
    def length(self) -> int:
        return self._length

    def report_progress(self, length: float) -> None:
        if not self._is_chief:
            raise RuntimeError("you must only call op.report_progress() from the chief worker")
        if self._completed and length != self._length:
            raise RuntimeError("you must not call op.report_progress() after op.report_completed()")
        log.debug(f"op.report_progress({length})")

    def report_completed(self, searcher_metric: Any) -> None:
        if not self._is_chief:
            raise RuntimeError("you must only call op.report_completed() from the chief worker")
        if self._completed:
            raise RuntimeError("you may only call op.report_completed() once")
        self._completed = True
        name = self._run.searcher_metric
        if name not in self._run.validated.get(self._length, set()):
            self._run.trial.report_validation(self._length, {name: searcher_metric})
            self._run.validated.setdefault(self._length, set()).add(name)


class SearcherContext:
    """The searcher of one ``core.Context`` (see the module docstring)."""

    def __init__(self, run: CoreRun) -> None:
        self._run = run

    def operations(self, searcher_mode: SearcherMode = SearcherMode.WorkersAskChief,
                   auto_ack: bool = True) -> Iterator[SearcherOperation]:
        mode = SearcherMode(searcher_mode)
        run = self._run
        if run.target_length <= 0:
            raise Unsupported("searcher.operations() without searcher.max_length in the config",
                              "set searcher.max_length, or train to your own length and return when "
                              "core_context.preempt.should_preempt() says so")
        dist = run.dist
        if dist.rank == 0:
            op = SearcherOperation(run, run.target_length, True)
            if mode is SearcherMode.WorkersAskChief:
                dist.broadcast(op.length)
            yield op
            if not op._completed:
                raise RuntimeError("you must call op.report_completed() on each operation")
            if mode is SearcherMode.WorkersAskChief:
                dist.broadcast(None)
            return
        if mode is not SearcherMode.WorkersAskChief:
            raise RuntimeError("you cannot call searcher.operations(searcher_mode=ChiefOnly) from a non-chief worker.")
        while True:
            length = dist.broadcast(None)
            if length is None:
                return
            yield SearcherOperation(run, length, False)

    def acknowledge_out_of_ops(self) -> None:
        """Nothing to acknowledge."""

    def get_configured_units(self) -> Optional[Unit]:
        """The unit ``searcher.max_length`` names in the config (``{"epochs": 5}``, or ``searcher.unit``);
        None for a bare number or no max_length, as in Determined."""
        searcher = self._run.spec.experiment_config.get("searcher") or {}
        units = {"records": Unit.RECORDS, "epochs": Unit.EPOCHS, "batches": Unit.BATCHES}
        if "unit" in searcher:
            return units.get(searcher["unit"])
        max_length = searcher.get("max_length")
        if isinstance(max_length, dict) and len(max_length) == 1:
            return units.get(next(iter(max_length)))
        return None
