"""The digits model as a Determined PyTorchTrial, unchanged from how Determined runs it.

Two ways to start it, both in this folder's configs:
- ``entrypoint: model_def:DigitsTrial`` (``legacy_adaptive.yaml``): the trial class itself;
- ``entrypoint: python3 train.py --epochs 3`` (``adaptive.yaml``, ``const.yaml``): a script that builds
  the trial and calls ``det.pytorch.Trainer(trial, context).fit(...)``.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import torch
from torch import nn

import data
import model
from determined import pytorch


class DigitsTrial(pytorch.PyTorchTrial):
    def __init__(self, context: pytorch.PyTorchTrialContext, hparams: Optional[Dict[str, Any]] = None) -> None:
        model.use_one_thread()
        self.context = context
        self.hparams = hparams if hparams is not None else context.get_hparams()
        self.loss_fn = nn.NLLLoss()
        self.model = self.context.wrap_model(model.build_model(self.hparams))
        self.optimizer = self.context.wrap_optimizer(
            torch.optim.SGD(self.model.parameters(), lr=self.hparams["learning_rate"], momentum=0.9))
        self.lr_sched = self.context.wrap_lr_scheduler(
            torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.7),
            step_mode=pytorch.LRScheduler.StepMode.STEP_EVERY_EPOCH)
        self.train_set, self.validation_set = data.get_datasets()
        self.sleep_per_batch = float(context.get_data_config().get("sleep_per_batch", 0))  # tests slow it down

    def build_training_data_loader(self) -> pytorch.DataLoader:
        return pytorch.DataLoader(self.train_set, batch_size=self.context.get_per_slot_batch_size(), shuffle=True)

    def build_validation_data_loader(self) -> pytorch.DataLoader:
        return pytorch.DataLoader(self.validation_set, batch_size=self.context.get_per_slot_batch_size())

    def train_batch(self, batch: pytorch.TorchData, epoch_idx: int, batch_idx: int) -> Dict[str, torch.Tensor]:
        images, labels = batch
        loss = self.loss_fn(self.model(images), labels)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        if self.sleep_per_batch:
            time.sleep(self.sleep_per_batch)
        return {"loss": loss}

    def evaluate_batch(self, batch: pytorch.TorchData, batch_idx: int) -> Dict[str, Any]:
        images, labels = batch
        output = self.model(images)
        return {
            "validation_loss": self.loss_fn(output, labels).item(),
            "accuracy": output.argmax(dim=1).eq(labels).float().mean().item(),
        }
