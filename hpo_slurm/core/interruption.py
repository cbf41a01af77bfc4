"""Why a job was told to stop before its run's target: preempted, or at its time limit, decided from
facts rather than from how long the trial has been running.

In the job, when a stop signal comes (``stop_reason``):

1. The time left in the job's allocation. The job knows when it ends: the start of this attempt plus
   the run's time limit, which the job exports to every process of the trial as
   ``HPO_SLURM_ALLOCATION_END`` (``export_allocation_end``). Slurm sends the time-limit warning
   ``signal_delay_s`` before that end (up to a minute early: its event resolution) and SIGTERM at it,
   so a signal that comes with more time left than ``time_limit_window`` can only be a preemption (or
   a cancellation, which stops the run the same way).
2. Inside that last window, Slurm's own record of the job (``scontrol show job``): a job Slurm is
   preempting has a ``PreemptTime``. It is asked only there, so a preemption costs the controller
   nothing and a time limit one query per process that takes the signal.
3. With no Slurm to ask (local processes, or a controller that does not answer in time), a signal in
   the window is the time limit.

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


def time_limit_window(signal_delay_s: float) -> float:
    """How much time may be left when Slurm's time-limit warning or final SIGTERM arrives."""
    return signal_delay_s + SLURM_SIGNAL_EARLY_S + START_SKEW_S


def stop_reason(signum: int, seconds_left: Optional[float], signal_delay_s: float,
                environ: Mapping[str, str]) -> StopReason:
    """``PREEMPTED`` or ``TIME_LIMIT`` for stop signal ``signum`` received with ``seconds_left`` in the
    allocation (see the module's docstring). ``environ`` is the job's environment (its Slurm job id)."""
    if seconds_left is not None and seconds_left > time_limit_window(signal_delay_s):
        return StopReason.PREEMPTED
    if slurm_is_preempting(environ):
        return StopReason.PREEMPTED
    if seconds_left is None and signum == signal.SIGTERM:  # no limit known: only the warning can be one
        return StopReason.PREEMPTED
    return StopReason.TIME_LIMIT


def slurm_is_preempting(environ: Mapping[str, str]) -> bool:
    """Whether Slurm records a preemption of this job (``PreemptTime`` set). False outside a Slurm
    job, and when ``scontrol`` cannot answer within ``SCONTROL_TIMEOUT_S`` (the clock decides then)."""
    job_id = environ.get("SLURM_JOB_ID")
    if not job_id:
        return False
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                               timeout=SCONTROL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return shown.returncode == 0 and preempt_time_set(shown.stdout)


def preempt_time_set(scontrol_line: str) -> bool:
    """Whether one-line ``scontrol show job`` output has a ``PreemptTime`` (``None`` until preempted)."""
    for field in scontrol_line.split():
        key, _, value = field.partition("=")
        if key == "PreemptTime":
            return value not in ("", "None", "Unknown")
    return False


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
