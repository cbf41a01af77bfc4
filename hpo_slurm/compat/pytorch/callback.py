"""Determined's ``PyTorchCallback``: hooks the trainer calls at points of training. Override any."""

from __future__ import annotations

from typing import Any, Dict, List, Optional


class PyTorchCallback:
    """Every hook is called on every rank. ``state_dict()`` is saved in each checkpoint under the name the
    trial's ``build_callbacks()`` gave the callback, and handed to ``load_state_dict`` on resume."""

    def on_trial_startup(self, first_batch_idx: int, checkpoint_uuid: Optional[str]) -> None:
        """Before anything else in ``fit``: the batch training starts from and the checkpoint it resumes."""

    def on_trial_shutdown(self) -> None:
        """When ``fit`` returns or raises."""

    def on_training_start(self) -> None:
        """Once the checkpoint (if any) is loaded, before the first batch."""

    def on_training_epoch_start(self, epoch_idx: int) -> None:
        """Before the first batch of epoch ``epoch_idx``."""

    def on_training_epoch_end(self, epoch_idx: int) -> None:
        """After the last batch of epoch ``epoch_idx``."""

    def on_training_workload_end(self, avg_metrics: Dict[str, Any], batch_metrics: List[Dict[str, Any]]) -> None:
        """After each training report: the averaged metrics and this rank's per-batch metrics."""

    def on_validation_start(self) -> None:
        """Before a validation."""

    def on_validation_epoch_start(self) -> None:
        """Before the first validation batch (``evaluate_batch`` trials)."""

    def on_validation_epoch_end(self, outputs: List[Any]) -> None:
        """After the last validation batch: this rank's per-batch outputs of ``evaluate_batch``."""

    def on_validation_end(self, metrics: Dict[str, Any]) -> None:
        """After a validation, with its reduced metrics (on every rank)."""

    def on_checkpoint_load_start(self, checkpoint: Dict[str, Any]) -> None:
        """Before the checkpoint's states are loaded: the ``state_dict.pth`` dict."""

    def on_checkpoint_save_start(self, checkpoint: Dict[str, Any]) -> None:
        """Before ``state_dict.pth`` is written (chief only): the dict, which the hook may extend."""

    def on_checkpoint_end(self, checkpoint_dir: str) -> None:
        """Deprecated in Determined: ``on_checkpoint_write_end`` instead."""

    def on_checkpoint_write_end(self, checkpoint_dir: str) -> None:
        """After the checkpoint's files are written into ``checkpoint_dir`` (chief only), before publication."""

    def on_checkpoint_upload_end(self, uuid: str) -> None:
        """After the checkpoint is published: its storage id (every rank)."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        pass
