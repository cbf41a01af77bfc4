"""The task side of the Slurm executor, without a cluster: ``python -m hpo_slurm.tasks.slurm_task FOLDER``
run as Slurm would run a task of a job array (Slurm's environment variables set by hand)."""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from submitit.core.utils import DelayedSubmission

from helpers_spec import EXAMPLES, job_env
from hpo_slurm.executors.slurm.executor import BatchExecutor
from hpo_slurm.core.fsio import read_json, write_json_atomic
from hpo_slurm.core.layout import ExperimentLayout, run_name
from hpo_slurm.core.protocol import PROTOCOL_VERSION, BatchManifest, RunResult, RunSpec, RunStatus
from hpo_slurm.tasks.slurm_task import MANIFEST, SHARED_PICKLE, run_task, task_index

HPARAMS = {"optimizer": {"lr": 0.05, "momentum": 0.8}, "layers": 3, "activation": "tanh"}
ARRAY_JOB = "4242"


def spec_of(layout: ExperimentLayout, trial_id: int) -> Dict[str, Any]:
    return {
        "experiment": layout.name, "experiment_dir": str(layout.dir), "context_dir": str(EXAMPLES / "quadratic"),
        "trial_id": trial_id, "run_id": run_name(trial_id, 1), "hparams": {**HPARAMS, "layers": trial_id},
        "target_length": 12, "from_length": 0, "unit": "batches", "parent_checkpoint": None,
        "entrypoint": "python3 train.py", "metric": "validation_loss", "smaller_is_better": True,
        "time_limit_s": None, "signal_delay_s": 30, "data": {"sleep_per_unit": 0.0}, "records_per_epoch": 0,
    }


def make_batch(tmp_path: Path, count: int, written_by_0_1_0: bool = False) -> tuple:
    """An experiment folder and a batch folder as ``SlurmExecutor._submit_batch`` leaves them, or as
    hpo-slurm 0.1.0 left them (a manifest without protocol versions)."""
    layout = ExperimentLayout(tmp_path / "exp")
    specs = [spec_of(layout, trial_id) for trial_id in range(1, count + 1)]
    folder = layout.dir / "jobs" / f"hpo.test.{specs[0]['run_id']}+{count - 1}"
    folder.mkdir(parents=True)
    if written_by_0_1_0:
        manifest = {"runs": [s["run_id"] for s in specs], "specs": specs}
    else:
        manifest = BatchManifest(tuple(RunSpec.from_json(s) for s in specs)).to_json()
        specs = manifest["specs"]
    write_json_atomic(folder / MANIFEST, manifest)
    executor = BatchExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(job_name=folder.name, time=5)
    if written_by_0_1_0:
        # hpo-slurm 0.1.0 pickled its task function by reference as ``hpo_slurm.slurm_task.run_task``
        importlib.import_module("hpo_slurm.slurm_task")
        run_task.__module__ = "hpo_slurm.slurm_task"
        try:
            executor.write_shared_pickle(DelayedSubmission(run_task, str(folder / MANIFEST)))
        finally:
            run_task.__module__ = "hpo_slurm.tasks.slurm_task"
        assert b"hpo_slurm.slurm_task" in (folder / SHARED_PICKLE).read_bytes()
        assert b"hpo_slurm.tasks.slurm_task" not in (folder / SHARED_PICKLE).read_bytes()
    else:
        executor.write_shared_pickle(DelayedSubmission(run_task, str(folder / MANIFEST)))
    return layout, folder, specs


def run_task_process(folder: Path, index: int, restart: int = 0,
                     module: str = "hpo_slurm.tasks.slurm_task") -> subprocess.CompletedProcess:
    """Run task ``index`` of the batch in ``folder`` as its Slurm job would: ``python -u -m MODULE
    FOLDER`` (jobs queued by hpo-slurm 0.1.0 name ``hpo_slurm.slurm_task``)."""
    env = job_env()
    env.update(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID=str(int(ARRAY_JOB) + index), SLURM_ARRAY_JOB_ID=ARRAY_JOB,
               SLURM_ARRAY_TASK_ID=str(index), SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
               SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_RESTART_COUNT=str(restart))
    return subprocess.run([sys.executable, "-u", "-m", module, str(folder)], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("written_by_0_1_0", [False, True], ids=["current", "0.1.0"])
def test_a_task_links_the_shared_pickle_and_writes_its_spec_from_the_manifest(tmp_path, written_by_0_1_0):
    layout, folder, specs = make_batch(tmp_path, 3, written_by_0_1_0)
    assert not (layout.dir / "runs").exists()
    done = run_task_process(folder, 1, module="hpo_slurm.slurm_task" if written_by_0_1_0 else "hpo_slurm.tasks.slurm_task")
    assert done.returncode == 0, done.stderr[-3000:]
    # submitit's own name for this task's pickle is the batch's one pickle
    assert (folder / f"{ARRAY_JOB}_1_submitted.pkl").samefile(folder / SHARED_PICKLE)
    assert sorted(p.name for p in folder.glob("*.pkl")) == sorted(
        [SHARED_PICKLE, f"{ARRAY_JOB}_1_submitted.pkl", f"{ARRAY_JOB}_1_0_result.pkl"])
    # only task 1's run exists, with the spec its manifest entry holds, in the current protocol
    assert sorted(p.name for p in (layout.dir / "runs").iterdir()) == [specs[1]["run_id"]]
    written = read_json(layout.spec_file(specs[1]["run_id"]))
    assert written == {"nodes": 1, "ranks_per_node": 1, "trial_seed": 0, "experiment_config": {}, **specs[1],
                       "protocol": PROTOCOL_VERSION}
    result = read_json(layout.result_file(specs[1]["run_id"]))
    assert result["status"] == "exited" and result["protocol"] == PROTOCOL_VERSION
    outcome, value = pickle.loads((folder / f"{ARRAY_JOB}_1_0_result.pkl").read_bytes())
    assert outcome == "success" and isinstance(value, RunResult) and value.status is RunStatus.EXITED
    validations = [json.loads(line) for line in layout.metrics_file(2).read_text().splitlines()
                   if json.loads(line)["kind"] == "validation"]
    assert [v["length"] for v in validations] == [12]
    # submitit's output files of the task are linked into the run's folder (hpo-slurm logs reads there)
    run_dir = layout.run_dir(specs[1]["run_id"])
    assert os.readlink(run_dir / f"{ARRAY_JOB}_1_0_log.out") == str(folder / f"{ARRAY_JOB}_1_0_log.out")


def test_a_requeued_task_finds_its_pickle_and_spec_again(tmp_path):
    layout, folder, specs = make_batch(tmp_path, 2)
    first = run_task_process(folder, 0)
    assert first.returncode == 0, first.stderr[-3000:]
    spec_file = layout.spec_file(specs[0]["run_id"])
    written = spec_file.stat().st_mtime_ns
    again = run_task_process(folder, 0, restart=1)  # Slurm starts a requeued task under the same id
    assert again.returncode == 0, again.stderr[-3000:]
    assert spec_file.stat().st_mtime_ns == written  # kept, not rewritten
    attempts = [json.loads(line) for line in layout.attempts_file(specs[0]["run_id"]).read_text().splitlines()]
    assert [(a["attempt"], a["array_task_id"], a["restart_count"]) for a in attempts] == [(1, "0", 0), (2, "0", 1)]


def test_a_failing_trial_fails_the_task_with_submitit_s_error_pickle(tmp_path):
    layout, folder, specs = make_batch(tmp_path, 2)
    manifest = read_json(folder / MANIFEST)
    manifest["specs"][1]["data"] = {"fail_always": True}
    write_json_atomic(folder / MANIFEST, manifest)
    done = run_task_process(folder, 1)
    assert done.returncode != 0
    outcome, trace = pickle.loads((folder / f"{ARRAY_JOB}_1_0_result.pkl").read_bytes())
    assert outcome == "error" and "TrialFailed" in trace
    assert read_json(layout.result_file(specs[1]["run_id"]))["status"] == "failed"


def test_task_index_comes_from_the_array_and_is_checked(monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert task_index(1) == 0  # a lone job
    with pytest.raises(RuntimeError, match="needs SLURM_ARRAY_TASK_ID"):
        task_index(3)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert task_index(3) == 2
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    with pytest.raises(RuntimeError, match="outside the batch of 3"):
        task_index(3)


def test_the_rendered_script_runs_the_task_entry_on_the_quoted_batch_folder(tmp_path):
    layout, folder, specs = make_batch(tmp_path / "a dir; with 'quotes'", 2)
    executor = BatchExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(job_name=folder.name, time=5)
    executor.parameters["map_count"] = 2
    text = executor._make_submission_file_text(executor._submitit_command_str, "uid")
    command = text.strip().splitlines()[-1]
    words: List[str] = shlex.split(command)
    assert words[-4:-1] == ["-u", "-m", "hpo_slurm.tasks.slurm_task"] and words[-1] == str(folder)
    assert "#SBATCH --array=0-1%2" in text
    assert "momentum" not in text and "tanh" not in text  # hyperparameters never reach the script
