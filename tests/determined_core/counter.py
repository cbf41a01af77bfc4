"""Determined's core_api tutorial, stages 1-3 (metrics, checkpoints, hyperparameter search), written for
these tests: x grows by increment_by each batch; every `every` batches the script reports training and
validation metrics, checkpoints, and asks should_preempt(). It trains to its own `max_length` (the
config's data), as Determined 0.38 scripts do. It writes what it saw to probe-<run>.json next to its
run's spec (test instrumentation only)."""

import json
import logging
import os
import pathlib
import time

import determined as det


def save_state(x, steps_completed, trial_id, checkpoint_directory):
    with checkpoint_directory.joinpath("state").open("w") as f:
        f.write(f"{x},{steps_completed},{trial_id}")


def load_state(trial_id, checkpoint_directory):
    checkpoint_directory = pathlib.Path(checkpoint_directory)
    with checkpoint_directory.joinpath("state").open("r") as f:
        x, steps_completed, ckpt_trial_id = [int(field) for field in f.read().split(",")]
    if ckpt_trial_id == trial_id:
        return x, steps_completed
    return x, 0


def main(core_context, info):
    increment_by = info.trial.hparams["increment_by"]
    data = info.user_data
    max_length, every, pause = data["max_length"], data.get("every", 10), data.get("sleep_per_batch", 0.0)
    x, starting_batch = 0, 0
    if info.latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(info.latest_checkpoint) as path:
            x, starting_batch = load_state(info.trial.trial_id, path)
    probe = {"latest_checkpoint": info.latest_checkpoint, "start": starting_batch, "x_start": x,
             "trial_id": info.trial.trial_id, "experiment_id": info.trial.experiment_id,
             "trial_seed": info.trial.trial_seed, "searcher": info.trial._config["searcher"]["name"],
             "task_type": info.task_type, "container_rank": info.container_rank, "stored": []}
    for batch in range(starting_batch, max_length):
        x += increment_by
        steps_completed = batch + 1
        time.sleep(pause)
        if steps_completed % every == 0:
            core_context.train.report_training_metrics(steps_completed=steps_completed, metrics={"x": x})
            core_context.train.report_progress(steps_completed / float(max_length))
            core_context.train.report_validation_metrics(steps_completed=steps_completed,
                                                         metrics={"x": x, "batches": steps_completed})
            with core_context.checkpoint.store_path({"steps_completed": steps_completed}) as (path, storage_id):
                save_state(x, steps_completed, info.trial.trial_id, path)
            probe["stored"].append(storage_id)
            if core_context.preempt.should_preempt():
                probe["preempted_at"] = steps_completed
                break
    spec = pathlib.Path(os.environ["HPO_SLURM_SPEC"])
    (spec.parent / "probe.json").write_text(json.dumps(probe))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    info = det.get_cluster_info()
    assert info is not None, "this example only runs on-cluster"
    with det.core.init() as core_context:
        main(core_context, info)
