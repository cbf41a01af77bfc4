"""What ``hpo-slurm status`` shows of a search's pool of worker jobs (``slurm.pool``), as plain JSON-able
data read from the pool's files (``core.pool_files``). Read-only: it never writes, creates or removes a
file, so it is safe while the driver and the workers run.

Cost: the driver's record (``pool/workers.json``), one listing of ``pool/queue``, one stat of
``pool/closed``, and one small heartbeat (``workers/<name>/alive.json``) per worker read: every worker
the record shows live, plus the ENDED_SHOWN last ones it shows ended. A file that is missing or torn
(half-written by an older hpo-slurm, a full disk) is treated as absent; nothing else is caught.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hpo_slurm.config.pool_section import PoolSettings
from hpo_slurm.core.pool_files import HEARTBEAT_S, PoolPaths, list_names, read_optional

ENDED_SHOWN = 4  # workers the record shows ended that are read and listed (the latest ones)
SILENT_AFTER_S = 4 * HEARTBEAT_S  # a live worker whose last heartbeat is older than this is flagged silent
CLOCK_SLACK_S = 2.0  # the closed file's time (the file server's clock) against a heartbeat's (the node's)

QUEUED, IDLE, RUNNING, ENDED = "queued", "idle", "running", "ended"
LIVE_STATES = (QUEUED, IDLE, RUNNING)


def read_pool(experiment_dir: Path, settings: PoolSettings, run_seconds: Optional[float] = None,
              now: Optional[float] = None, ended_shown: int = ENDED_SHOWN) -> Dict[str, Any]:
    """The pool of the experiment in ``experiment_dir`` (whose config has ``settings``) at time ``now``
    (default: the clock), as ``{"max_workers", "idle_timeout_s", "workers", "totals"}``.

    ``workers``: one dict per worker read, in the order they were started (``worker`` = ``read_worker``).
    ``totals``:

    - ``workers_live``: workers read whose state is queued, idle or running;
    - ``workers_total``: every worker the record holds; ``workers_counted``: how many were read (the
      live ones and the ``ended_shown`` last ended ones);
    - ``runs_queued``: runs waiting in ``pool/queue`` for a worker; ``runs_held``: runs a worker holds;
    - ``worker_hours``: the workers read, each from its start to its end, or to its last heartbeat while
      it lives (idle time included; a worker job that Slurm requeued counts from its latest start);
    - ``run_hours``: ``run_seconds`` in hours (the wall time of the search's runs, which all ran on the
      pool), None when not given;
    - ``idle_hours``: ``worker_hours - run_hours`` (not below 0): time workers held their allocation
      without a run, start-up and hand-over gaps included. Approximate, from heartbeats that are up to
      HEARTBEAT_S old; None when ``run_seconds`` is not given or when some ended workers were not read
      (``workers_counted < workers_total``), since their hours are then not in ``worker_hours``.
    """
    now = time.time() if now is None else now
    paths = PoolPaths(Path(experiment_dir))
    record = _record_entries(paths)
    closed_at = _mtime(paths.closed)
    live = [entry for entry in record if entry.get("ended") is None]
    ended = [entry for entry in record if entry.get("ended") is not None][-ended_shown:] if ended_shown > 0 else []
    chosen = {id(entry) for entry in live + ended}
    workers = [read_worker(paths, entry, now, closed_at) for entry in record if id(entry) in chosen]
    worker_seconds = sum(w["seconds"] for w in workers)
    complete = len(workers) == len(record)
    idle_hours = None
    if run_seconds is not None and complete:
        idle_hours = max(0.0, worker_seconds - run_seconds) / 3600.0
    return {
        "max_workers": settings.workers,
        "idle_timeout_s": settings.idle_timeout_s,
        "workers": workers,
        "totals": {
            "workers_live": sum(1 for w in workers if w["state"] in LIVE_STATES),
            "workers_total": len(record),
            "workers_counted": len(workers),
            "runs_queued": len(list_names(paths.queue)),
            "runs_held": sum(1 for w in workers if w["state"] == RUNNING),
            "worker_hours": worker_seconds / 3600.0,
            "run_hours": None if run_seconds is None else run_seconds / 3600.0,
            "idle_hours": idle_hours,
        },
    }


def read_worker(paths: PoolPaths, entry: Dict[str, Any], now: float, closed_at: Optional[float]) -> Dict[str, Any]:
    """One worker from its record ``entry`` and its heartbeat (read once):

    ``name``; ``job_id`` (the record's, else the heartbeat's); ``state``: ``queued`` (recorded, no
    heartbeat yet: its job waits in the scheduler's queue, or is not submitted yet), ``idle``,
    ``running`` (holding ``run``) or ``ended``; ``ended_how`` (None unless ended): the record's final job
    state in lower case (``timeout``, ``preempted``, ``cancelled``...) when it is not ``COMPLETED``, else
    ``search over`` when its heartbeat ended after the driver closed the pool, else ``exited`` (its
    process ended by itself: the idle timeout, or a stop signal), else ``completed``; ``run``: the run it
    holds, else None; ``idle_s``: ``now - idle_since`` while it idles, else None; ``runs``: runs it ran
    (in its latest start); ``host``, ``started``, ``ended`` (epochs, from the heartbeat; None unknown);
    ``submitted`` (the record's); ``beat_age_s``: seconds since its last heartbeat (None: none yet);
    ``silent``: a live worker whose last heartbeat is older than SILENT_AFTER_S (its process may be gone
    while no driver polls its job); ``seconds``: its start to its end or last heartbeat."""
    name = str(entry.get("name"))
    beat = read_optional(paths.alive(name)) or {}
    record_end = entry.get("ended")
    beat_end = _number(beat.get("ended"))
    started, last_beat = _number(beat.get("started")), _number(beat.get("beat"))
    run = beat.get("run") if isinstance(beat.get("run"), str) else None
    idle_since = _number(beat.get("idle_since"))
    if record_end is None and beat_end is None:
        state = QUEUED if not beat else RUNNING if run else IDLE
    else:
        state = ENDED
    how = None
    if state == ENDED:
        how, run, idle_since = _ended_how(record_end, beat_end, closed_at), None, None
    beat_age = None if last_beat is None else max(0.0, now - last_beat)
    until = beat_end if beat_end is not None else last_beat
    seconds = max(0.0, until - started) if started is not None and until is not None else 0.0
    runs = beat.get("runs")
    return {
        "name": name,
        "job_id": entry.get("job_id") or beat.get("job_id"),
        "state": state,
        "ended_how": how,
        "run": run,
        "idle_s": None if state != IDLE or idle_since is None else max(0.0, now - idle_since),
        "runs": runs if isinstance(runs, int) else 0,
        "host": beat.get("host"),
        "started": started,
        "ended": beat_end,
        "submitted": _number(entry.get("submitted")),
        "beat_age_s": beat_age,
        "silent": state in (IDLE, RUNNING) and beat_age is not None and beat_age > SILENT_AFTER_S,
        "seconds": seconds,
    }


def _ended_how(record_end: Optional[str], beat_end: Optional[float], closed_at: Optional[float]) -> str:
    if record_end is not None and record_end != "COMPLETED":
        return str(record_end).lower()
    if beat_end is not None:
        return "search over" if closed_at is not None and closed_at <= beat_end + CLOCK_SLACK_S else "exited"
    return "completed"


def _record_entries(paths: PoolPaths) -> List[Dict[str, Any]]:
    """The record's workers in the order they were started (by their number: w1, w2, ... w10); entries
    that are not objects are skipped (only a foreign or damaged file has them)."""
    record = read_optional(paths.record) or {}
    workers = record.get("workers")
    if not isinstance(workers, dict):
        return []
    entries = [{**fields, "name": name} for name, fields in workers.items() if isinstance(fields, dict)]
    return sorted(entries, key=lambda entry: _order(entry["name"]))


def _order(name: str) -> Tuple[int, str]:
    digits = name[1:]
    return (int(digits), name) if digits.isdigit() else (1 << 62, name)


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mtime(path: Path) -> Optional[float]:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None
