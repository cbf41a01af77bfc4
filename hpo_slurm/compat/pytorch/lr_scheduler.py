"""Determined's ``LRScheduler``: a torch LR scheduler and when the trainer steps it."""

from __future__ import annotations

import enum
from typing import Any, Dict, List


class LRScheduler:
    """A wrapped LR scheduler (``context.wrap_lr_scheduler`` makes these; the trial keeps the torch
    scheduler it passed in). The trainer saves and restores its state with every checkpoint and steps it
    as ``step_mode`` says, every ``frequency`` epochs, batches or optimizer steps:

    - ``STEP_EVERY_EPOCH``: after the last batch of every ``frequency``-th epoch;
    - ``STEP_EVERY_BATCH``: after every ``frequency``-th batch;
    - ``STEP_EVERY_OPTIMIZER_STEP``: after every ``frequency``-th batch that stepped the optimizers
      (with ``optimizations.aggregation_frequency`` k, every k-th batch);
    - ``MANUAL_STEP``: never; the trial calls ``step()`` itself (``ReduceLROnPlateau`` needs this).
    """

    class StepMode(enum.Enum):
        STEP_EVERY_EPOCH = 1
        STEP_EVERY_BATCH = 2
        MANUAL_STEP = 3
        STEP_EVERY_OPTIMIZER_STEP = 4

    def __init__(self, scheduler: Any, step_mode: "LRScheduler.StepMode", frequency: int = 1):
        if not isinstance(step_mode, LRScheduler.StepMode):
            raise TypeError(f"step_mode must be an LRScheduler.StepMode, got {type(step_mode).__name__}")
        if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
            raise ValueError(f"frequency must be a positive integer, got {frequency!r}")
        self._scheduler = scheduler
        self._step_mode = step_mode
        self._frequency = frequency

    def step(self, *args: Any, **kwargs: Any) -> None:
        self._scheduler.step(*args, **kwargs)

    def get_last_lr(self) -> List[float]:
        return self._scheduler.get_last_lr()

    def state_dict(self) -> Dict[Any, Any]:
        return self._scheduler.state_dict()

    def load_state_dict(self, state_dict: Dict[Any, Any]) -> None:
        self._scheduler.load_state_dict(state_dict)

    def auto_step(self, batch_idx: int, epoch_len: int, aggregation_frequency: int) -> None:
        """Step as ``step_mode`` says after batch ``batch_idx`` (0-based, counted over the whole trial)
        was trained; ``epoch_len``: batches per epoch. Nothing on batches that did not step the
        optimizers."""
        if (batch_idx + 1) % aggregation_frequency != 0 or self._step_mode is LRScheduler.StepMode.MANUAL_STEP:
            return
        if self._step_mode is LRScheduler.StepMode.STEP_EVERY_BATCH:
            for index in range(batch_idx - aggregation_frequency + 1, batch_idx + 1):
                if (index + 1) % self._frequency == 0:
                    self.step()
        elif self._step_mode is LRScheduler.StepMode.STEP_EVERY_OPTIMIZER_STEP:
            if ((batch_idx + 1) // aggregation_frequency) % self._frequency == 0:
                self.step()
        else:  # every epoch: step for each epoch that ends before the next optimizer step's batch
            first, last = batch_idx // epoch_len, (batch_idx + aggregation_frequency) // epoch_len
            for epoch in range(first, last):
                if (epoch + 1) % self._frequency == 0:
                    self.step()
