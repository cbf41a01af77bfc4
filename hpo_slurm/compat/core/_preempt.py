"""``core_context.preempt``: when the script should checkpoint and exit.

``should_preempt()`` is True once either holds:

- the run is asked to stop: the job is preempted or near its time limit, or the search no longer
  needs the run (``TrialContext.should_stop()``); the run then ends as stopped and is resumed (or
  not) by the driver;
- this run reported a validation at or past its nonzero target length: the searcher has the rung it
  asked for. This is how Determined 0.38's searchers stop a script that trains to its own length:
  ``adaptive_asha`` runs each rung as one run of the same script, which checkpoints, sees
  ``should_preempt()`` and returns; the next rung's run resumes from that checkpoint. With no target
  (no ``searcher.max_length``: ``target_length`` 0) the script trains as long as it decides.

``PreemptMode.WorkersAskChief`` (the default): every rank calls it in step and all get the chief's
answer (``should_stop``'s collective, then a broadcast of the chief's decision; several ranks need
torch.distributed initialized). ``ChiefOnly``: only the chief may call it (``RuntimeError`` on another
rank); no collective. ``WorkersAskMaster``: the process answers for itself, with no collective (a trial
of one process only: ``core.init`` refuses it on several ranks). ``auto_ack`` and
``acknowledge_preemption_signal()`` have nothing to acknowledge.
"""

from __future__ import annotations

import logging

from hpo_slurm.compat.core._enums import PreemptMode
from hpo_slurm.compat.core._run import CoreRun
from hpo_slurm.core.protocol import StopReason
from hpo_slurm.trial import stop_requested

log = logging.getLogger("determined.core")


class PreemptContext:
    """Preemption of one ``core.Context`` (see the module docstring)."""

    def __init__(self, run: CoreRun, mode: PreemptMode = PreemptMode.WorkersAskChief) -> None:
        self._run = run
        self._mode = PreemptMode(mode)

    def should_preempt(self, auto_ack: bool = True) -> bool:
        run = self._run
        if self._mode is PreemptMode.ChiefOnly and run.dist.rank != 0:
            raise RuntimeError("PreemptContext was configured with preempt_mode=ChiefOnly but "
                               "should_preempt() was called from a non-chief worker")
        if self._mode is PreemptMode.WorkersAskChief:
            stopping = run.trial.should_stop()  # a collective when a process group exists
            decision = stopping or run.reached_target()
            if run.dist.size > 1:
                decision = bool(run.dist.broadcast(decision if run.dist.rank == 0 else None))
        else:
            decision = self._stop_asked() or run.reached_target()
        if decision:
            log.info("should_preempt() is True: "
                     + (f"stop requested ({run.trial.stop_reason})" if run.trial.stop_reason else
                        f"length {run.target_length} reached"))
        return decision

    def _stop_asked(self) -> bool:
        """This rank's own answer, with no collective: a stop signal it received, or the driver's stop file."""
        run = self._run
        if run.trial.stop_reason is None and stop_requested(run.layout, run.spec.run_id):
            run.trial.request_stop(StopReason.SEARCH_STOPPED.value)
        return run.trial.stop_reason is not None

    def acknowledge_preemption_signal(self) -> None:
        """Nothing to acknowledge on hpo-slurm."""

    def start(self) -> "PreemptContext":
        return self

    def close(self) -> None:
        """Nothing to release."""
