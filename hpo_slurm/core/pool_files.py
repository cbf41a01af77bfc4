"""The files through which a search's driver and its pool of worker jobs hand runs over (``slurm.pool``).
Path arithmetic and the few small JSON files both sides read; stdlib only.

    <experiment>/pool/
      workers.json                  the driver's record of its worker jobs (only the driver writes it)
      queue/<key>.json              a run waiting for a worker: {"run", "spec"}; keys sort oldest first
      withdrawn/<key>.json          a run the driver took back before any worker claimed it
      closed                        the search is over: idle workers end at once
      workers/<name>/alive.json     the worker's heartbeat: its job, what it holds, since when it idles
      workers/<name>/claimed/<run>.json   the run this worker took (moved here from queue/ by rename)
      workers/<name>/ended/<run>.json     how the run's process ended on this worker: {"exit_code"} or
                                          {"abandoned": true} for a run an earlier start of the worker's
                                          job held when it was killed (Slurm requeued the job)
      jobs/<job name>/              the submitit folder of a batch of worker jobs (script, logs; a
                                    local worker's in jobs/<job name>/<name>/)

A run changes hands only by ``rename`` within one filesystem, which is atomic (also on NFS and Lustre): a
queued run is claimed by exactly one worker, or withdrawn by the driver, never both. A run's own files
(spec, result, metrics, checkpoints) are where every run's are (``core.layout``), so the driver judges a
pooled run exactly as it judges a run that had a job of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hpo_slurm.core.fsio import read_json

POOL_DIR = "pool"
HEARTBEAT_S = 30.0  # a worker rewrites its heartbeat at least this often
POOL_JOB_PREFIX = "pool:"  # a pooled run's job id: "pool:<run id>" (its worker is in the pool's files)


def pool_job_id(run_id: str) -> str:
    return POOL_JOB_PREFIX + run_id


def pooled_run(job_id: str) -> Optional[str]:
    """The run id of a pooled run's job id, None for any other job id."""
    return job_id[len(POOL_JOB_PREFIX):] if job_id.startswith(POOL_JOB_PREFIX) else None


@dataclass(frozen=True)
class PoolPaths:
    """Where a pool's files are, below the experiment folder ``experiment_dir``."""

    experiment_dir: Path

    @property
    def root(self) -> Path:
        return Path(self.experiment_dir) / POOL_DIR

    @property
    def record(self) -> Path:
        return self.root / "workers.json"

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def withdrawn(self) -> Path:
        return self.root / "withdrawn"

    @property
    def closed(self) -> Path:
        """Written by the driver when the search is over: idle workers end at once."""
        return self.root / "closed"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    def jobs(self, job_name: str) -> Path:
        return self.root / "jobs" / job_name

    def worker(self, name: str) -> Path:
        return self.workers / name

    def alive(self, name: str) -> Path:
        return self.worker(name) / "alive.json"

    def claimed(self, name: str, run_id: Optional[str] = None) -> Path:
        folder = self.worker(name) / "claimed"
        return folder if run_id is None else folder / f"{run_id}.json"

    def ended(self, name: str, run_id: Optional[str] = None) -> Path:
        folder = self.worker(name) / "ended"
        return folder if run_id is None else folder / f"{run_id}.json"



def queue_key(sequence: int, run_id: str) -> str:
    """A queued run's file name: oldest first when sorted (``00000000000000000042.t3-r2.json``)."""
    return f"{sequence:020d}.{run_id}.json"


def run_of_key(file_name: str) -> str:
    """The run id in a queue file's name (``queue_key``'s inverse)."""
    return file_name[:-len(".json")].split(".", 1)[1]


def read_optional(path: Path) -> Optional[Dict[str, Any]]:
    """A small JSON file that may be absent (a heartbeat, a run's end), or None when it is missing or
    cannot be read now. Its writer renames it into place, so a reader sees it whole or not at all; for
    a file whose absence would lose state (``workers.json``) read with ``fsio.read_json`` instead."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def list_names(folder: Path, suffix: str = ".json") -> List[str]:
    """The file names in ``folder`` ending with ``suffix``, sorted; empty when the folder is missing."""
    try:
        return sorted(name for name in os.listdir(folder) if name.endswith(suffix))
    except FileNotFoundError:
        return []
