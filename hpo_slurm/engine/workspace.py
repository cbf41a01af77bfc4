"""Everything the driver reads from and writes to the experiment folder, behind one small interface,
so the same driver loop runs against real files (local and Slurm jobs) or in memory (the simulator).

Jobs never need the driver: they write metric lines, results and checkpoints here, and a driver that
comes back later reads them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from hpo_slurm.engine.checkpoints import collect_garbage, latest_checkpoint_path
from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.fsio import read_json, write_json_atomic
from hpo_slurm.core.protocol import MetricLine, ProtocolError, RunResult, RunSpec, last_attempt, read_new_lines
from hpo_slurm.executors.base import Workspace
from hpo_slurm.core.layout import ExperimentLayout

log = logging.getLogger(__name__)


class FileWorkspace(Workspace):
    """The experiment folder on a (possibly shared) filesystem."""

    def __init__(self, layout: ExperimentLayout):
        self.layout = layout

    def stop_requested(self) -> bool:
        return self.layout.stop_request.exists()

    def read_metrics(self, trial_id: int, offset: int) -> Tuple[List[MetricLine], int, List[str]]:
        return read_new_lines(self.layout.metrics_file(trial_id), offset)

    def read_result(self, run_id: str) -> Optional[RunResult]:
        """The run's ``result.json``; None when there is none, or it is not one (logged: the run is
        then judged by what the scheduler says of its job)."""
        path = self.layout.result_file(run_id)
        try:
            return RunResult.from_json(read_json(path), str(path))
        except OSError:
            return None
        except ValueError as exc:  # not JSON, or a ProtocolError
            detail = exc if isinstance(exc, ProtocolError) else f"{path}: not JSON ({exc})"
            log.warning("run %s: result ignored: %s", run_id, detail)
            return None

    def attempts(self, run_id: str) -> int:
        try:
            with open(self.layout.attempts_file(run_id), "rb") as handle:
                return sum(1 for line in handle if line.strip())
        except OSError:
            return 0

    def run_times(self, run_id: str) -> Tuple[Optional[float], Optional[float]]:
        attempt = last_attempt(self.layout.attempts_file(run_id)) or {}
        try:
            started: Optional[float] = float(attempt["time"])
        except (KeyError, ValueError, TypeError):
            started = None
        result = self.read_result(run_id)
        ended = result.ended if result is not None else None
        return started, float(ended) if ended is not None else None

    def latest_checkpoint(self, trial_id: int) -> Optional[str]:
        found = latest_checkpoint_path(self.layout, trial_id)
        return str(found) if found else None

    def prepare_run(self, run_id: str, trial_id: int, spec: RunSpec) -> None:
        self.layout.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        self.layout.trial_dir(trial_id).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.layout.spec_file(run_id), spec.to_json())  # durable: a job may start long after

    def request_stop(self, run_id: str) -> None:
        stop_file = self.layout.run_stop_file(run_id)
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        stop_file.touch()

    def collect_garbage(self, config: ExperimentConfig, trials: Dict[int, Dict[str, Any]], trial_id: int,
                        validations: Callable[[], Dict[int, float]], referenced: Set[str]) -> int:
        return collect_garbage(self.layout, config, trials, trial_id, validations, referenced)

    def run_dir(self, run_id: str) -> Path:
        return self.layout.run_dir(run_id)

    def spec_path(self, run_id: str) -> Path:
        return self.layout.spec_file(run_id)

