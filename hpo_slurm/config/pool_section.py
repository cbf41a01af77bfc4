"""``slurm.pool``: a pool of worker jobs that run a search's runs one after another, so a rung
continuation starts on a worker that already holds its GPUs instead of waiting in the queue again.

    slurm:
      pool:
        workers: 4          # at most this many worker jobs at once (each sized for one trial)
        time: "4:00:00"     # each worker job's time limit (Slurm's forms; default: slurm.time)
        idle_timeout: 120   # a worker with nothing to do this long ends (seconds, or "90s", "5m", "1h")

The local executor reads the same setting: its workers are that many reused local processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from hpo_slurm.config.checks import Checker, is_number, join, show
from hpo_slurm.config.slurm_time import slurm_time_minutes

POOL_KEYS = ("workers", "time", "idle_timeout")
DEFAULT_IDLE_TIMEOUT_S = 120.0
MAX_POOL_WORKERS = 10_000
MAX_IDLE_TIMEOUT_S = 7 * 24 * 3600.0
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smh]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class PoolSettings:
    """``workers``: the most worker jobs alive at once; ``time_minutes``: each worker job's time limit
    (None: ``slurm.time``, else the partition's); ``idle_timeout_s``: how long a worker waits for work
    before it ends and gives its GPUs back."""

    workers: int
    time_minutes: Optional[int] = None
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S


def worker_time_minutes(pool: PoolSettings, slurm_time_minutes: Optional[int]) -> Optional[int]:
    """A worker job's time limit: the pool's own, else ``slurm.time``'s, else None (the partition's)."""
    return pool.time_minutes or slurm_time_minutes


def parse_pool(ck: Checker, value: Any, path: str) -> Optional[PoolSettings]:
    """``slurm.pool`` as ``PoolSettings``; null or absent is no pool. ``workers`` is required."""
    if value is None:
        return None
    section = ck.mapping(value, path)
    ck.check_keys(section, path, POOL_KEYS)
    workers = ck.integer(ck.required(section, "workers", path, "how many worker jobs the pool may hold"),
                         join(path, "workers"), minimum=1, maximum=MAX_POOL_WORKERS)
    time_minutes = None
    if section.get("time") is not None:
        time_minutes = slurm_time_minutes(ck, section["time"], join(path, "time"))
    idle = DEFAULT_IDLE_TIMEOUT_S
    if section.get("idle_timeout") is not None:
        idle = _duration_s(ck, section["idle_timeout"], join(path, "idle_timeout"))
    return PoolSettings(workers, time_minutes, idle)


def _duration_s(ck: Checker, value: Any, path: str) -> float:
    """Seconds from a number of seconds or a string such as ``"90s"``, ``"5m"``, ``"1.5h"``."""
    seconds = None
    if is_number(value):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds is None:
        ck.fail(path, f'expected seconds, or a duration such as "90s", "5m" or "1h", got {show(value)}')
    if not 0 < seconds <= MAX_IDLE_TIMEOUT_S:
        ck.fail(path, f"expected more than 0 seconds and at most a week, got {show(value)}")
    return seconds
