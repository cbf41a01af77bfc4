"""Where everything lives in an experiment folder. Pure path arithmetic: no I/O. What the files
that pass between the driver and its jobs hold is ``hpo_slurm.core.protocol``'s.

    <root>/<experiment>/
      config.yaml, context/, experiment.db, driver.lock, driver.log, stop-requested
      trials/<id>/metrics.jsonl          appended by the trial
      trials/<id>/checkpoints/<name>/    published by rename
      runs/<run>/spec.json               what the job runs (hyperparameters travel here, never on a command line)
      runs/<run>/result.json             how the job's last attempt ended
      runs/<run>/attempts.jsonl, stop    each start of the job; the driver's request to stop
      jobs/<batch>/manifest.json         the runs of one batch job and their specs
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

CHECKPOINT_META = "hpo_checkpoint.json"


class ExperimentLayout:
    def __init__(self, directory: Path):
        self.dir = Path(directory).absolute()  # jobs run in other folders: every path they get is absolute

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def context(self) -> Path:
        return self.dir / "context"

    @property
    def database(self) -> Path:
        return self.dir / "experiment.db"

    @property
    def lock(self) -> Path:
        return self.dir / "driver.lock"

    @property
    def driver_log(self) -> Path:
        return self.dir / "driver.log"

    @property
    def stop_request(self) -> Path:
        return self.dir / "stop-requested"

    def trial_dir(self, trial_id: int) -> Path:
        return self.dir / "trials" / str(trial_id)

    def metrics_file(self, trial_id: int) -> Path:
        return self.trial_dir(trial_id) / "metrics.jsonl"

    def checkpoints_dir(self, trial_id: int) -> Path:
        return self.trial_dir(trial_id) / "checkpoints"

    def run_dir(self, run_id: str) -> Path:
        return self.dir / "runs" / run_id

    def spec_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "spec.json"

    def result_file(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "result.json"

    def run_stop_file(self, run_id: str) -> Path:
        """Written by the driver when the searcher no longer needs this run's work."""
        return self.run_dir(run_id) / "stop"

    def ranks_dir(self, run_id: str) -> Path:
        """Where each rank of a trial of several ranks writes how it ended."""
        return self.run_dir(run_id) / "ranks"

    def rank_result_file(self, run_id: str, rank: int) -> Path:
        return self.ranks_dir(run_id) / f"rank-{rank}.json"

    def rank_group_file(self, run_id: str, rank: int) -> Path:
        """The process group of rank ``rank``'s trial (a shell command runs in a session of its own)."""
        return self.ranks_dir(run_id) / f"group-{rank}"

    def rank_stop_file(self, run_id: str, rank: int) -> Path:
        """Written by rank ``rank``'s trial when it agreed to stop, with the reason."""
        return self.ranks_dir(run_id) / f"stopping-{rank}.json"

    def shared_checkpoint_dirs(self, trial_id: int, run_id: str, length: int, attempt: int,
                               entered: int) -> Tuple[Path, Path]:
        """(the folder every rank saves into, the folder where each rank marks that it left) of the
        ``entered``-th checkpoint that attempt ``attempt`` of run ``run_id`` saves with all its ranks."""
        tag = f"{checkpoint_name(length)}-{run_id}-a{attempt}-{entered}"
        parent = self.checkpoints_dir(trial_id)
        return parent / f".tmp-{tag}", parent / f".sync-{tag}"

    def shared_checkpoint_patterns(self, run_id: str) -> Tuple[str, str]:
        """Glob patterns, in the trial's checkpoints folder, of every ``shared_checkpoint_dirs`` folder of
        run ``run_id`` (any attempt): what an earlier attempt's ranks may have left half-saved."""
        return f".tmp-*-{run_id}-a*", f".sync-*-{run_id}-a*"

    def attempts_file(self, run_id: str) -> Path:
        """One line per start of the job (a job Slurm requeues starts again under the same id)."""
        return self.run_dir(run_id) / "attempts.jsonl"


def checkpoint_name(length: int) -> str:
    """Checkpoint folders sort by length: ``length-000000250``."""
    return f"length-{length:09d}"


def length_in_name(path: Union[str, Path]) -> Optional[int]:
    """The length a checkpoint folder's name says (``.../length-000000250`` -> 250); None for a name
    ``checkpoint_name`` does not make."""
    name = Path(path).name
    if not name.startswith("length-"):
        return None
    try:
        return int(name[len("length-"):])
    except ValueError:
        return None


def run_name(trial_id: int, seq: int) -> str:
    """A run's unique name within its experiment: ``t12-r3`` is trial 12's third run."""
    return f"t{trial_id}-r{seq}"
