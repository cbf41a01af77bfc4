"""Train the digits CNN as an hpo-slurm trial, resuming exactly from its latest checkpoint.

Everything the rest of the run depends on is in the checkpoint (``hpo_slurm.torch.save_state``): the
weights, SGD momentum, the LR schedule, every global random generator (dropout draws from torch's),
the data-order generator, and the current epoch's permutation with the position in it. So a trial
stopped and resumed any number of times reports bit-for-bit the metrics of one that never stopped.

Length unit: batches. ``data:`` knobs: ``report_every`` (training report every N batches, default 25)
and ``sleep_per_batch`` (seconds, default 0; lets tests interrupt a run mid-way).
"""

from __future__ import annotations

import json
import time
import zlib

import torch
from torch import nn

from hpo_slurm import trial
from hpo_slurm.torch import load_state, save_state
from model_def import build, evaluate, load_data


def train(ctx: trial.TrialContext) -> None:
    if ctx.unit != "batches":
        raise ValueError(f"this example counts its length in batches, not {ctx.unit}")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    hp = ctx.hparams
    batch_size = int(hp["batch_size"])
    report_every = max(1, int(ctx.data.get("report_every", 25)))
    sleep = float(ctx.data.get("sleep_per_batch", 0.0))

    seed = zlib.crc32(json.dumps(hp, sort_keys=True).encode()) ^ ctx.trial_id
    torch.manual_seed(seed)
    data_order = torch.Generator().manual_seed(seed + 1)
    train_x, train_y, val_x, val_y = load_data()
    model, optimizer, scheduler = build(hp)

    # `perm` is this epoch's order and `pos` how many of its images were used (a PBT child may change
    # batch_size, so the position is kept in images, not batches).
    state = {"length": 0, "perm": torch.randperm(len(train_y), generator=data_order), "pos": 0}
    if ctx.latest_checkpoint is not None:
        state = load_state(ctx.latest_checkpoint, model, optimizer, scheduler, generators={"data": data_order})

    def checkpoint() -> None:
        with ctx.checkpoint(state["length"]) as path:
            save_state(path, model, optimizer, scheduler, extra=state, generators={"data": data_order})

    loss_fn = nn.CrossEntropyLoss()
    model.train()
    while state["length"] < ctx.target_length:
        if ctx.should_stop():
            checkpoint()
            return
        if state["pos"] + batch_size > len(train_y):  # a new epoch (the last partial batch is dropped)
            state["perm"], state["pos"] = torch.randperm(len(train_y), generator=data_order), 0
        index = state["perm"][state["pos"]: state["pos"] + batch_size]
        state["pos"] += batch_size
        optimizer.zero_grad()
        loss = loss_fn(model(train_x[index]), train_y[index])
        loss.backward()
        optimizer.step()
        scheduler.step()
        state["length"] += 1
        if state["length"] % report_every == 0:
            ctx.report_training(state["length"], {"loss": loss.item(), "lr": scheduler.get_last_lr()[0]})
        if sleep:
            time.sleep(sleep)

    ctx.report_validation(state["length"], evaluate(model, val_x, val_y))
    checkpoint()


if __name__ == "__main__":
    train(trial.init())
