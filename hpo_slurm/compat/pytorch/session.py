"""Where a PyTorchTrial's training reports, checkpoints and learns it must stop: an hpo-slurm run
(``HpoSession``) or a process started by hand off hpo-slurm (``LocalSession``).

Lengths given to a session are in the search's unit (``unit``: batches, records or epochs); the trainer
converts. Every rank calls every method at the same points (``should_stop`` and ``checkpoint`` are
collectives when the trial has several ranks); reports are recorded from rank 0 only.

``HpoSession`` reports metric lines and publishes checkpoint folders through ``hpo_slurm.trial``'s
``TrialContext``; checkpoints are named by the storage ids of ``hpo_slurm.compat.storage``. It routes
the stop signals (preemption, time limit) to its ``TrialContext`` and then to whatever handler was
installed before, so a launcher in the same process still hears them.

``LocalSession`` logs its reports and writes checkpoints to ``<cwd>/checkpoints/<id>/``; a checkpoint
is named there by its folder's name (or any path to a folder). It is never asked to stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from hpo_slurm.compat.cluster_info import experiment_id_of
from hpo_slurm.compat.distributed import DistributedContext
from hpo_slurm.compat.storage import METADATA_FILE, published_checkpoint, storage_id_at, storage_id_of
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import RunSpec
from hpo_slurm.trial import TrialContext, forward_to_installed_handlers, install_stop_handlers
from hpo_slurm.trial import init as trial_init

log = logging.getLogger("determined.pytorch")

LOCAL_CHECKPOINTS = "checkpoints"


class Session:
    """What the trainer needs of its surroundings (see the module docstring). Attributes: ``rank``,
    ``local_rank``, ``world_size``; ``hparams`` and ``experiment_config`` (None when unknown);
    ``trial_id``, ``experiment_id``, ``trial_seed`` (None: do not seed); ``unit``, ``target_length``
    (0: no target), ``records_per_epoch`` (0: not set); ``on_cluster``."""

    rank = 0
    local_rank = 0
    world_size = 1
    hparams: Optional[Dict[str, Any]] = None
    experiment_config: Optional[Dict[str, Any]] = None
    trial_id = 0
    experiment_id = 0
    trial_seed: Optional[int] = None
    unit = "batches"
    target_length = 0
    records_per_epoch = 0
    on_cluster = False

    def latest_checkpoint(self) -> Optional[str]:
        """The checkpoint this run resumes from (a storage id), or None."""
        raise NotImplementedError

    def resolve(self, checkpoint: str) -> Path:
        """The folder of ``checkpoint`` (a storage id); ``FileNotFoundError`` when it has none."""
        raise NotImplementedError

    def report_training(self, length: int, metrics: Dict[str, Any]) -> None:
        raise NotImplementedError

    def report_validation(self, length: int, metrics: Dict[str, Any]) -> None:
        raise NotImplementedError

    def checkpoint(self, length: int, metadata: Dict[str, Any]) -> "contextlib.AbstractContextManager[Tuple[Path, str]]":
        """Every rank enters; all get the same fresh folder and the storage id it will have. It is
        published once every rank has left the block without an exception."""
        raise NotImplementedError

    def should_stop(self) -> bool:
        """Whether to checkpoint and return now (the same answer on every rank)."""
        raise NotImplementedError

    def end_trial(self, message: str) -> None:
        """The trial's code ended the trial (``context.set_stop_requested(True)``): the search closes it
        once the script returns. Nothing to do off hpo-slurm."""

    def tensorboard_path(self) -> Path:
        raise NotImplementedError


class HpoSession(Session):
    """An hpo-slurm run, from the spec of ``trial`` (a ``TrialContext``)."""

    on_cluster = True

    def __init__(self, trial: TrialContext):
        spec: RunSpec = trial.run_spec
        self._trial = trial
        self._layout = ExperimentLayout(Path(spec.experiment_dir))
        self.rank, self.local_rank, self.world_size = trial.rank, trial.local_rank, trial.world_size
        self.hparams = dict(spec.hparams)
        self.experiment_config = dict(spec.experiment_config)
        self.experiment_config.setdefault("data", dict(spec.data))  # a spec written without the config has data
        self.trial_id = spec.trial_id
        self.experiment_id = experiment_id_of(spec.experiment)
        self.trial_seed = spec.trial_seed
        self.unit = spec.unit
        self.target_length = spec.target_length
        self.records_per_epoch = spec.records_per_epoch

    @classmethod
    def start(cls) -> "HpoSession":
        """The session of the run this process belongs to (``$HPO_SLURM_SPEC``), with the stop signals
        routed to it and then to the handlers installed before (module docstring)."""
        forward = forward_to_installed_handlers()  # the handlers from before trial_init's own
        trial = trial_init()  # its stop handlers, and InvalidHP recorded for the driver
        install_stop_handlers(trial.request_stop, trial.run_spec, forward)
        return cls(trial)

    def latest_checkpoint(self) -> Optional[str]:
        found = self._trial.latest_checkpoint
        return storage_id_of(found, self._layout) if found is not None else None

    def resolve(self, checkpoint: str) -> Path:
        return published_checkpoint(checkpoint, self._layout)

    def report_training(self, length: int, metrics: Dict[str, Any]) -> None:
        self._trial.report_training(length, metrics)

    def report_validation(self, length: int, metrics: Dict[str, Any]) -> None:
        self._trial.report_validation(length, metrics)

    @contextlib.contextmanager
    def checkpoint(self, length: int, metadata: Dict[str, Any]) -> Iterator[Tuple[Path, str]]:
        storage_id = storage_id_at(self.trial_id, length, self._layout)
        with self._trial.checkpoint(length, metadata) as path:
            yield path, storage_id
            if self.rank == 0:
                (path / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")

    def end_trial(self, message: str) -> None:
        self._trial.end_trial(message)

    def should_stop(self) -> bool:
        return self._trial.should_stop()

    @property
    def stop_reason(self) -> Optional[str]:
        return self._trial.stop_reason

    def tensorboard_path(self) -> Path:
        path = self._trial.trial_dir / "tensorboard"
        path.mkdir(parents=True, exist_ok=True)
        return path


class LocalSession(Session):
    """A process started by hand (no hpo-slurm run): see the module docstring. ``distributed`` gives the
    ranks (a ``torchrun`` of several processes), whose collectives synchronise checkpoints."""

    def __init__(self, distributed: DistributedContext, hparams: Optional[Dict[str, Any]],
                 experiment_config: Optional[Dict[str, Any]], root: Optional[Path] = None):
        self._dist = distributed
        self.rank, self.local_rank, self.world_size = distributed.rank, distributed.local_rank, distributed.size
        self.hparams = dict(hparams) if hparams is not None else None
        self.experiment_config = dict(experiment_config) if experiment_config is not None else None
        self.records_per_epoch = int((experiment_config or {}).get("records_per_epoch") or 0)
        self._root = Path(root) if root is not None else Path.cwd() / LOCAL_CHECKPOINTS

    def latest_checkpoint(self) -> Optional[str]:
        return None

    def resolve(self, checkpoint: str) -> Path:
        for folder in (Path(checkpoint), self._root / checkpoint):
            if folder.is_dir():
                return folder
        raise FileNotFoundError(f"no checkpoint folder {checkpoint} (nor {self._root / checkpoint})")

    def report_training(self, length: int, metrics: Dict[str, Any]) -> None:
        if self.rank == 0:
            log.info("training metrics at %s %s: %s", length, self.unit, metrics)

    def report_validation(self, length: int, metrics: Dict[str, Any]) -> None:
        if self.rank == 0:
            log.info("validation metrics at %s %s: %s", length, self.unit, metrics)

    @contextlib.contextmanager
    def checkpoint(self, length: int, metadata: Dict[str, Any]) -> Iterator[Tuple[Path, str]]:
        name = f"batches-{int(metadata.get('batches', length)):09d}"
        final, tmp = self._root / name, self._root / f".tmp-{name}"
        if self.rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self._dist.broadcast(None)  # the folder exists before any rank writes into it
        error: Optional[BaseException] = None
        try:
            yield tmp, name
        except BaseException as exc:  # every rank still takes part in the collective below
            error = exc
        failed = not all(self._dist.allgather(error is None))
        if self.rank == 0:
            if failed:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                log.info("checkpoint saved to %s", final)
        self._dist.broadcast(None)  # every rank returns once the folder is in place
        if error is not None:
            raise error
        if failed:
            raise RuntimeError(f"checkpoint {name} not saved: another rank failed while saving it")

    def should_stop(self) -> bool:
        return False

    def tensorboard_path(self) -> Path:
        path = Path.cwd() / "tensorboard"
        path.mkdir(parents=True, exist_ok=True)
        return path
