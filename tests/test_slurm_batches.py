"""Batches of the Slurm executor on the real local cluster: one manifest and one pickle per batch,
specs written by the tasks, jobs found by name after a driver died, a requeued array task resuming.

Needs `scripts/local-slurm.sh up`. Marked `slurm`.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from driver_helpers import copy_example, write_config
from slurm_cluster import require_cluster, slurm, wait_until_idle
from hpo_slurm.experiment import folder as experiments
from hpo_slurm.config.schema import load_config
from hpo_slurm.engine.driver import Driver
from hpo_slurm.engine.searcher_log import load_searcher
from hpo_slurm.executors.base import JobRequest
from hpo_slurm.executors.slurm.executor import SlurmExecutor
from hpo_slurm.core.fsio import read_json
from hpo_slurm.core.protocol import RunSpec
from hpo_slurm.reporting.logs import run_log_files
from hpo_slurm.tasks.slurm_task import MANIFEST, SHARED_PICKLE
from hpo_slurm.experiment.store import Store

pytestmark = pytest.mark.slurm

FAST = {"poll_interval": 1, "partition": "debug", "mem": "500M", "time": 5}


@pytest.fixture(autouse=True)
def cluster(tmp_path):
    require_cluster()
    wait_until_idle()
    prefixes: List[str] = []
    yield prefixes
    for line in slurm("squeue", "-h", "-o", "%A|%j").splitlines():  # whatever this test left in the queue
        job_id, name = line.split("|", 1)
        if any(name.startswith(prefix) for prefix in prefixes):
            subprocess.run(["scancel", job_id], capture_output=True)


def open_driver(tmp_path: Path, name: str, prefixes: List[str], **changes: Any) -> Driver:
    quadratic = copy_example("quadratic", tmp_path)
    path = write_config(quadratic / "random.yaml", quadratic / f"{name}.yaml", name=name, **changes)
    config = load_config(str(path))
    layout = experiments.create(config, path, tmp_path / "runs", name, "slurm")
    store = Store.open(layout.database)
    searcher, fresh = load_searcher(config, store)
    driver = Driver(layout, config, store, SlurmExecutor(config, layout.dir), searcher, poll_interval_s=1)
    prefixes.append(driver.job_prefix)
    driver.start(fresh=fresh)
    return driver


def drive(driver: Driver, timeout: float = 300, each_tick=lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not driver.done:
        assert time.monotonic() < deadline, "the search did not finish in time"
        time.sleep(0.5)
        driver.tick()
        each_tick()
    driver.store.close()


def test_runs_of_mixed_time_limits_come_back_in_request_order(tmp_path, cluster):
    # batches group runs by resources; the jobs must still come back in the order of the requests
    quadratic = copy_example("quadratic", tmp_path)
    config = load_config(str(write_config(quadratic / "random.yaml", quadratic / "mixed.yaml", name="mixed",
                                          slurm={**FAST, "extra_args": {"hold": True}})))
    experiment = tmp_path / "mixed"
    executor = SlurmExecutor(config, experiment)
    prefix = f"hpo.mixed{time.time_ns() % 10**8:08d}."
    cluster.append(prefix)
    minutes = [5, 6, 5, 7, 6, 5]
    requests = [JobRequest(run_id=f"t{i}-r1", job_name=f"{prefix}t{i}-r1", run_dir=experiment / "runs" / f"t{i}-r1",
                           spec_path=experiment / "runs" / f"t{i}-r1" / "spec.json", gpus=0, time_minutes=m,
                           spec=RunSpec(str(experiment), str(quadratic), i, f"t{i}-r1", {}, 1, "true"))
                for i, m in enumerate(minutes)]
    submitted = executor.submit(requests)
    queued = {}
    for line in slurm("squeue", "-h", "-r", "-o", "%i|%j|%l").splitlines():
        job_id, name, limit = line.split("|")
        queued[job_id] = (name, limit)
    assert len({job.job_id for job in submitted}) == len(requests)
    for request, job in zip(requests, submitted):
        name, limit = queued[job.job_id]
        _, _, index = job.job_id.partition("_")
        assert read_json(experiment / "jobs" / name / MANIFEST)["runs"][int(index or 0)] == request.run_id
        assert limit == f"{request.time_minutes}:00"
    slurm("scancel", *{job.job_id.split("_")[0] for job in submitted})


def test_a_batch_is_one_manifest_and_one_pickle_and_its_tasks_write_their_specs(tmp_path, cluster):
    driver = open_driver(tmp_path, "held", cluster, searcher={"max_trials": 3, "max_concurrent_trials": 3},
                         slurm={**FAST, "extra_args": {"hold": True}})
    layout = driver.layout
    runs = sorted(driver.runs.values(), key=lambda r: r["job_id"])
    job_ids = [r["job_id"] for r in runs]
    base = job_ids[0].split("_")[0]
    assert job_ids == [f"{base}_{index}" for index in range(3)]  # one array
    # the driver wrote one manifest and one pickle for the batch, nothing per run or per task
    assert not (layout.dir / "runs").exists()
    (folder,) = [p.parent for p in layout.dir.glob(f"jobs/*/{MANIFEST}")]
    assert sorted(p.name for p in folder.glob("*.pkl")) == [SHARED_PICKLE]
    manifest = read_json(folder / MANIFEST)
    assert manifest["runs"] == [r["id"] for r in runs]
    assert [s["run_id"] for s in manifest["specs"]] == manifest["runs"]
    # a driver that died before recording the job ids finds the same jobs by name; nothing to repair
    requests = [driver._request(r) for r in runs]
    assert SlurmExecutor(driver.config, layout.dir).find(requests) == {r["id"]: r["job_id"] for r in runs}
    slurm("scontrol", "release", base)
    drive(driver)
    assert driver.experiment["state"] == "COMPLETED"
    for index, run_id in enumerate(manifest["runs"]):
        assert driver.runs[run_id]["state"] == "SUCCEEDED"
        assert read_json(layout.spec_file(run_id)) == manifest["specs"][index]
        assert (folder / f"{base}_{index}_submitted.pkl").samefile(folder / SHARED_PICKLE)
        out = [p for p in run_log_files(layout, run_id) if p.name.endswith("_log.out")]
        assert out and "Job completed successfully" in out[0].read_text()


def _training_lengths(layout, trial_id: int) -> List[int]:
    lines = [json.loads(line) for line in layout.metrics_file(trial_id).read_text().splitlines() if line.strip()]
    return [line["length"] for line in lines if line["kind"] == "training"]


def test_a_requeued_array_task_finds_its_spec_again_and_resumes_from_its_checkpoint(tmp_path, cluster):
    driver = open_driver(tmp_path, "requeued", cluster, slurm=FAST, data={"sleep_per_unit": 0.25},
                         searcher={"max_trials": 2, "max_concurrent_trials": 2, "max_length": {"batches": 40}})
    layout = driver.layout
    (task,) = [r for r in driver.runs.values() if r["job_id"].endswith("_1")]
    requeued: Dict[str, bool] = {}

    def requeue_once() -> None:
        if not requeued and layout.metrics_file(task["trial_id"]).exists() and \
                len(_training_lengths(layout, task["trial_id"])) >= 3:
            slurm("scontrol", "requeue", task["job_id"])
            requeued["at"] = True

    drive(driver, each_tick=requeue_once)
    assert requeued, "the task ended before it could be requeued"
    assert driver.experiment["state"] == "COMPLETED"
    assert driver.runs[task["id"]]["state"] == "SUCCEEDED"
    assert driver.trials[task["trial_id"]]["preemptions"] == 1 and driver.trials[task["trial_id"]]["restarts"] == 0
    assert len(driver.runs) == 2  # the requeued task did the work: no new run
    attempts = [json.loads(line) for line in layout.attempts_file(task["id"]).read_text().splitlines()]
    assert [(a["attempt"], a["array_job_id"] + "_" + a["array_task_id"], a["restart_count"]) for a in attempts] == [
        (1, task["job_id"], 0), (2, task["job_id"], 1)]
    # the second attempt went on from the first one's checkpoint: no length trained twice
    lengths = _training_lengths(layout, task["trial_id"])
    assert lengths == sorted(set(lengths)) and lengths[-1] == 40
