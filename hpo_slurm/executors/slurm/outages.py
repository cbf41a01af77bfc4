"""What the driver's log says while a Slurm command does not answer: one warning when a command
(``sacct``, ``squeue``, ``scontrol``) starts failing, saying what the driver does meanwhile, a
reminder every ``REMIND_S`` while it keeps failing, and one line when it answers again, with how long
it was out. A controller restarted for minutes or an accounting daemon that is down then costs a few
lines, not one per poll."""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Tuple

log = logging.getLogger("hpo_slurm.executors.slurm")

REMIND_S = 300.0


class Outages:
    """The commands failing now: name -> (monotonic time of the first failure in a row, time of the
    last line logged about it). ``clock`` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._down: Dict[str, Tuple[float, float]] = {}

    def failed(self, what: str, error: str, meanwhile: str) -> None:
        """``what`` failed with ``error``: a warning the first time in a row (``meanwhile``: what the
        driver does until it answers) and every REMIND_S after."""
        now = self.clock()
        if what not in self._down:
            self._down[what] = (now, now)
            log.warning("%s does not answer (%s): %s", what, error, meanwhile)
            return
        since, said = self._down[what]
        if now - said >= REMIND_S:
            self._down[what] = (since, now)
            log.warning("%s still does not answer after %.0f s (%s): %s", what, now - since, error, meanwhile)

    def answered(self, what: str) -> None:
        """``what`` answered: one line if it had been failing."""
        if what in self._down:
            since, _ = self._down.pop(what)
            log.info("%s answers again after %.0f s", what, self.clock() - since)

    def describe(self) -> Optional[str]:
        """The commands failing now, on one line (``sacct does not answer (for 61 s)``), or None."""
        now = self.clock()
        down = [f"{what} does not answer (for {now - since:.0f} s)" for what, (since, _) in sorted(self._down.items())]
        return "; ".join(down) or None

    def seconds_down(self, what: str) -> float:
        """How long ``what`` has failed in a row; 0 when it answers."""
        return self.clock() - self._down[what][0] if what in self._down else 0.0
