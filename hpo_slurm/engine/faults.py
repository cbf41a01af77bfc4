"""Crash points for testing crash safety on real processes.

``HPO_SLURM_CRASH_AT=after_submit:3`` kills the driver with SIGKILL the third time it passes the point
``after_submit``. Unset (always, outside tests), ``crash_point`` does nothing.
"""

from __future__ import annotations

import os
import signal
from typing import Dict

ENV = "HPO_SLURM_CRASH_AT"


class CrashPoints:
    def __init__(self, spec: str = ""):
        self._targets: Dict[str, int] = {}
        for item in filter(None, spec.split(",")):
            name, _, count = item.partition(":")
            self._targets[name.strip()] = int(count or 1)
        self._seen: Dict[str, int] = {}

    @classmethod
    def from_environment(cls) -> "CrashPoints":
        return cls(os.environ.get(ENV, ""))

    def reached(self, name: str) -> None:
        if name not in self._targets:
            return
        self._seen[name] = self._seen.get(name, 0) + 1
        if self._seen[name] >= self._targets[name]:
            os.kill(os.getpid(), signal.SIGKILL)
