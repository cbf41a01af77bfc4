"""Everything the driver reads from and writes to the experiment folder, behind one small interface,
so the same driver loop runs against real files (local and Slurm jobs) or in memory (the simulator).

Jobs never need the driver: they write metric lines, results and checkpoints here, and a driver that
comes back later reads them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from hpo_slurm.engine.checkpoints import collect_garbage, latest_checkpoint_path
from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.fsio import read_json, write_json_atomic
from hpo_slurm.core.interruption import interruptions_by_attempt
from hpo_slurm.core.protocol import (MetricLine, ProtocolError, RunResult, RunSpec, StopReason, last_attempt,
                                     read_new_lines)
from hpo_slurm.executors.base import Workspace
from hpo_slurm.core.layout import ExperimentLayout

log = logging.getLogger(__name__)


class FileWorkspace(Workspace):
    """The experiment folder on a (possibly shared) filesystem."""

    def __init__(self, layout: ExperimentLayout):
        self.layout = layout
        self._unreadable: Set[str] = set()  # runs whose unreadable result was logged (once each)

    def stop_requested(self) -> bool:
        return self.layout.stop_request.exists()

    def read_metrics(self, trial_id: int, offset: int) -> Tuple[List[MetricLine], int, List[str]]:
        """New complete lines after ``offset`` (``protocol.read_new_lines``). A file now shorter than
        ``offset`` was truncated or replaced: it is read again from its start, with a warning."""
        path = self.layout.metrics_file(trial_id)
        lines, end, warnings = read_new_lines(path, offset)
        if end == offset and offset > 0:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                size = None  # deleted: a new one starts at 0, seen once it has lines
            if size is None or size < offset:
                lines, end, warnings = read_new_lines(path, 0)
                warnings.insert(0, f"{path}: {'gone' if size is None else f'{size} bytes'}, shorter than the "
                                   f"{offset} already read (truncated or replaced): read again from its start")
        return lines, end, warnings

    def read_result(self, run_id: str) -> Optional[RunResult]:
        """The run's ``result.json``; None when there is none, or it cannot be read or is not one (said
        once per run in the log: the run is then judged by what the scheduler says of its job)."""
        path = self.layout.result_file(run_id)
        try:
            return RunResult.from_json(read_json(path), str(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # unreadable (a folder, an I/O error), not JSON, or a ProtocolError
            if run_id not in self._unreadable:
                self._unreadable.add(run_id)
                if isinstance(exc, ProtocolError):
                    detail = str(exc)
                elif isinstance(exc, ValueError):
                    detail = f"{path}: not JSON ({exc})"
                else:
                    detail = f"{path}: cannot be read ({exc.strerror or exc})"
                log.warning("run %s: result ignored, the run is judged by its job's state: %s", run_id, detail)
            return None

    def attempts(self, run_id: str) -> int:
        try:
            with open(self.layout.attempts_file(run_id), "rb") as handle:
                return sum(1 for line in handle if line.strip())
        except OSError:
            return 0

    def earlier_interruptions(self, run_id: str) -> List[StopReason]:
        recorded = interruptions_by_attempt(self.layout.run_dir(run_id))
        return [_interruption(recorded.get(attempt)) for attempt in range(1, self.attempts(run_id))]

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


def _interruption(recorded: Optional[str]) -> StopReason:
    """An earlier attempt's recorded reason; one that recorded none (ended by the scheduler before it
    could, or a reason this hpo-slurm does not know) counts as preempted."""
    try:
        return StopReason(recorded)
    except ValueError:
        return StopReason.PREEMPTED
