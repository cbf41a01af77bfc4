"""A full disk under the experiment folder: recognising it, waiting for room, and the error that stops
the driver when no room comes back.

A full disk (``ENOSPC``, a quota's ``EDQUOT``, SQLite's "database or disk is full") loses nothing of a
search: a tick's decisions commit in one transaction or not at all, jobs write their files without the
driver, and a driver started again from the database carries on as ``hpo-slurm resume`` does. So the
driver drops what it had not saved, waits for room (``DiskOutage``) for a bounded time, saying so once
in driver.log, and then either carries on or stops with ``DiskFullError`` (one line, exit status 1).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

from hpo_slurm.core.errors import UserError
from hpo_slurm.core.protocol import RunResult
from hpo_slurm.core.types import RunState
from hpo_slurm.engine.judge import NODE_FAILED

log = logging.getLogger(__name__)

DISK_FULL_WAIT_S = 900.0  # how long a driver waits for room before it stops (HPO_SLURM_DISK_FULL_WAIT)
WAIT_ENVIRONMENT = "HPO_SLURM_DISK_FULL_WAIT"
CHECK_EVERY_S = 2.0  # how often a waiting driver looks for room
PROBE_BYTES = 1 << 20  # room means this much can be written and synced: a tick writes far less

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_SQLITE_IOERR = 10  # SQLITE_IOERR: what SQLite reports when it cannot grow its shared-memory file


class DiskFullError(Exception):
    """The experiment's disk stayed full: the driver stopped. Its message is one line naming the
    experiment folder and what to do; the command line prints it with exit status 1."""


def is_disk_full(exc: BaseException, folder: Optional[Path] = None) -> bool:
    """Whether ``exc``, or an exception it was raised from, says the disk (or a quota) is full. With
    ``folder``, SQLite's unspecific "disk I/O error" also counts when ``folder`` has no room now."""
    current: Optional[BaseException] = exc
    for _ in range(8):  # the chain of ``raise ... from``; bounded so a cycle cannot loop
        if current is None:
            return False
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error):
            code = (getattr(current, "sqlite_errorcode", None) or 0) & 0xFF
            if code == _SQLITE_FULL or "database or disk is full" in str(current):
                return True
            if code == _SQLITE_IOERR and folder is not None and not has_room(folder):
                return True
        current = current.__cause__
    return False


def describe(exc: BaseException) -> str:
    """What the error said, on one line: ``No space left on device: /path`` or SQLite's message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def has_room(folder: Path, need: int = PROBE_BYTES) -> bool:
    """Whether ``need`` bytes can be written in ``folder`` now: its file system reports them free and
    a probe file of that size is written, synced and removed (a quota shows only in the probe). Other
    errors than a full disk or quota are raised."""
    folder = Path(folder)
    try:
        stats = os.statvfs(folder)
    except OSError:
        stats = None  # the probe decides
    if stats is not None and stats.f_bavail * stats.f_frsize < need:
        return False
    probe = folder / f".disk-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * need)
            handle.flush()
            os.fsync(handle.fileno())
        return True
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            return False
        raise
    finally:
        probe.unlink(missing_ok=True)


def wait_from_environment(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds a driver waits for room on a full disk: ``$HPO_SLURM_DISK_FULL_WAIT`` (0: stop at
    once), else ``DISK_FULL_WAIT_S``; a UserError for a value that is not a number of seconds."""
    text = environ.get(WAIT_ENVIRONMENT)
    if text is None or not text.strip():
        return DISK_FULL_WAIT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise UserError(f"${WAIT_ENVIRONMENT}: expected a number of seconds (0 or more), got {text!r}")
    return seconds


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


class DiskOutage:
    """Waits out a full disk for the driver of the experiment in ``folder``: at most ``wait_s`` seconds
    per outage, looking for room every ``check_every_s`` (``sleep`` and ``clock`` are injectable)."""

    def __init__(self, folder: Path, wait_s: float, check_every_s: float = CHECK_EVERY_S,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder)
        self.wait_s = wait_s
        self.check_every_s = check_every_s
        self.sleep = sleep
        self.clock = clock

    def wait(self, exc: BaseException) -> float:
        """Called with the disk-full error that interrupted the driver (whose unsaved decisions are
        dropped): logs it once, returns the seconds waited once the folder has room again, or raises
        DiskFullError when it has none after ``wait_s``."""
        reason = describe(exc)
        if self.wait_s <= 0:
            raise DiskFullError(self._stopped(reason))
        log.warning("%s: the disk is full (%s); the driver waits up to %s for free space, then carries on "
                    "from its last saved tick (nothing is lost)", self.folder, reason, _duration(self.wait_s))
        start = self.clock()
        while True:
            if has_room(self.folder):
                waited = self.clock() - start
                log.info("%s: free space is back after %.0f s; the driver carries on", self.folder, waited)
                return waited
            left = self.wait_s - (self.clock() - start)
            if left <= 0:
                message = self._stopped(reason)
                log.error("%s", message)
                raise DiskFullError(message)
            self.sleep(min(self.check_every_s, left))

    def _stopped(self, reason: str) -> str:
        waited = f" after waiting {_duration(self.wait_s)} for free space" if self.wait_s > 0 else ""
        resume = f"hpo-slurm resume {self.folder.name} --root {self.folder.parent}"
        return (f"{self.folder}: the disk is full ({reason}); the driver stopped{waited}. Its database holds "
                f"everything up to its last tick: free space, then `{resume}`")


OUTPUT_TAIL_BYTES = 16 * 1024  # a job's last words are in the end of its output
_FULL_MESSAGES = ("No space left on device", "Disk quota exceeded", "database or disk is full")


def full_disk_in_output(run_dir: Path) -> Optional[str]:
    """The full-disk message (``No space left on device``, ``Disk quota exceeded``) in the end of a
    run's output (its job's ``*_log.err`` and ``*_log.out`` in ``run_dir``), or None. A run that failed
    without a result and says this failed for want of room, not for its code."""
    for path in sorted(Path(run_dir).glob("*_log.err")) + sorted(Path(run_dir).glob("*_log.out")):
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - OUTPUT_TAIL_BYTES))
                tail = handle.read().decode("utf-8", errors="replace")
        except OSError:
            continue  # unreadable output says nothing either way
        for message in _FULL_MESSAGES:
            if message in tail:
                return message
    return None


def failed_for_room(outcome: RunState, reason: str, result: Optional[RunResult], run_dir: Path) -> str:
    """The reason a run that ended so (``judge``'s outcome and reason) gives: when it failed or vanished
    without a result and its output (``full_disk_in_output``) says the disk was full, that; else
    ``reason``. Such a run still counts against max_restarts (its trial resumes from its checkpoint)."""
    if result is not None or not (outcome is RunState.FAILED or (outcome is RunState.LOST and reason != NODE_FAILED)):
        return reason
    full = full_disk_in_output(run_dir)
    return f"the disk was full ({full}, says its output)" if full else reason
