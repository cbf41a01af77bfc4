"""One driver per experiment: an advisory file lock plus host, pid and heartbeat in the lock file.

The lock is ``flock`` (tied to the open file, so reading the lock file elsewhere in the process never
drops it, unlike POSIX record locks; Linux NFS clients map it to a server-side lock).

The kernel releases the file lock when the driver dies, whatever killed it, so a dead driver on this
host never blocks a resume. A driver on another host (the experiment folder is shared) is seen by its
heartbeat: it is live while its heartbeat is younger than ``STALE_AFTER_S``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional

from hpo_slurm.core.errors import UserError

STALE_AFTER_S = 120.0
PROBE_GRACE_S = 1.0  # a probe holds the lock for microseconds; a driver holds it for its lifetime


def _lock_within(fd: int, seconds: float) -> bool:
    """Take the exclusive lock on ``fd``, trying again for ``seconds`` while someone else holds it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        except OSError:  # the file system refuses locks: as before, reported as held
            return False


class DriverLock:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: Optional[int] = None
        self._info: Dict[str, Any] = {}

    def acquire(self) -> None:
        """Become the experiment's driver, or raise UserError naming the live one. A lock held only
        for a moment (``driver_alive``'s probe, from status or the dashboard) is waited out for up to
        PROBE_GRACE_S."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _lock_within(fd, PROBE_GRACE_S):
            os.close(fd)
            holder = read_lock(self.path) or {}
            raise UserError(
                f"{self.path.parent.name}: a driver is already running "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')})"
            ) from None
        holder = _read_fd(fd)
        if holder and holder.get("host") != socket.gethostname() and is_fresh(holder):
            os.close(fd)
            raise UserError(
                f"{self.path.parent.name}: a driver is running on {holder['host']} "
                f"(pid {holder.get('pid')}, heartbeat {time.time() - holder['heartbeat']:.0f}s ago)"
            )
        self._fd = fd
        self._info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        self.heartbeat()

    def heartbeat(self, waiting: Optional[str] = None) -> None:
        """Say the driver is alive now, and what it waits for (``waiting``: one line, or None)."""
        assert self._fd is not None, "lock not held"
        info = {**self._info, "heartbeat": time.time(), **({"waiting": waiting} if waiting else {})}
        data = json.dumps(info).encode()
        # written first, then cut to its length: a write that fails (a full disk) leaves the last one
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DriverLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_fd(fd: int) -> Optional[Dict[str, Any]]:
    try:
        text = os.pread(fd, 4096, 0).decode()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def read_lock(path: Path) -> Optional[Dict[str, Any]]:
    try:
        text = Path(path).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def is_fresh(info: Dict[str, Any]) -> bool:
    return time.time() - float(info.get("heartbeat", 0)) < STALE_AFTER_S


def driver_alive(path: Path) -> Dict[str, Any]:
    """``{"alive": bool, "pid": ..., "host": ..., "waiting": ...}`` for status: alive when the lock is
    held; ``waiting``: what a live driver said it waits for at its last heartbeat (None: nothing)."""
    info = read_lock(path) or {}
    alive = False
    if info:
        held = _locked(path) if info.get("host") == socket.gethostname() else None
        alive = is_fresh(info) if held is None else held
    return {"alive": alive, "pid": info.get("pid"), "host": info.get("host"),
            "waiting": info.get("waiting") if alive else None}


def _locked(path: Path) -> Optional[bool]:
    """Whether a process holds the lock file ``path`` (None: it cannot be opened here). Opened for
    reading only: a group member of a shared experiment may read the lock but not write it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared lock needs no write access, even on NFS
    except BlockingIOError:  # the driver holds it exclusively
        return True
    except OSError:  # the file system refuses locks: the heartbeat decides
        return None
    finally:
        os.close(fd)
    return False
