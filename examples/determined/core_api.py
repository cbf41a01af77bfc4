"""Train the digits CNN with Determined's Core API, as a Determined user writes it: the script chooses
its own length (``--batches``), validates every ``--validate-every`` batches, checkpoints, and returns
when ``should_preempt()`` says so (a preemption, a time limit, or the searcher ending the rung).

Several ranks (``resources.slots_per_trial`` > 1, started by ``python3 -m
determined.launch.torch_distributed python3 core_api.py``): gradients are averaged by DDP over a gloo
group, every rank reads its own share of each batch, and the chief reports and checkpoints.

A resumed trial continues exactly: the checkpoint holds the weights, the optimizer and torch's random
state, and each epoch's data order depends only on the trial's seed and the epoch.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import time

import torch
import torch.distributed as dist
from torch import nn

import data
import model
import determined as det

BATCH_SIZE = 32


def epoch_order(seed: int, epoch: int, size: int) -> torch.Tensor:
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1000 + epoch))


def validate(net: nn.Module, validation: torch.utils.data.TensorDataset) -> dict:
    images, labels = validation.tensors
    net.eval()
    with torch.no_grad():
        output = net(images)
    net.train()
    return {"validation_loss": nn.functional.nll_loss(output, labels).item(),
            "accuracy": output.argmax(dim=1).eq(labels).float().mean().item()}


def main(core_context: det.core.Context, max_batches: int, validate_every: int) -> None:
    model.use_one_thread()
    info = det.get_cluster_info()
    assert info is not None, "this script runs as a trial"
    hparams, seed = info.trial.hparams, info.trial.trial_seed
    rank, size = core_context.distributed.rank, core_context.distributed.size
    torch.manual_seed(seed)
    net = model.build_model(hparams)
    optimizer = torch.optim.SGD(net.parameters(), lr=hparams["learning_rate"], momentum=0.9)
    steps_completed = 0
    if info.latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(info.latest_checkpoint) as path:
            state = torch.load(pathlib.Path(path) / "state.pt")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        steps_completed = state["steps_completed"]
    if size > 1:
        net = nn.parallel.DistributedDataParallel(net)
    train_set, validation_set = data.get_datasets()
    images, labels = train_set.tensors
    per_epoch = len(labels) // BATCH_SIZE
    sleep_per_batch = float(info.user_data.get("sleep_per_batch", 0))  # `data:` in the config; tests slow it down

    while steps_completed < max_batches:
        epoch, position = divmod(steps_completed, per_epoch)
        batch = epoch_order(seed, epoch, len(labels))[position * BATCH_SIZE:(position + 1) * BATCH_SIZE]
        mine = batch[rank::size]  # this rank's share of the batch
        optimizer.zero_grad()
        loss = nn.functional.nll_loss(net(images[mine]), labels[mine])
        loss.backward()
        optimizer.step()
        steps_completed += 1
        if sleep_per_batch:
            time.sleep(sleep_per_batch)
        if steps_completed % validate_every and steps_completed < max_batches:
            continue
        if rank == 0:
            core_context.train.report_training_metrics(steps_completed=steps_completed,
                                                       metrics={"loss": loss.item()})
            core_context.train.report_validation_metrics(
                steps_completed=steps_completed,
                metrics={**validate(net, validation_set), "batches": steps_completed})
            plain = net.module if size > 1 else net
            with core_context.checkpoint.store_path({"steps_completed": steps_completed}) as (path, _):
                torch.save({"model": plain.state_dict(), "optimizer": optimizer.state_dict(),
                            "rng": torch.get_rng_state(), "steps_completed": steps_completed},
                           pathlib.Path(path) / "state.pt")
        if core_context.preempt.should_preempt():
            return


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=180)
    parser.add_argument("--validate-every", type=int, default=20)
    args = parser.parse_args()
    distributed = None
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
        distributed = det.core.DistributedContext.from_torch_distributed()
    with det.core.init(distributed=distributed) as core_context:
        main(core_context, args.batches, args.validate_every)
