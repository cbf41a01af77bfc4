"""A small CNN for 8x8 digits, shaped like Determined's MNIST tutorial network."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


def build_model(hparams: Mapping[str, Any]) -> nn.Module:
    """Two convolutions, a max-pool and two linear layers; log-probabilities out."""
    filters1, filters2 = int(hparams["n_filters1"]), int(hparams["n_filters2"])
    return nn.Sequential(
        nn.Conv2d(1, filters1, 3, padding=1), nn.ReLU(),
        nn.Conv2d(filters1, filters2, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),  # 8x8 -> 4x4
        nn.Dropout(float(hparams["dropout1"])),
        nn.Flatten(),
        nn.Linear(16 * filters2, 64), nn.ReLU(),
        nn.Dropout(float(hparams["dropout2"])),
        nn.Linear(64, 10),
        nn.LogSoftmax(dim=1),
    )


def use_one_thread() -> None:
    """Several trials share a small machine's cores: one thread each, and deterministic kernels, so a
    resumed trial computes what an uninterrupted one would."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
