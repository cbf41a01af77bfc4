"""scikit-learn's 8x8 handwritten digits (bundled, no download) as torch datasets: 1,437 images to train
on and a fixed 360 to validate on, the same split for every trial."""

from __future__ import annotations

from typing import Tuple

import torch
from torch.utils.data import TensorDataset

VALIDATION_SIZE = 360


def get_datasets() -> Tuple[TensorDataset, TensorDataset]:
    """(training, validation): images are (1, 8, 8) floats in [0, 1], labels int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return (TensorDataset(images[VALIDATION_SIZE:], labels[VALIDATION_SIZE:]),
            TensorDataset(images[:VALIDATION_SIZE], labels[:VALIDATION_SIZE]))
