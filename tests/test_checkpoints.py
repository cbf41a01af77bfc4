"""Checkpoint garbage collection follows checkpoint_storage."""

from __future__ import annotations

import json

from driver_helpers import cli, copy_example, status

from hpo_slurm.engine.checkpoints import collect_garbage, published_checkpoints
from hpo_slurm.config.schema import CheckpointStorage, ExperimentConfig, SearcherConfig
from hpo_slurm.core.layout import CHECKPOINT_META, ExperimentLayout, checkpoint_name
from hpo_slurm.config.space import Nested


def make_checkpoints(layout: ExperimentLayout, trial_id: int, lengths):
    for length in lengths:
        folder = layout.checkpoints_dir(trial_id) / checkpoint_name(length)
        folder.mkdir(parents=True)
        (folder / "weights.bin").write_bytes(b"x" * 100)
        (folder / CHECKPOINT_META).write_text(json.dumps({"length": length}))


def config(**policy) -> ExperimentConfig:
    return ExperimentConfig(source="t.yaml", name="t", entrypoint="x", hyperparameters=Nested(()),
                            searcher=SearcherConfig(name="single", metric="loss", max_length=64),
                            checkpoint_storage=CheckpointStorage(**policy))


def trial(trial_id, state, best_metric=None, best_length=None):
    return {"id": trial_id, "state": state, "best_metric": best_metric, "best_length": best_length,
            "parent_checkpoint": None}


def test_a_finished_trial_keeps_its_latest_and_its_best(tmp_path):
    layout = ExperimentLayout(tmp_path / "exp")
    make_checkpoints(layout, 1, [4, 16, 64])
    trials = {1: trial(1, "COMPLETED", 0.2, 16)}
    used = collect_garbage(layout, config(), trials, 1, {4: 0.5, 16: 0.2, 64: 0.3})
    assert sorted(published_checkpoints(layout, 1)) == [16, 64]
    assert used > 200


def test_policies_of_zero_and_more(tmp_path):
    layout = ExperimentLayout(tmp_path / "exp")
    make_checkpoints(layout, 1, [4, 16, 64])
    make_checkpoints(layout, 2, [4, 16])
    trials = {1: trial(1, "COMPLETED", 0.1, 4), 2: trial(2, "RUNNING", 0.9, 16)}
    metrics = {4: 0.1, 16: 0.4, 64: 0.2}
    collect_garbage(layout, config(save_trial_latest=2, save_trial_best=0), trials, 1, metrics)
    assert sorted(published_checkpoints(layout, 1)) == [16, 64]
    # a trial that can still run keeps its latest whatever the policy says
    collect_garbage(layout, config(save_trial_latest=0, save_trial_best=0), trials, 2, {4: 0.95, 16: 0.9})
    assert sorted(published_checkpoints(layout, 2)) == [16]
    # the experiment's best trial keeps its best checkpoint even with no per-trial keeping
    collect_garbage(layout, config(save_trial_latest=0, save_trial_best=0, save_experiment_best=1), trials, 1,
                    {16: 0.4, 64: 0.05})
    assert sorted(published_checkpoints(layout, 1)) == [64]


def test_a_checkpoint_a_pbt_child_starts_from_is_kept(tmp_path):
    layout = ExperimentLayout(tmp_path / "exp")
    make_checkpoints(layout, 1, [10, 20])
    parent_checkpoint = str(layout.checkpoints_dir(1) / checkpoint_name(10))
    trials = {1: trial(1, "COMPLETED", 0.1, 20)}
    collect_garbage(layout, config(), trials, 1, {10: 0.5, 20: 0.1}, referenced={parent_checkpoint})
    assert sorted(published_checkpoints(layout, 1)) == [10, 20]


def test_a_search_leaves_one_checkpoint_per_trial_and_status_shows_disk_use(tmp_path):
    quadratic = copy_example("quadratic", tmp_path)
    root = tmp_path / "runs"
    done = cli("launch", str(quadratic / "adaptive.yaml"), "--root", str(root), "--executor", "local")
    assert done.returncode == 0, done.stderr
    experiment = root / "quadratic-adaptive"
    summary = status(root, "quadratic-adaptive")
    for t in summary["trials"]:
        kept = list((experiment / "trials" / str(t["id"]) / "checkpoints").glob("length-*"))
        assert 1 <= len(kept) <= 2, (t["id"], kept)  # latest and best (often the same one)
        assert t["checkpoint_bytes"] > 0
    assert summary["checkpoint_bytes"] == sum(t["checkpoint_bytes"] for t in summary["trials"])
