"""``core_context.train``: metrics, progress and early exits, as hpo-slurm metric lines.

``steps_completed`` is the length in the search's unit (``searcher.unit``, or ``time_metric``). Only
the chief's reports are recorded (rank 0 of the trial and of the ``DistributedContext``); another
rank's are accepted and dropped. Groups other than ``training`` and ``validation`` are recorded as
training lines whose metric names are prefixed with the group (``report_metrics("inference", 5,
{"loss": 1})`` records ``{"inference/loss": 1}`` at length 5).

``report_progress(progress)`` takes Determined's fraction in [0, 1] and only logs it: the driver
follows a trial by its metric lines. ``get_experiment_best_validation()`` is always None (a trial
never reads the experiment's database). ``set_status`` logs; ``set_metadata``/``get_metadata`` keep
the metadata in ``trials/<id>/run-metadata.json``. ``get_tensorboard_path()`` is
``trials/<id>/tensorboard/`` (created); ``upload_tensorboard_files()`` has nothing to do (the folder is
already on the shared filesystem).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from typing import Any, Callable, Dict, List, Optional

from hpo_slurm.compat.core._enums import EarlyExitReason
from hpo_slurm.compat.core._run import CoreRun
from hpo_slurm.core.fsio import read_json, write_json_atomic
from hpo_slurm.trial import record_invalid_hp

log = logging.getLogger("determined.core")

TRAINING, VALIDATION = "training", "validation"
RUN_METADATA = "run-metadata.json"


class TrainContext:
    """Reports of one ``core.Context`` (see the module docstring)."""

    def __init__(self, run: CoreRun) -> None:
        self._run = run

    # ---- metrics ------------------------------------------------------------------------------
    def report_training_metrics(self, steps_completed: int, metrics: Dict[str, Any],
                                batch_metrics: Optional[List[Dict[str, Any]]] = None) -> None:
        """Training metrics at length ``steps_completed``; ``batch_metrics`` are not kept."""
        log.info(f"report_training_metrics(steps_completed={steps_completed}, metrics={metrics})")
        self._report(TRAINING, steps_completed, metrics)

    def report_validation_metrics(self, steps_completed: int, metrics: Dict[str, Any]) -> None:
        """Validation metrics at length ``steps_completed``: the one with the searcher metric is what the
        search compares. A None metric is an error (as in Determined); bytes values are dropped."""
        log.info(f"report_validation_metrics(steps_completed={steps_completed}, metrics={metrics})")
        self._report(VALIDATION, steps_completed, metrics)

    def report_metrics(self, group: str, steps_completed: int, metrics: Dict[str, Any]) -> None:
        """Metrics of ``group`` (see the module docstring for groups other than training and validation)."""
        if not isinstance(group, str) or not group or "." in group:
            raise ValueError(f"a metrics group is a non-empty string without '.', got {group!r}")
        log.info(f"report_metrics(group={group}, steps_completed={steps_completed}, metrics={metrics})")
        if group in (TRAINING, VALIDATION):
            self._report(group, steps_completed, metrics)
        else:
            if not isinstance(metrics, dict):
                raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
            self._report(TRAINING, steps_completed, {f"{group}/{key}": value for key, value in metrics.items()})

    def _report(self, group: str, steps_completed: int, metrics: Dict[str, Any]) -> None:
        if not isinstance(metrics, dict):
            raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
        if group == VALIDATION:
            for name, value in metrics.items():
                if value is None:
                    raise RuntimeError(f"Validation metric '{name}' returned an invalid scalar value: None")
            dropped = [name for name, value in metrics.items() if isinstance(value, (bytes, bytearray))]
            if dropped:
                log.warning("Removed non serializable metrics: %s", ", ".join(map(str, dropped)))
            metrics = {k: v for k, v in metrics.items() if k not in dropped}
        length = as_length(steps_completed)
        if self._run.dist.rank != 0:
            return
        if group == TRAINING:
            self._run.trial.report_training(length, metrics)
        else:
            self._run.trial.report_validation(length, metrics)
            self._run.validated.setdefault(length, set()).update(str(k) for k in metrics)

    # ---- progress, status, early exit ---------------------------------------------------------
    def report_progress(self, progress: float) -> None:
        """Determined's progress fraction; checked and logged."""
        if not 0 <= progress <= 1:
            raise ValueError(f"Progress should be between 0 and 1, not {progress}")
        log.debug(f"report_progress with progress={progress}")

    def set_status(self, status: str) -> None:
        log.info(f"status: {status}")

    def report_early_exit(self, reason: EarlyExitReason) -> None:
        """``INVALID_HP``: the run ends as invalid hyperparameters once the script exits (the searcher
        replaces the trial). ``USER_REQUESTED_STOP``: the trial ends once the script exits (the search
        closes it, ``TrialContext.end_trial``); ``ERRORED``: logged only (an error exit fails the run)."""
        reason = EarlyExitReason(reason)
        log.info(f"report_early_exit({reason})")
        if reason is EarlyExitReason.INVALID_HP:
            record_invalid_hp(self._run.layout.run_dir(self._run.spec.run_id),
                              "the trial reported an early exit: invalid hyperparameters")
        elif reason is EarlyExitReason.USER_REQUESTED_STOP:
            self._run.trial.end_trial("report_early_exit(USER_REQUESTED_STOP)")

    def get_experiment_best_validation(self) -> Optional[float]:
        """Always None: a trial does not read the experiment's other trials."""
        return None

    # ---- run metadata -------------------------------------------------------------------------
    def set_metadata(self, metadata: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Replace this trial's metadata (chief only; another rank's call is dropped). Returns it."""
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        json.dumps(metadata)  # TypeError for what JSON cannot hold, before anything is written
        if self._run.is_chief:
            write_json_atomic(self._run.trial.trial_dir / RUN_METADATA, metadata)
        return metadata

    def get_metadata(self) -> Optional[Dict[str, Any]]:
        path = self._run.trial.trial_dir / RUN_METADATA
        return read_json(path) if path.exists() else None

    # ---- tensorboard --------------------------------------------------------------------------
    def get_tensorboard_path(self) -> pathlib.Path:
        path = self._run.trial.trial_dir / "tensorboard"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def upload_tensorboard_files(self, selector: Callable[[pathlib.Path], bool] = lambda _: True,
                                 mangler: Callable[[pathlib.Path, int], pathlib.Path] = lambda p, __: p) -> None:
        """Nothing to upload: ``get_tensorboard_path()`` is on the shared filesystem already."""


def as_length(steps_completed: Any) -> int:
    """``steps_completed`` as a length: a non-negative integer (an integral float is accepted)."""
    if isinstance(steps_completed, bool):
        raise ValueError(f"steps_completed must be a non-negative integer, got {steps_completed!r}")
    if isinstance(steps_completed, float) and math.isfinite(steps_completed) and steps_completed.is_integer():
        steps_completed = int(steps_completed)
    if not isinstance(steps_completed, int):
        try:  # numpy and torch integers
            as_int = int(steps_completed)
        except (TypeError, ValueError):
            raise ValueError(f"steps_completed must be a non-negative integer, got {steps_completed!r}") from None
        if as_int != steps_completed:
            raise ValueError(f"steps_completed must be a non-negative integer, got {steps_completed!r}")
        steps_completed = as_int
    if steps_completed < 0:
        raise ValueError(f"steps_completed must be a non-negative integer, got {steps_completed!r}")
    return steps_completed
