"""The distributed digits example (``train_ddp.py``, ``dist_random.yaml``, ``adaptive_dist.yaml``) run for
real: trials of two ranks as local CPU processes in a gloo group, launched by the job. Searches go
through ``hpo-slurm launch``; single runs through ``hpo_slurm.tasks.job.run_job``, as the job runs them."""

from __future__ import annotations

import math

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from driver_helpers import cli, copy_example, status  # noqa: E402
from helpers_spec import (  # noqa: E402
    EXAMPLES,
    checkpoint_length,
    checkpoints,
    interrupt_job,
    make_run,
    metrics,
    result,
    run_job_process,
    trial_metrics,
)
from hpo_slurm.torch import RANK_FILE, STATE_FILE  # noqa: E402

DIGITS = EXAMPLES / "digits"
ENTRYPOINT = "python3 train_ddp.py"
HPARAMS = {"lr": 0.05, "momentum": 0.9, "n_filters": 8, "dropout": 0.25, "batch_size": 32}
RANKS = 2
RANK_FILES = {RANK_FILE.format(rank=k) for k in range(RANKS)}


@pytest.fixture
def no_gpu_override(monkeypatch):
    monkeypatch.delenv("HPO_SLURM_LOCAL_GPUS", raising=False)


@pytest.mark.slow
@pytest.mark.parametrize("name, rungs", [("dist_random", {150}), ("adaptive_dist", {40, 160})])
def test_a_search_of_distributed_trials_completes_with_each_report_recorded_once(
        tmp_path, no_gpu_override, name, rungs):
    digits = copy_example("digits", tmp_path)
    config = yaml.safe_load((digits / f"{name}.yaml").read_text())
    assert config["resources"]["slots_per_trial"] == RANKS
    root = tmp_path / "runs"
    done = cli("launch", str(digits / f"{name}.yaml"), "--root", str(root), "--executor", "local", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = status(root, config["name"])
    assert summary["state"] == "COMPLETED" and summary["best"] is not None
    assert len(summary["trials"]) == config["searcher"]["max_trials"]
    assert all(t["state"] in ("COMPLETED", "STOPPED_EARLY") for t in summary["trials"])

    trial_dirs = sorted((root / config["name"] / "trials").iterdir())
    assert len(trial_dirs) == config["searcher"]["max_trials"]
    for trial_dir in trial_dirs:
        lines = trial_metrics(root / config["name"], int(trial_dir.name))
        validations = [line["length"] for line in lines if line["kind"] == "validation"]
        assert validations == sorted(set(validations)), (trial_dir.name, validations)  # each length once
        assert validations and set(validations) <= rungs
        if name == "dist_random":
            assert validations == [150]
        reported = [(line["kind"], line["length"], line["run"]) for line in lines]
        assert len(reported) == len(set(reported))  # rank 1's reports were not recorded
        for line in lines:
            assert all(math.isfinite(value) for value in line["metrics"].values()), line
        # the trial ran as two ranks: its checkpoint holds the model once and each rank's generators
        newest = max((p for p in (trial_dir / "checkpoints").iterdir() if p.name.startswith("length-")),
                     key=lambda p: p.name)
        assert {STATE_FILE, *RANK_FILES} <= {p.name for p in newest.iterdir()}


@pytest.mark.slow
def test_train_ddp_stopped_and_resumed_reports_what_an_uninterrupted_run_reports(tmp_path):
    target, every = 120, 10
    reference = make_run(tmp_path / "reference", DIGITS, ENTRYPOINT, HPARAMS, target, data={"report_every": every},
                         ranks_per_node=RANKS)
    process = run_job_process(reference)
    assert process.returncode == 0, process.stdout
    expected = [(m["kind"], m["length"], m["metrics"]) for m in metrics(reference)]
    assert [(kind, length) for kind, length, _ in expected] == \
        [("training", n) for n in range(every, target + 1, every)] + [("validation", target)]

    first = make_run(tmp_path / "resumed", DIGITS, ENTRYPOINT, HPARAMS, target,
                     data={"report_every": every, "sleep_per_batch": 0.02}, ranks_per_node=RANKS)
    process = interrupt_job(first, lambda: any(m["length"] >= 30 for m in metrics(first, kind="training")))
    assert result(first)["status"] == "stopped", (result(first), process.stdout)
    [stopped] = checkpoints(first)
    stopped_at = checkpoint_length(stopped)
    assert 30 <= stopped_at < target
    assert {STATE_FILE, *RANK_FILES} <= {p.name for p in stopped.iterdir()}

    second = make_run(tmp_path / "resumed", DIGITS, ENTRYPOINT, HPARAMS, target, run_seq=2,
                      data={"report_every": every}, ranks_per_node=RANKS)
    process = run_job_process(second)
    assert process.returncode == 0, process.stdout
    assert result(second)["status"] == "exited"
    resumed = [m["length"] for m in metrics(second, kind="training") if m["run"] == "t1-r2"]
    assert resumed[0] > stopped_at  # resumed, not restarted
    latest = {}
    for line in metrics(second):  # a run may repeat lengths after the last checkpoint: keep the latest
        latest[(line["kind"], line["length"])] = line["metrics"]
    assert sorted(latest) == sorted((kind, length) for kind, length, _ in expected)
    assert [(kind, length, latest[(kind, length)]) for kind, length, _ in expected] == expected  # exact floats


def test_a_batch_that_does_not_split_over_the_ranks_is_an_invalid_hp(tmp_path):
    spec = make_run(tmp_path, DIGITS, ENTRYPOINT, {**HPARAMS, "batch_size": 15}, 10, ranks_per_node=RANKS)
    process = run_job_process(spec)
    assert process.returncode == 0, process.stdout
    assert result(spec)["status"] == "invalid_hp"
    assert "batch_size 15 does not split over 2 ranks" in result(spec)["message"]
    assert metrics(spec) == [] and checkpoints(spec) == []


def test_with_one_rank_train_ddp_is_a_single_process_trainer(tmp_path):
    spec = make_run(tmp_path, DIGITS, ENTRYPOINT, HPARAMS, 20, data={"report_every": 10})
    process = run_job_process(spec)
    assert process.returncode == 0, process.stdout
    assert [(m["kind"], m["length"]) for m in metrics(spec)] == [("training", 10), ("training", 20), ("validation", 20)]
    [final] = checkpoints(spec)
    assert STATE_FILE in {p.name for p in final.iterdir()}
    assert not RANK_FILES & {p.name for p in final.iterdir()}
