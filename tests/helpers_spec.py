"""Fabricate an experiment folder and one run's spec, as the driver would, so tests can call
``hpo_slurm.tasks.job.run_job`` on real processes without a driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.core.layout import CHECKPOINT_META, ExperimentLayout, run_name
from hpo_slurm.core.protocol import RunSpec

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def make_run(
    tmp_path: Path,
    context_dir: Path,
    entrypoint: str,
    hparams: Dict[str, Any],
    target_length: int,
    trial_id: int = 1,
    run_seq: int = 1,
    data: Optional[Dict[str, Any]] = None,
    parent_checkpoint: Optional[Path] = None,
    unit: str = "batches",
    records_per_epoch: int = 0,
    experiment: str = "exp",
    ranks_per_node: int = 1,
    nodes: int = 1,
) -> Path:
    """Write ``<tmp_path>/<experiment>/runs/<run>/spec.json`` (creating the folder layout) and return
    its path. Calls with the same ``tmp_path`` and ``experiment`` share one experiment folder."""
    layout = ExperimentLayout(Path(tmp_path) / experiment)
    run_id = run_name(trial_id, run_seq)
    layout.run_dir(run_id).mkdir(parents=True, exist_ok=True)
    layout.trial_dir(trial_id).mkdir(parents=True, exist_ok=True)
    spec = RunSpec(
        experiment_dir=str(layout.dir),
        context_dir=str(context_dir),
        trial_id=trial_id,
        run_id=run_id,
        hparams=hparams,
        target_length=target_length,
        entrypoint=entrypoint,
        experiment=experiment,
        unit=unit,
        data=dict(data or {}),
        records_per_epoch=records_per_epoch,
        parent_checkpoint=str(parent_checkpoint) if parent_checkpoint is not None else None,
        nodes=nodes, ranks_per_node=ranks_per_node,
    )
    write_json_atomic(layout.spec_file(run_id), spec.to_json())
    return layout.spec_file(run_id)


# ---- running a job as its own process -------------------------------------------------------------
def job_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_job(spec_path: Path) -> subprocess.Popen:
    """``run_job(spec_path)`` in a fresh Python process, as the Slurm job would run it."""
    code = "import sys; from hpo_slurm.tasks.job import run_job; run_job(sys.argv[1])"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(spec_path)],
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_job_process(spec_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    process = start_job(spec_path)
    output, _ = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, output, None)


def interrupt_job(spec_path: Path, when: Callable[[], bool], timeout: float = 120,
                  signum: int = signal.SIGTERM) -> subprocess.CompletedProcess:
    """Start the job, send ``signum`` to it once ``when()`` is true, and wait for it to end."""
    process = start_job(spec_path)
    deadline = time.monotonic() + timeout
    while not when():
        if process.poll() is not None:
            output = process.stdout.read()
            raise AssertionError(f"job ended (status {process.returncode}) before the signal:\n{output}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting to signal the job")
        time.sleep(0.01)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, output, None)


# ---- reading what the trial wrote -----------------------------------------------------------------
def layout_of(spec_path: Path) -> ExperimentLayout:
    return ExperimentLayout(Path(spec_path).parents[2])


def metrics(spec_path: Path, trial_id: int = 1, kind: Optional[str] = None) -> List[Dict[str, Any]]:
    return trial_metrics(layout_of(spec_path).dir, trial_id, kind)


def trial_metrics(experiment_dir: Path, trial_id: int = 1, kind: Optional[str] = None) -> List[Dict[str, Any]]:
    """The metric lines trial ``trial_id`` of the experiment in ``experiment_dir`` wrote, of ``kind`` if given."""
    path = ExperimentLayout(Path(experiment_dir)).metrics_file(trial_id)
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if kind is None or line["kind"] == kind]


def result(spec_path: Path) -> Dict[str, Any]:
    return json.loads((Path(spec_path).parent / "result.json").read_text())


def checkpoints(spec_path: Path, trial_id: int = 1) -> List[Path]:
    directory = layout_of(spec_path).checkpoints_dir(trial_id)
    return sorted(p for p in directory.glob("length-*") if p.is_dir()) if directory.is_dir() else []


def checkpoint_length(path: Path) -> int:
    return int(json.loads((path / CHECKPOINT_META).read_text())["length"])
