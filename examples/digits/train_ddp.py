"""Train the digits CNN as a distributed trial: DistributedDataParallel over the trial's ranks.

With ``resources.slots_per_trial: N`` (N > 1) hpo-slurm runs this script in N ranks, one per GPU, or as
N CPU processes on a machine without GPUs. ``hpo_slurm.torch.init_distributed`` joins them in a process
group (nccl on GPUs, gloo on CPU). ``batch_size`` is the global batch: every rank draws the same data
order and trains on its 1/N share of each batch, so N ranks take the steps of one process training on
the whole batch (``batch_size`` must be a multiple of N, else the trial is ``InvalidHP``). The model
starts from the same weights in every rank; each rank draws its own dropout noise.

Every rank calls ``ctx.should_stop()`` before each batch (a collective: all ranks stop at the same
step) and enters ``ctx.checkpoint``; ``save_state`` writes the model, optimizer and schedule from rank
0 and every rank's random generators, so a trial stopped and resumed reports bit-for-bit the metrics
of one that never stopped (on GPUs, as far as cuDNN and NCCL are deterministic). Rank 0 validates on
the whole validation set and its reports are the ones recorded. With one rank the script is a plain
single-process trainer.

Length unit: batches. ``data:`` knobs: ``report_every`` (training report every N batches, default 25)
and ``sleep_per_batch`` (seconds, default 0; lets tests interrupt a run mid-way).
"""

from __future__ import annotations

import json
import os
import time
import zlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hpo_slurm import trial
from hpo_slurm.torch import close_distributed, init_distributed, load_state, save_state
from model_def import build, evaluate, load_data

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts


def train(ctx: trial.TrialContext) -> None:
    if ctx.unit != "batches":
        raise ValueError(f"this example counts its length in batches, not {ctx.unit}")
    hp = ctx.hparams
    batch_size = int(hp["batch_size"])
    if batch_size % ctx.world_size:
        raise trial.InvalidHP(f"batch_size {batch_size} does not split over {ctx.world_size} ranks")
    share = batch_size // ctx.world_size
    report_every = max(1, int(ctx.data.get("report_every", 25)))
    sleep = float(ctx.data.get("sleep_per_batch", 0.0))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    device = init_distributed(ctx)

    seed = zlib.crc32(json.dumps(hp, sort_keys=True).encode()) ^ ctx.trial_id
    torch.manual_seed(seed)  # the same initial weights in every rank
    data_order = torch.Generator().manual_seed(seed + 1)  # the same data order in every rank
    train_x, train_y, val_x, val_y = (t.to(device) for t in load_data())
    model, optimizer, scheduler = build(hp)
    model.to(device)
    torch.manual_seed(seed + 2 + ctx.rank)  # from here on each rank draws its own dropout noise

    # `perm` is this epoch's order and `pos` how many of its images were used
    state = {"length": 0, "perm": torch.randperm(len(train_y), generator=data_order), "pos": 0}
    if ctx.latest_checkpoint is not None:
        state = load_state(ctx.latest_checkpoint, model, optimizer, scheduler, generators={"data": data_order})
    if ctx.world_size > 1:
        net: nn.Module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        net = model

    def checkpoint() -> None:  # every rank, the same folder
        with ctx.checkpoint(state["length"]) as path:
            save_state(path, net, optimizer, scheduler, extra=state, generators={"data": data_order})

    loss_fn = nn.CrossEntropyLoss()
    net.train()
    while state["length"] < ctx.target_length:
        if ctx.should_stop():
            checkpoint()
            close_distributed()
            return
        if state["pos"] + batch_size > len(train_y):  # a new epoch (the last partial batch is dropped)
            state["perm"], state["pos"] = torch.randperm(len(train_y), generator=data_order), 0
        batch = state["perm"][state["pos"]: state["pos"] + batch_size]
        index = batch[ctx.rank * share: (ctx.rank + 1) * share].to(device)  # this rank's share
        state["pos"] += batch_size
        optimizer.zero_grad()
        loss = loss_fn(net(train_x[index]), train_y[index])
        loss.backward()  # DDP averages the gradients over the ranks
        optimizer.step()
        scheduler.step()
        state["length"] += 1
        if state["length"] % report_every == 0:
            mean_loss = _mean_over_ranks(loss.detach(), ctx.world_size)
            ctx.report_training(state["length"], {"loss": mean_loss, "lr": scheduler.get_last_lr()[0]})
        if sleep:
            time.sleep(sleep)

    if ctx.is_chief:
        ctx.report_validation(state["length"], evaluate(model, val_x, val_y))
    checkpoint()
    close_distributed()


def _mean_over_ranks(value: torch.Tensor, world_size: int) -> float:
    """The mean of ``value`` over the ranks (every rank must call it at the same step)."""
    if world_size > 1:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= world_size
    return value.item()


if __name__ == "__main__":
    train(trial.init())
