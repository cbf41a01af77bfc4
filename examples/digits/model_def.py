"""The digits model and data: scikit-learn's 8x8 handwritten digits (bundled, no download) and a
tiny CNN. Kept apart from the training loop so it can be imported and tested on its own."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

VALIDATION_SIZE = 360  # of the 1,797 images; the split is fixed so every trial validates on the same set


def load_data() -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, val_x, val_y); images are (N, 1, 8, 8) floats in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return images[VALIDATION_SIZE:], labels[VALIDATION_SIZE:], images[:VALIDATION_SIZE], labels[:VALIDATION_SIZE]


class DigitsCNN(nn.Module):
    def __init__(self, n_filters: int, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, n_filters, 3, padding=1), nn.ReLU(),
            nn.Conv2d(n_filters, 2 * n_filters, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(2 * n_filters * 16, 64), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(hparams: Dict) -> Tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Model, SGD optimizer and a per-batch exponential LR decay. The schedule depends on the batch
    count only, never on the target length, so a trial trained in several steps (ASHA rungs, PBT
    rounds, preemptions) follows the same schedule as one trained at once."""
    model = DigitsCNN(int(hparams["n_filters"]), float(hparams["dropout"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=float(hparams["lr"]), momentum=float(hparams["momentum"]))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=float(hparams.get("lr_decay", 0.999)))
    return model, optimizer, scheduler


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    model.eval()
    logits = model(images)
    model.train()
    return {
        "validation_loss": nn.functional.cross_entropy(logits, labels).item(),
        "accuracy": (logits.argmax(dim=1) == labels).float().mean().item(),
    }
