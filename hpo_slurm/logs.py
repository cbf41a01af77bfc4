"""A trial's output: submitit keeps each run's stdout and stderr in the run's folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List

from .errors import UserError
from .layout import ExperimentLayout
from .store import Store


def run_log_files(layout: ExperimentLayout, run_id: str) -> List[Path]:
    run_dir = layout.run_dir(run_id)
    if not run_dir.is_dir():
        return []
    return sorted(run_dir.glob("*_log.out")) + sorted(run_dir.glob("*_log.err"))


def print_trial_logs(layout: ExperimentLayout, trial_id: int, follow: bool) -> None:
    store = Store.open(layout.database, readonly=True)
    try:
        runs = store.runs(trial_id)
    finally:
        store.close()
    if not runs:
        raise UserError(f"{layout.name}: no trial {trial_id} (or it has not run yet)")
    out = sys.stdout
    for run in runs:
        for path in run_log_files(layout, run["id"]):
            out.write(f"==> run {run['id']} (job {run['job_id']}) {path.name} <==\n")
            out.write(path.read_text(errors="replace"))
    out.flush()
    if follow:
        _follow(run_log_files(layout, runs[-1]["id"]))


def _follow(paths: List[Path]) -> None:
    offsets = {p: p.stat().st_size for p in paths if p.exists()}
    try:
        while True:
            for path in paths:
                if not path.exists():
                    continue
                with open(path, "r", errors="replace") as handle:
                    handle.seek(offsets.get(path, 0))
                    chunk = handle.read()
                    offsets[path] = handle.tell()
                if chunk:
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
