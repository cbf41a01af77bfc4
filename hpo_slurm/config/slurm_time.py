"""Slurm's time limits as a config gives them: minutes, or Slurm's own forms, read into whole minutes."""

from __future__ import annotations

import re
from typing import Any

from hpo_slurm.config.checks import Checker, is_int, show

_TIME_RE = re.compile(r"(?:([0-9]{1,12})-)?([0-9]{1,12})(?::([0-9]{1,12}))?(?::([0-9]{1,12}))?")
MAX_TIME_MINUTES = 2**31 - 1  # Slurm keeps time limits in 32 bits
_TIME_FORMS = 'minutes, "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS"'


def slurm_time_minutes(ck: Checker, value: Any, path: str) -> int:
    """A Slurm time limit in whole minutes, seconds rounded up."""
    seconds = None
    if is_int(value):
        seconds = value * 60
    elif isinstance(value, str):
        match = _TIME_RE.fullmatch(value.strip())
        if match:
            days, first, second, third = match.groups()
            if days is not None:  # D-HH[:MM[:SS]]
                h, m, s = int(first), int(second or 0), int(third or 0)
                if h < 24 and m < 60 and s < 60:
                    seconds = ((int(days) * 24 + h) * 60 + m) * 60 + s
            elif third is not None:  # HH:MM:SS
                if int(second) < 60 and int(third) < 60:
                    seconds = (int(first) * 60 + int(second)) * 60 + int(third)
            elif second is not None:  # MM:SS
                if int(second) < 60:
                    seconds = int(first) * 60 + int(second)
            else:  # MM
                seconds = int(first) * 60
    if seconds is None:
        ck.fail(path, f"expected a Slurm time limit ({_TIME_FORMS}), got {show(value)}")
    if seconds <= 0:
        ck.fail(path, f"expected a time limit of at least 1 minute, got {show(value)}")
    if seconds > MAX_TIME_MINUTES * 60:
        ck.fail(path, f"expected a time limit of at most {MAX_TIME_MINUTES:,} minutes, got {show(value)}")
    return -(-seconds // 60)
