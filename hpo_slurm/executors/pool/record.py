"""The driver's record of its pool's worker jobs, ``pool/workers.json`` (only the driver writes it).

Crash safety is the runs' own order: a worker is recorded under a name (and the job name of its batch)
before its batch is submitted, and its job id after. A worker recorded without a job id may have been
submitted before a crash or a failed sbatch, so it is looked up by its batch's job name before the pool
counts it as missing (``unbound``). A worker whose job ended keeps its line with how it ended, so the
run it held can still be judged after a restart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from hpo_slurm.core.errors import UserError
from hpo_slurm.core.fsio import read_json, write_json_atomic


@dataclass
class WorkerEntry:
    """One worker job: ``batch`` is the job name it was submitted under, ``job_id`` None until known,
    ``gpus`` the devices a local worker holds, ``ended`` the job's final state once it ended."""

    name: str
    batch: str
    batch_names: List[str]
    submitted: float
    job_id: Optional[str] = None
    gpus: str = ""
    ended: Optional[str] = None

    @property
    def live(self) -> bool:
        return self.ended is None


class WorkerRecord:
    """``workers.json``: the next worker number and every worker this pool started, by name."""

    def __init__(self, path: Path):
        """The record at ``path``, empty when there is none yet. One that cannot be read or parsed is a
        ``UserError`` naming the file: starting from an empty record would reuse worker names whose
        jobs may still be live."""
        self.path = path
        try:
            data = read_json(path)
            self.next = int(data.get("next", 1))
            self.workers: Dict[str, WorkerEntry] = {
                name: WorkerEntry(**fields) for name, fields in (data.get("workers") or {}).items()}
        except FileNotFoundError:
            self.next, self.workers = 1, {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise UserError(f"{path}: the record of the pool's worker jobs cannot be read ({exc}); its workers "
                            f"may still run: restore the file before the search goes on") from None

    def new_names(self, count: int, taken: Callable[[str], bool]) -> List[str]:
        """``count`` worker names never used before: none this record holds, none ``taken`` (a worker
        folder exists)."""
        names: List[str] = []
        while len(names) < count:
            name = f"w{self.next}"
            self.next += 1
            if name not in self.workers and not taken(name):
                names.append(name)
        return names

    def live(self) -> List[WorkerEntry]:
        return [entry for entry in self.workers.values() if entry.live]

    def unbound(self) -> List[WorkerEntry]:
        """Live workers recorded without a job id: submitted or not, to be looked up by batch name."""
        return [entry for entry in self.live() if entry.job_id is None]

    def save(self) -> None:
        """Written whole and synced, before the submission it records goes out."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"next": self.next,
                                      "workers": {name: asdict(entry) for name, entry in self.workers.items()}})
