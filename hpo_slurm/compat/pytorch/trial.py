"""Determined's ``PyTorchTrial``: the class a trial's code subclasses."""

from __future__ import annotations

import abc
from typing import Any, Dict, Union

import torch

from hpo_slurm.compat.pytorch.callback import PyTorchCallback
from hpo_slurm.compat.pytorch.context import PyTorchTrialContext
from hpo_slurm.compat.pytorch.data import DataLoader, data_length
from hpo_slurm.compat.pytorch.reducer import Reducer


class PyTorchTrial(metaclass=abc.ABCMeta):
    """Override ``__init__(context)`` (wrap the model, optimizers and LR schedulers there),
    ``build_training_data_loader``, ``build_validation_data_loader``, ``train_batch`` and exactly one of
    ``evaluate_batch`` (reduced over the validation set by ``evaluation_reducer()``) or
    ``evaluate_full_dataset`` (run on the chief alone over the whole validation loader)."""

    trial_context_class = PyTorchTrialContext

    @abc.abstractmethod
    def __init__(self, context: PyTorchTrialContext) -> None:
        pass

    @abc.abstractmethod
    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Union[torch.Tensor, Dict[str, Any]]:
        """Train on one batch (forward, ``context.backward``, ``context.step_optimizer``) and return its
        metrics (a bare tensor is reported as ``loss``). ``batch_idx`` counts from the start of the
        trial, over every epoch."""

    @abc.abstractmethod
    def build_training_data_loader(self) -> Union[DataLoader, torch.utils.data.DataLoader]:
        pass

    @abc.abstractmethod
    def build_validation_data_loader(self) -> Union[DataLoader, torch.utils.data.DataLoader]:
        pass

    def build_callbacks(self) -> Dict[str, PyTorchCallback]:
        return {}

    def evaluate_batch(self, batch: Any, batch_idx: int) -> Dict[str, Any]:  # type: ignore[empty-body]
        """Metrics of one validation batch."""

    def evaluation_reducer(self) -> Union[Reducer, Dict[str, Reducer]]:
        return Reducer.AVG

    def evaluate_full_dataset(self, data_loader: torch.utils.data.DataLoader) -> Dict[str, Any]:  # type: ignore[empty-body]
        """Metrics over the whole validation set."""

    def get_batch_length(self, batch: Any) -> int:
        """Records in ``batch`` (weights the average of ``evaluate_batch`` metrics)."""
        return data_length(batch)
