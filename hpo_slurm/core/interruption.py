"""Why a job was told to stop before its run's target: preempted, or at its time limit, decided from
facts rather than from how long the trial has been running.

In the job, when a stop signal comes (``stop_reason``):

1. Slurm's own record of the job (``scontrol show job``, one query per process that takes the signal,
   made after the signal has been passed on to the trial): a job Slurm is preempting has a
   ``PreemptTime``, or an ``EndTime`` moved before its ``StartTime`` plus ``TimeLimit`` (Slurm cuts the
   allocation to the end of its GraceTime, and may show that before the PreemptTime); otherwise its
   ``EndTime`` says how much time the allocation has left.
2. The time left in the allocation. Slurm sends the time-limit warning ``signal_delay_s`` before the
   end (up to a minute early: its event resolution) and SIGTERM at it, so a signal that comes with more
   time left than ``time_limit_window`` can only be a preemption (or a cancellation, which stops the
   run the same way); one inside it is the time limit.
3. With no Slurm to ask (local processes, or a controller that does not answer within
   ``SCONTROL_TIMEOUT_S``), the job's own clock: the start of this attempt plus the run's time limit,
   which the job exports to every process of the trial as ``HPO_SLURM_ALLOCATION_END``
   (``export_allocation_end``), allowing ``START_SKEW_S`` for the job's start-up.

Each attempt that stops for either reason leaves a line in ``runs/<run>/interruptions.jsonl``
(``record_interruption``): a job Slurm requeues runs again under the same id and its next attempt
overwrites the result, so that is where the driver learns how the earlier attempts ended
(``interruptions_by_attempt``). Sweep tasks, which requeue themselves at their time limit, are counted
right this way too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional

from hpo_slurm.core.fsio import append_line
from hpo_slurm.core.protocol import StopReason

ALLOCATION_END_ENV = "HPO_SLURM_ALLOCATION_END"  # epoch seconds at which the job's allocation ends
INTERRUPTIONS_FILE = "interruptions.jsonl"
SLURM_SIGNAL_EARLY_S = 60.0  # Slurm may send a job's --signal up to this much before the time asked
START_SKEW_S = 30.0  # the attempt's recorded start lags Slurm's StartTime by the job's own start-up
SCONTROL_TIMEOUT_S = 5.0


def export_allocation_end(started: float, time_limit_s: Optional[float],
                          environ: "os._Environ[str] | Dict[str, str]") -> None:
    """Put when this attempt's allocation ends (``started`` + ``time_limit_s``) into ``environ``, the
    job's environment its trial processes inherit; without a time limit, remove any stale value."""
    if time_limit_s:
        environ[ALLOCATION_END_ENV] = f"{started + time_limit_s:.3f}"
    else:
        environ.pop(ALLOCATION_END_ENV, None)


def time_left(environ: Mapping[str, str], now: float) -> Optional[float]:
    """Seconds from ``now`` to the end of the job's allocation (None: no limit known)."""
    try:
        return float(environ[ALLOCATION_END_ENV]) - now
    except (KeyError, ValueError):
        return None


def time_limit_window(signal_delay_s: float, skew_s: float = START_SKEW_S) -> float:
    """How much time may be left when Slurm's time-limit warning or final SIGTERM arrives, by a clock
    that may run ``skew_s`` late (0 for Slurm's own EndTime)."""
    return signal_delay_s + SLURM_SIGNAL_EARLY_S + skew_s


@dataclass(frozen=True)
class SlurmRecord:
    """What Slurm records of a job: whether it is being preempted, and when its allocation ends."""

    preempting: bool  # PreemptTime set, or the allocation cut short of its time limit
    end: Optional[float]  # epoch seconds; None when Slurm gives none


def stop_reason(signum: int, seconds_left: Optional[float], signal_delay_s: float,
                record: Optional[SlurmRecord], now: float) -> StopReason:
    """``PREEMPTED`` or ``TIME_LIMIT`` for stop signal ``signum`` received at ``now`` (see the module's
    docstring): from Slurm's ``record`` of the job when there is one, else from ``seconds_left`` in the
    allocation by the job's own clock (None: no time limit known)."""
    if record is not None:
        if record.preempting:
            return StopReason.PREEMPTED
        if record.end is not None:
            left = record.end - now
            return StopReason.PREEMPTED if left > time_limit_window(signal_delay_s, 0.0) else StopReason.TIME_LIMIT
    if seconds_left is None:  # no limit known: only the warning signal can be the time limit's
        return StopReason.PREEMPTED if signum == signal.SIGTERM else StopReason.TIME_LIMIT
    return StopReason.PREEMPTED if seconds_left > time_limit_window(signal_delay_s) else StopReason.TIME_LIMIT


def slurm_record(environ: Mapping[str, str]) -> Optional[SlurmRecord]:
    """Slurm's record of this job (``scontrol show job``), or None outside a Slurm job and when
    ``scontrol`` cannot answer within ``SCONTROL_TIMEOUT_S`` (the job's clock decides then)."""
    job_id = environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                               timeout=SCONTROL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_record(shown.stdout) if shown.returncode == 0 else None


def parse_record(scontrol_line: str) -> Optional[SlurmRecord]:
    """The record in one line of ``scontrol show job -o`` (None: not such a line). ``PreemptTime`` is
    ``None`` until Slurm preempts the job; ``EndTime`` is local time (``2026-12-05T14:52:18``)."""
    fields = dict(field.partition("=")[::2] for field in scontrol_line.split() if "=" in field)
    if "JobId" not in fields:
        return None
    end, start, limit = _moment(fields.get("EndTime")), _moment(fields.get("StartTime")), _seconds(fields.get("TimeLimit"))
    cut_short = None not in (end, start, limit) and end < start + limit - 1  # type: ignore[operator]
    preempt_time = fields.get("PreemptTime", "None") not in ("", "None", "Unknown")
    return SlurmRecord(preempting=preempt_time or cut_short, end=end)


def _moment(text: Optional[str]) -> Optional[float]:
    """``2026-12-05T14:52:18`` (local time) as epoch seconds; None for ``Unknown``, ``None`` or nothing."""
    try:
        return time.mktime(time.strptime(text or "", "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _seconds(text: Optional[str]) -> Optional[float]:
    """A Slurm time limit (``1-02:03:04``, ``02:03:04``, ``03:04``) in seconds; None for ``UNLIMITED``,
    ``Partition_Limit`` or nothing."""
    days, _, clock = (text or "").rpartition("-")
    parts = clock.split(":")
    try:
        values = [int(part) for part in parts]
        whole_days = int(days) if days else 0
    except ValueError:
        return None
    if not 2 <= len(values) <= 3:
        return None
    hours, minutes, seconds = ([0] * (3 - len(values)) + values)
    return float(((whole_days * 24 + hours) * 60 + minutes) * 60 + seconds)


def record_interruption(run_dir: Path, attempt: int, reason: str) -> None:
    """Note in the run's folder that its attempt ``attempt`` stopped for ``reason`` (a StopReason value)."""
    append_line(run_dir / INTERRUPTIONS_FILE, json.dumps({"attempt": attempt, "reason": reason, "time": time.time()}))


def interruptions_by_attempt(run_dir: Path) -> Dict[int, str]:
    """Attempt -> why it stopped, from ``record_interruption``'s lines (a line cut short is skipped; no
    file: none)."""
    try:
        text = (run_dir / INTERRUPTIONS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    found: Dict[int, str] = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
            found[int(record["attempt"])] = str(record["reason"])
        except (ValueError, KeyError, TypeError):
            continue
    return found
