"""A Determined PyTorchTrial over scikit-learn's digits (bundled, no download), written as a Determined
user writes one: ``from determined import pytorch``. Small enough to train in seconds on one core.

It uses what a resume must restore exactly: dropout (the torch generator), a shuffled data order, SGD
momentum, an LR schedule stepped every epoch, a callback with state (``epochs_seen`` in the
validation metrics) and a custom reducer (``exact_accuracy``). ``data:`` knobs: ``sleep_per_batch``
(seconds; lets a test interrupt a run), ``stop_at_batch`` (the trial asks to stop after that batch),
``unsupported: true`` (calls ``context.configure_apex_amp``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from determined import pytorch

VALIDATION_SIZE = 360


def datasets() -> tuple:
    """(training, validation) of scikit-learn's ``load_digits()``, read from the file scikit-learn bundles
    (importing scikit-learn would take longer than training)."""
    folder = importlib.util.find_spec("sklearn").submodule_search_locations[0]  # type: ignore[union-attr]
    table = np.loadtxt(os.path.join(folder, "datasets", "data", "digits.csv.gz"), delimiter=",")
    images = torch.tensor(table[:, :-1], dtype=torch.float32) / 16.0
    labels = torch.tensor(table[:, -1], dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return (TensorDataset(images[VALIDATION_SIZE:], labels[VALIDATION_SIZE:]),
            TensorDataset(images[:VALIDATION_SIZE], labels[:VALIDATION_SIZE]))


class EpochCounter(pytorch.PyTorchCallback):
    """Counts the epochs it saw end; its count lives in checkpoints."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_training_epoch_end(self, epoch_idx: int) -> None:
        self.epochs += 1

    def state_dict(self) -> Dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.epochs = state_dict["epochs"]


class Correct(pytorch.MetricReducer):
    """Correct predictions over every validation record of every rank."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct, self.seen = 0, 0

    def update(self, correct: int, seen: int) -> None:
        self.correct += correct
        self.seen += seen

    def per_slot_reduce(self) -> Any:
        return self.correct, self.seen

    def cross_slot_reduce(self, per_slot_metrics: List[Any]) -> Any:
        correct, seen = (sum(values) for values in zip(*per_slot_metrics))
        return correct / seen


class DigitsTrial(pytorch.PyTorchTrial):
    def __init__(self, context: pytorch.PyTorchTrialContext) -> None:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        self.context = context
        self.data = context.get_data_config()
        hidden, dropout = int(context.get_hparam("hidden")), float(context.get_hparam("dropout"))
        self.model = context.wrap_model(nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10)))
        self.optimizer = context.wrap_optimizer(torch.optim.SGD(
            self.model.parameters(), lr=float(context.get_hparam("lr")), momentum=0.9))
        context.wrap_lr_scheduler(torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.8),
                                  step_mode=pytorch.LRScheduler.StepMode.STEP_EVERY_EPOCH)
        if self.data.get("unsupported"):
            context.configure_apex_amp(models=self.model, optimizers=self.optimizer)
        self.counter = EpochCounter()
        self.correct = context.wrap_reducer(Correct(), name="exact_accuracy", for_training=False)
        self.loss_fn = nn.CrossEntropyLoss()
        self.train_set, self.validation_set = datasets()

    def build_callbacks(self) -> Dict[str, pytorch.PyTorchCallback]:
        return {"counter": self.counter}

    def build_training_data_loader(self) -> pytorch.DataLoader:
        return pytorch.DataLoader(self.train_set, batch_size=self.context.get_per_slot_batch_size(), shuffle=True)

    def build_validation_data_loader(self) -> pytorch.DataLoader:
        return pytorch.DataLoader(self.validation_set, batch_size=self.context.get_per_slot_batch_size())

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Dict[str, Any]:
        images, labels = batch
        loss = self.loss_fn(self.model(images), labels)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        time.sleep(float(self.data.get("sleep_per_batch", 0)))
        if batch_idx + 1 == int(self.data.get("stop_at_batch", -1)):
            self.context.set_stop_requested(True)
        return {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}

    def evaluate_batch(self, batch: Any, batch_idx: int) -> Dict[str, Any]:
        images, labels = batch
        output = self.model(images)
        correct = int(output.argmax(dim=1).eq(labels).sum().item())
        self.correct.update(correct, len(labels))
        return {"validation_loss": self.loss_fn(output, labels), "accuracy": correct / len(labels),
                "epochs_seen": self.counter.epochs}
