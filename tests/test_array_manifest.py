"""A sweep array's manifest: written with its runs' specs (a protocol batch manifest plus the array's
keys), read back by the executor and by the array's tasks, and manifests of hpo-slurm 0.1.0 (spec
paths) still read and run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_spec import REPO, make_run
from hpo_slurm.config.schema import load_config
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import BatchManifest, ProtocolError, RunSpec
from hpo_slurm.executors.array.caps import Limits, plan_requests
from hpo_slurm.executors.array.files import ArrayFolders
from hpo_slurm.executors.array.manifest import ArrayManifest
from hpo_slurm.executors.array.scripts import ArrayScripts
from hpo_slurm.executors.base import JobRequest
from hpo_slurm.tasks.sweep_task import task_run

QUADRATIC = REPO / "examples" / "quadratic"


def spec(experiment_dir: Path, run_id: str, trial_id: int = 1, entrypoint: str = "true") -> RunSpec:
    return RunSpec(experiment_dir=str(experiment_dir), context_dir=str(experiment_dir), trial_id=trial_id,
                   run_id=run_id, hparams={"lr": 0.1, "name": "$(touch x)"}, target_length=5, entrypoint=entrypoint)


def test_the_manifest_is_a_batch_manifest_with_the_arrays_keys(tmp_path):
    specs = (spec(tmp_path, "t1-r1"), spec(tmp_path, "t2-r1", trial_id=2))
    manifest = ArrayManifest.of(3, str(tmp_path), "hpo.u.array-3", specs, wave_name="hpo.u.wave-3", previous=2,
                                gpus=1, time_minutes=30, throttle=4)
    data = json.loads(json.dumps(manifest.to_json()))
    assert data["runs"] == ["t1-r1", "t2-r1"] and data["array"] == 3 and data["wave_name"] == "hpo.u.wave-3"
    assert data["next"] is None and data["previous"] == 2 and data["throttle"] == 4
    assert BatchManifest.from_json(data).specs == specs  # what the protocol reads
    assert ArrayManifest.from_json(data) == manifest


def test_a_manifest_of_hpo_slurm_0_1_0_lists_spec_paths(tmp_path):
    data = {"array": 0, "experiment_dir": str(tmp_path), "job_name": "hpo.u.array-0", "wave_name": None,
            "previous": None, "next": 1, "runs": ["t1-r1"], "specs": [str(tmp_path / "runs/t1-r1/spec.json")],
            "gpus": 0, "time_minutes": None, "throttle": 2}
    manifest = ArrayManifest.from_json(data)
    assert manifest.runs == ("t1-r1",) and manifest.specs == () and manifest.next == 1
    assert manifest.spec_paths == (str(tmp_path / "runs/t1-r1/spec.json"),)
    assert manifest.to_json() == data


@pytest.mark.parametrize("change, message", [
    ({"array": None}, "no 'array'"), ({"job_name": 7}, "'job_name' must be str"),
    ({"runs": ["t1-r1", "t2-r1"]}, "2 runs but 1 specs"), ({"protocol": 99}, "newer hpo-slurm"),
])
def test_a_bad_manifest_is_refused_with_the_reason(tmp_path, change, message):
    data = ArrayManifest.of(0, str(tmp_path), "hpo.u.array-0", (spec(tmp_path, "t1-r1"),)).to_json()
    with pytest.raises(ProtocolError, match=message):
        ArrayManifest.from_json({**data, **change})
    folders = ArrayFolders(tmp_path / "jobs")
    folders.folder(0).mkdir(parents=True)
    folders.manifest_path(0).write_text(json.dumps({**data, **change}))
    assert folders.manifest(0) is None  # the executor takes it for unreadable


def test_planned_arrays_are_written_with_their_specs(tmp_path):
    config = load_config(str(QUADRATIC / "random.yaml"))
    folders = ArrayFolders(tmp_path / "jobs")
    scripts = ArrayScripts(config, tmp_path, folders, throttle=2, python=sys.executable)
    requests = [JobRequest(run_id=f"t{i}-r1", job_name=f"hpo.u.t{i}-r1", run_dir=tmp_path, spec_path=tmp_path / "s",
                           gpus=0, spec=spec(tmp_path, f"t{i}-r1", trial_id=i)) for i in range(1, 6)]
    arrays, plan = plan_requests(requests, Limits(room=4), first_index=0)  # waves of 2
    scripts.write(arrays, plan, "hpo.u.")
    assert folders.indexes() == [0, 1, 2]
    second = folders.manifest(1)
    assert second is not None and second.runs == ("t3-r1", "t4-r1") and second.specs == (requests[2].spec, requests[3].spec)
    assert (second.previous, second.next, second.wave_name) == (0, 2, "hpo.u.wave-1")
    assert (folders.folder(1) / "wave.sbatch").exists() and not (folders.folder(0) / "wave.sbatch").exists()
    assert "$(touch x)" not in (folders.folder(1) / "array.sbatch").read_text()
    with pytest.raises(ValueError, match="no spec"):
        scripts.write(plan_requests([JobRequest("t9-r1", "hpo.u.t9-r1", tmp_path, tmp_path / "s", 0)], Limits(), 5)[0],
                      plan, "hpo.u.")


def test_a_task_finds_its_run_in_either_manifest(tmp_path):
    layout = ExperimentLayout(tmp_path / "exp")
    current = tmp_path / "current.json"
    current.write_text(json.dumps(ArrayManifest.of(0, str(layout.dir), "a", (spec(layout.dir, "t1-r1"),
                                                                             spec(layout.dir, "t2-r1", 2))).to_json()))
    found = task_run(current, 1)
    assert found.spec.run_id == "t2-r1" and found.spec_to_write and found.spec_path == layout.spec_file("t2-r1")
    with pytest.raises(IndexError, match="has 2 tasks"):
        task_run(current, 2)
    path = make_run(tmp_path, tmp_path, "true", {"lr": 1}, 5)  # a spec file the 0.1.0 driver wrote
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"array": 4, "experiment_dir": str(tmp_path / "exp"), "runs": ["t1-r1"],
                                  "specs": [str(path)]}))
    found = task_run(legacy, 0)
    assert found.spec_path == path and not found.spec_to_write and found.array == 4 and found.spec.hparams == {"lr": 1}
    legacy.write_text(json.dumps({"array": 4, "runs": ["t9-r1"], "specs": [str(path)]}))
    with pytest.raises(ProtocolError, match="task 0 is run t9-r1 but its spec is t1-r1"):
        task_run(legacy, 0)


def run_task(manifest: Path, task: int, module: str = "hpo_slurm.tasks.sweep_task") -> subprocess.CompletedProcess:
    """Run task ``task`` of an array as its script does: ``python -m MODULE MANIFEST`` (arrays queued
    by hpo-slurm 0.1.0 name ``hpo_slurm.sweep_task``)."""
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_JOB_ID": "77",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", module, str(manifest)], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("written_by", ["this version", "0.1.0"])
def test_a_task_runs_its_run_and_writes_its_spec_file(tmp_path, written_by):
    layout = ExperimentLayout(tmp_path / "exp")
    specs = (spec(layout.dir, "t1-r1", entrypoint="true"), spec(layout.dir, "t2-r1", 2, entrypoint="exit 3"))
    manifest = layout.dir / "jobs" / "array-0" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    if written_by == "0.1.0":
        for one in specs:
            layout.run_dir(one.run_id).mkdir(parents=True)
            layout.trial_dir(one.trial_id).mkdir(parents=True)
            layout.spec_file(one.run_id).write_text(json.dumps({k: v for k, v in one.to_json().items() if k != "protocol"}))
        data = {"array": 0, "experiment_dir": str(layout.dir), "runs": ["t1-r1", "t2-r1"],
                "specs": [str(layout.spec_file("t1-r1")), str(layout.spec_file("t2-r1"))]}
    else:
        data = ArrayManifest.of(0, str(layout.dir), "hpo.u.array-0", specs).to_json()
    manifest.write_text(json.dumps(data))
    done = run_task(manifest, 0, "hpo_slurm.sweep_task" if written_by == "0.1.0" else "hpo_slurm.tasks.sweep_task")
    assert done.returncode == 0, done.stderr
    assert RunSpec.read(layout.spec_file("t1-r1")) == specs[0]
    assert json.loads(layout.result_file("t1-r1").read_text())["status"] == "exited"
    assert "task 0 of array 0: run t1-r1, job 77_0" in (layout.run_dir("t1-r1") / "77_0_log.out").read_text()
    assert run_task(manifest, 1).returncode == 1  # the trial failed: so does the task
    assert json.loads(layout.result_file("t2-r1").read_text())["status"] == "failed"
    done = run_task(manifest, 2)
    assert done.returncode == 2 and "has 2 tasks" in done.stderr


def test_a_spec_a_task_cannot_read_is_reported_in_the_run_s_log(tmp_path):
    layout = ExperimentLayout(tmp_path / "exp")
    path = make_run(tmp_path, tmp_path, "true", {"lr": 1}, 5)  # a 0.1.0 array: its spec file, here torn
    path.write_text('{"run_id": "t1-r1", "hpar')
    manifest = layout.dir / "jobs" / "array-0" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"array": 0, "experiment_dir": str(layout.dir), "runs": ["t1-r1"],
                                    "specs": [str(path)]}))
    done = run_task(manifest, 0, "hpo_slurm.sweep_task")
    assert done.returncode != 0 and done.stderr == ""  # nothing lost to the array's own Slurm log
    assert "not JSON" in (layout.run_dir("t1-r1") / "77_0_log.err").read_text()  # where `hpo-slurm logs` reads
