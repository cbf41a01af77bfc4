"""``examples/determined/`` on the real local Slurm cluster: the PyTorchTrial (class entrypoint) and the
Core API script under adaptive ASHA, each with its trials preempted by the urgent partition, end with
exactly the validations of the same search run uninterrupted on the local executor.

Needs `scripts/local-slurm.sh up` (CI runs it). Marked `slurm`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from determined_examples import finished_search, validations  # noqa: E402
from driver_helpers import cli, copy_example, start_cli, wait_for, write_config  # noqa: E402
from slurm_cluster import require_cluster, slurm, wait_until_idle  # noqa: E402

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def cluster():
    require_cluster()
    wait_until_idle()
    yield
    slurm("scancel", "--name", "urgent-preemptor")


@pytest.mark.parametrize("example", ["legacy_adaptive", "core_api_adaptive"])
def test_a_preempted_determined_search_on_slurm_matches_an_uninterrupted_one(tmp_path, monkeypatch, example):
    monkeypatch.delenv("HPO_SLURM_LOCAL_GPUS", raising=False)
    folder = copy_example("determined", tmp_path)
    small = dict(searcher={"max_trials": 4, "max_concurrent_trials": 4})
    reference = write_config(folder / f"{example}.yaml", folder / "reference.yaml", name="reference", **small)
    preempted = write_config(folder / f"{example}.yaml", folder / "preempted.yaml", name="preempted",
                             data={"sleep_per_batch": 0.1},
                             slurm={"poll_interval": 1, "partition": "debug", "mem": "1G"}, **small)
    root = tmp_path / "runs"
    done = cli("launch", str(reference), "--root", str(root), "--executor", "local", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    driver = start_cli("launch", str(preempted), "--root", str(root), "--executor", "slurm")
    for round_ in range(2):
        # once the running trials have trained a while in their jobs, an urgent job takes every GPU
        wait_for(lambda: _trained_in_running_jobs(root / "preempted", round_), timeout=300, interval=1,
                 what="trials to train in their jobs")
        slurm("sbatch", "-p", "urgent", "--gres=gpu:4", "-J", "urgent-preemptor", "-o", "/dev/null",
              "--wrap", "sleep 3")
        time.sleep(6)
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err[-3000:]

    summary = finished_search(root, "preempted")
    assert sum(trial["preemptions"] for trial in summary["trials"]) >= 2
    assert all(trial["restarts"] == 0 for trial in summary["trials"])
    assert validations(root, summary) == validations(root, finished_search(root, "reference"))


def _trained_in_running_jobs(experiment: Path, round_: int) -> bool:
    """Jobs of the search are running and its trials have written validations since the last round."""
    running = slurm("squeue", "-h", "-t", "RUNNING", "-o", "%j").split()
    if not any(name.startswith("hpo.") for name in running):
        return False
    lines = sum(path.read_text().count('"validation"') for path in experiment.glob("trials/*/metrics.jsonl"))
    return lines >= 3 * (round_ + 1)
