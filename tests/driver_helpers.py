"""Helpers for tests that run whole searches: a private copy of an example, configs with changes,
launching the real command line in a subprocess, and reading the results."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def copy_example(name: str, target: Path) -> Path:
    destination = target / name
    shutil.copytree(EXAMPLES / name, destination, ignore=shutil.ignore_patterns("hpo-runs", "__pycache__"))
    return destination


def _merge(base: Dict[str, Any], changes: Dict[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_config(source: Path, target: Path, **changes: Any) -> Path:
    """``source`` with ``changes`` merged in (nested dicts merge), written to ``target``."""
    data = _merge(yaml.safe_load(source.read_text()), changes)
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def cli(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``hpo-slurm ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "hpo_slurm.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def launch_slowed(source: Path, name: str, root: Path, sleep_per_unit: float) -> subprocess.CompletedProcess:
    """``source`` as experiment ``name``, its trials slowed by ``sleep_per_unit`` seconds a unit,
    launched on local processes with ``--detach`` under ``root``."""
    config = write_config(source, source.parent / f"{name}.yaml", name=name, data={"sleep_per_unit": sleep_per_unit})
    return cli("launch", str(config), "--root", str(root), "--executor", "local", "--detach")


def start_cli(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hpo_slurm.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, **(env or {})},
    )


def status(root: Path, name: str) -> Dict[str, Any]:
    """``hpo-slurm status NAME --json --trials all``: the summary and every trial with its runs."""
    done = cli("status", name, "--root", str(root), "--json", "--trials", "all")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def trial_processes(experiment_dir: Path) -> List[int]:
    """Pids of the local job controllers running runs of this experiment."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.local._local" in command and any(str(experiment_dir).encode() in part for part in command):
            pids.append(int(entry.name))
    return pids


def kill_all_trials(experiment_dir: Path) -> None:
    for pid in trial_processes(experiment_dir):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def metric_lines(experiment_dir: Path) -> int:
    """Complete, valid metric lines written by every trial."""
    count = 0
    for path in (experiment_dir / "trials").glob("*/metrics.jsonl"):
        for line in path.read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                continue
            count += 1
    return count


def launch_with_kills(config: Path, root: Path, name: str, crash_points: List[str], most: int,
                      rng: random.Random, executor: str = "local", window: Tuple[float, float] = (0.5, 1.5)) -> int:
    """Launch ``config`` as ``name`` on ``executor`` and kill its driver again and again: first at each
    of ``crash_points`` (``HPO_SLURM_CRASH_AT``), then by SIGKILL after a random time in ``window``
    (seconds), resuming it each time, until ``most`` kills or the search ends first. The search is
    finished (one last ``resume`` when needed) before it returns the number of kills."""
    args = ["launch", str(config), "--root", str(root), "--executor", executor]
    kills = 0
    while kills < most:
        if kills < len(crash_points):
            process = start_cli(*args, env={"HPO_SLURM_CRASH_AT": crash_points[kills]})
            process.wait(timeout=120)
        else:
            process = start_cli(*args)
            try:
                process.wait(timeout=rng.uniform(*window))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
        if process.returncode == 0:  # the search ended before this kill
            return kills
        assert process.returncode == -signal.SIGKILL, process.stderr.read()[-3000:]
        kills += 1
        args = ["resume", name, "--root", str(root)]
    finished = cli(*args, timeout=240)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return kills


def db_count(experiment: Path, sql: str) -> int:
    """The one number ``sql`` gives, read from the experiment's database without writing it."""
    conn = sqlite3.connect(f"file:{experiment / 'experiment.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()
