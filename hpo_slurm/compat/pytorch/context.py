"""Determined's ``PyTorchTrialContext``: what a ``PyTorchTrial`` wraps its model, optimizers and LR
schedulers with, and asks for its hyperparameters, batch sizes and place in training.

Made by ``det.pytorch.init()`` (or the harness of ``entrypoint: model_def:Trial``) after the process
group exists and every generator is seeded; the trainer fills in the training position
(``current_train_batch`` and friends, valid while ``fit`` runs).

- ``wrap_model`` moves the model to ``device`` (``cuda:<local rank>`` with CUDA, else the CPU) and, with
  several ranks, wraps it in ``DistributedDataParallel`` (attributes of the inner model stay reachable).
- ``backward`` and ``step_optimizer`` honour ``optimizations.aggregation_frequency`` k (the config's, or
  ``init(aggregation_frequency=)``): gradients accumulate over k batches (DDP's all-reduce only on the
  k-th), are divided by k unless ``average_aggregated_gradients=False``, and the optimizer steps on
  the k-th batch.
- ``get_global_batch_size()`` is the hyperparameter ``global_batch_size`` rounded down to a multiple of
  the number of ranks, ``get_per_slot_batch_size()`` its share of one rank (``ValueError`` without it).
- Mixed precision: ``wrap_scaler(torch.amp.GradScaler(...))`` is saved in checkpoints and used by
  ``step_optimizer(opt, scaler=scaler)``; the trial scales the loss, unscales and updates as in plain
  PyTorch. ``configure_apex_amp``, ``experimental.use_amp``, ``autocast_forward_pass`` and
  ``set_profiler`` raise ``Unsupported``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Type, Union

import torch
from torch import nn

from hpo_slurm.compat.distributed import DistributedContext
from hpo_slurm.compat.errors import Unsupported
from hpo_slurm.compat.pytorch.data import to_device
from hpo_slurm.compat.pytorch.lr_scheduler import LRScheduler
from hpo_slurm.compat.pytorch.reducer import MetricReducer, ReducerRegistry
from hpo_slurm.compat.pytorch.session import Session

log = logging.getLogger("determined.pytorch")


class _DistributedDataParallel(nn.parallel.DistributedDataParallel):
    """DDP that passes unknown attributes on to the wrapped model (``self.model.my_head`` keeps working)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def batch_sizes(hparams: Optional[Dict[str, Any]], world_size: int) -> Optional[tuple]:
    """(per-slot, global) batch sizes from hyperparameter ``global_batch_size`` (None without it)."""
    if not hparams or hparams.get("global_batch_size") is None:
        return None
    global_size = int(hparams["global_batch_size"])
    if global_size < world_size:
        raise ValueError(f"global_batch_size {global_size} is smaller than the {world_size} ranks of the trial")
    per_slot = global_size // world_size
    if per_slot * world_size != global_size:
        log.warning("global_batch_size changed from %d to %d to divide equally across %d ranks",
                    global_size, per_slot * world_size, world_size)
    return per_slot, per_slot * world_size


class PyTorchExperimentalContext:
    """``context.experimental``: switches of Determined's experimental API."""

    def __init__(self, parent: "PyTorchTrialContext"):
        self._parent = parent
        self._auto_to_device = True
        self._data_repro_checks_disabled = False

    def disable_dataset_reproducibility_checks(self) -> None:
        """Allow ``build_*_data_loader`` to return a torch ``DataLoader``: used as given (repeated for
        training, and on resume the batches already trained are drawn and skipped), so its order resumes
        exactly only when it depends on nothing but its own state."""
        self._data_repro_checks_disabled = True

    def disable_auto_to_device(self) -> None:
        """Batches are handed to ``train_batch``/``evaluate_batch`` as the loader gives them."""
        self._auto_to_device = False

    def use_amp(self) -> None:
        raise Unsupported("context.experimental.use_amp()",
                          "use torch.autocast and context.wrap_scaler(torch.amp.GradScaler(...))")

    def wrap_reducer(self, reducer: Union[Callable, MetricReducer], name: Optional[str] = None,
                     for_training: bool = True, for_validation: bool = True) -> Any:
        return self._parent.wrap_reducer(reducer, name, for_training, for_validation)


class PyTorchTrialContext:
    """See the module docstring. ``distributed`` is the trial's ``DistributedContext``; ``device`` its
    device; ``models``, ``optimizers`` and ``lr_schedulers`` what was wrapped, in order."""

    def __init__(self, session: Session, distributed: DistributedContext, hparams: Optional[Dict[str, Any]],
                 exp_conf: Optional[Dict[str, Any]], trial_seed: Optional[int], aggregation_frequency: int = 1,
                 enable_tensorboard_logging: bool = True):
        if aggregation_frequency < 1:
            raise ValueError(f"aggregation_frequency must be at least 1, got {aggregation_frequency}")
        self._session = session
        self.distributed = distributed
        self._hparams = hparams
        self._exp_conf = exp_conf
        self._trial_seed = trial_seed
        self._aggregation_frequency = aggregation_frequency
        self._enable_tensorboard_logging = enable_tensorboard_logging
        self._batch_sizes = batch_sizes(hparams, distributed.size)
        self.device = self._init_device()
        self.models: List[nn.Module] = []
        self.optimizers: List[torch.optim.Optimizer] = []
        self.lr_schedulers: List[LRScheduler] = []
        self.experimental = PyTorchExperimentalContext(self)
        self._inner_models: List[nn.Module] = []  # the models as given, for checkpoints
        self._average_gradients: Dict[int, bool] = {}  # id(optimizer) -> average_aggregated_gradients
        self._scaler: Any = None
        self._reducers = ReducerRegistry()
        self._epoch_len: Optional[int] = None
        self._current_batch_idx: Optional[int] = None
        self._stop_requested = False
        self._steps_completed = 0
        self._warned_types: Set[Type] = set()
        self._tensorboard_writer: Any = None

    def _init_device(self) -> torch.device:
        if torch.cuda.is_available():
            device = torch.device("cuda", self.distributed.local_rank)
            torch.cuda.set_device(device)
            return device
        return torch.device("cpu")

    # ---- the trial's configuration -----------------------------------------------------------------
    def get_hparams(self) -> Dict[str, Any]:
        if self._hparams is None:
            raise ValueError("hparams is undefined in this trial: pass hparams to det.pytorch.init()")
        return self._hparams

    def get_hparam(self, name: str) -> Any:
        hparams = self.get_hparams()
        if name not in hparams:
            raise ValueError(f"Could not find name '{name}' in experiment hyperparameters. Please check your "
                             "experiment configuration 'hyperparameters' section.")
        return hparams[name]

    def get_experiment_config(self) -> Dict[str, Any]:
        if self._exp_conf is None:
            raise ValueError("exp_conf is undefined in this trial: pass exp_conf to det.pytorch.init()")
        return self._exp_conf

    def get_data_config(self) -> Dict[str, Any]:
        """The experiment config's ``data`` section ({} without one, or without an experiment config)."""
        return (self._exp_conf or {}).get("data") or {}

    def get_global_batch_size(self) -> int:
        if self._batch_sizes is None:
            raise ValueError("global_batch_size is not among this trial's hyperparameters: add it to the "
                             "config's hyperparameters (e.g. global_batch_size: 64) to use get_global_batch_size()")
        return int(self._batch_sizes[1])

    def get_per_slot_batch_size(self) -> int:
        if self._batch_sizes is None:
            raise ValueError("global_batch_size is not among this trial's hyperparameters: add it to the "
                             "config's hyperparameters (e.g. global_batch_size: 64) to use get_per_slot_batch_size()")
        return int(self._batch_sizes[0])

    def get_trial_id(self) -> int:
        return self._session.trial_id

    def get_experiment_id(self) -> int:
        return self._session.experiment_id

    def get_trial_seed(self) -> int:
        if self._trial_seed is None:
            raise RuntimeError("Trial seed not set (local training without a seed)")
        return self._trial_seed

    def get_initial_batch(self) -> int:
        """The batch training starts from in this run (0 before ``fit`` loads a checkpoint)."""
        return self._steps_completed

    def get_stop_requested(self) -> bool:
        return self._stop_requested

    def set_stop_requested(self, stop_requested: bool) -> None:
        """Ask the trainer to checkpoint and return at the end of the current batch (without reaching its
        length: on hpo-slurm the run then ends without validating at its target)."""
        if not isinstance(stop_requested, bool):
            raise TypeError("stop_requested must be a boolean")
        self._stop_requested = stop_requested

    def get_enable_tensorboard_logging(self) -> bool:
        return self._enable_tensorboard_logging

    def set_enable_tensorboard_logging(self, enable_tensorboard_logging: bool) -> None:
        self._enable_tensorboard_logging = bool(enable_tensorboard_logging)

    def get_tensorboard_path(self) -> Path:
        """``trials/<id>/tensorboard/`` of the experiment (``./tensorboard`` off hpo-slurm)."""
        return self._session.tensorboard_path()

    def get_tensorboard_writer(self) -> Any:
        """A ``torch.utils.tensorboard.SummaryWriter`` into ``get_tensorboard_path()`` (needs tensorboard)."""
        if self._tensorboard_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard_writer = SummaryWriter(str(self.get_tensorboard_path()))
        return self._tensorboard_writer

    def set_profiler(self, *args: Any, **kwargs: Any) -> None:
        raise Unsupported("context.set_profiler()", "run torch.profiler.profile around train_batch in the trial")

    # ---- wrapping ----------------------------------------------------------------------------------
    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The model on this rank's device, in DDP when the trial has several ranks."""
        model = model.to(self.device)
        wrapped: nn.Module = model
        if self.distributed.size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = _DistributedDataParallel(model, device_ids=device_ids)
        self._inner_models.append(model)
        self.models.append(wrapped)
        return wrapped

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, backward_passes_per_step: int = 1,
                       fp16_compression: Optional[bool] = None,
                       average_aggregated_gradients: Optional[bool] = None) -> torch.optim.Optimizer:
        if backward_passes_per_step < 1:
            raise ValueError(f"backward_passes_per_step must be >= 1; got {backward_passes_per_step}")
        self._average_gradients[id(optimizer)] = True if average_aggregated_gradients is None else bool(
            average_aggregated_gradients)
        self.optimizers.append(optimizer)
        return optimizer

    def wrap_lr_scheduler(self, lr_scheduler: Any, step_mode: LRScheduler.StepMode, frequency: int = 1) -> Any:
        """Track ``lr_scheduler`` (saved in checkpoints, stepped as ``step_mode`` says); returns it."""
        if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and \
                step_mode is not LRScheduler.StepMode.MANUAL_STEP:
            raise ValueError("ReduceLROnPlateau can only be wrapped with step_mode=MANUAL_STEP (step it yourself, "
                             "e.g. in a callback's on_validation_end)")
        optimizer = getattr(lr_scheduler, "optimizer", None)
        if optimizer is not None and all(optimizer is not wrapped for wrapped in self.optimizers):
            raise ValueError("the LR scheduler must use an optimizer returned by wrap_optimizer()")
        self.lr_schedulers.append(LRScheduler(lr_scheduler, step_mode, frequency))
        return lr_scheduler

    def wrap_scaler(self, scaler: Any) -> Any:
        """Track an AMP ``GradScaler`` (saved in checkpoints); call before ``wrap_model``. Returns it."""
        if self._scaler is not None:
            raise ValueError("Please only call wrap_scaler once.")
        if self.models:
            raise ValueError("Please call wrap_scaler before wrap_model.")
        self._scaler = scaler
        return scaler

    def autocast_forward_pass(self, to_wrap: nn.Module) -> nn.Module:
        raise Unsupported("context.autocast_forward_pass()", "call the model inside torch.autocast(...) in train_batch")

    def configure_apex_amp(self, *args: Any, **kwargs: Any) -> Any:
        raise Unsupported("context.configure_apex_amp() (NVIDIA apex)",
                          "use torch.autocast and context.wrap_scaler(torch.amp.GradScaler(...))")

    def wrap_reducer(self, reducer: Union[Callable, MetricReducer], name: Optional[str] = None,
                     for_training: bool = True, for_validation: bool = True) -> Any:
        """A custom metric (``MetricReducer``, or a function of every value given to ``update``): reset
        before each training window and validation, reduced over every rank after it, and reported under
        ``name`` (or, without a name, as the dict of metrics it returns)."""
        return self._reducers.wrap(reducer, name, for_training, for_validation)

    def reset_reducers(self, for_training: bool = True) -> None:
        self._reducers.reset(for_training)

    def reduce_metrics(self, for_training: bool) -> Dict[str, Any]:
        return self._reducers.reduce(for_training, self.distributed.allgather)

    def to_device(self, data: Any) -> Any:
        return to_device(data, self.device, self._warned_types)

    # ---- one step ----------------------------------------------------------------------------------
    def _should_communicate_and_update(self) -> bool:
        if self._current_batch_idx is None:
            raise RuntimeError("Training hasn't started.")
        return (self._current_batch_idx + 1) % self._aggregation_frequency == 0

    @contextlib.contextmanager
    def _no_sync(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for model in self.models:
                if isinstance(model, nn.parallel.DistributedDataParallel):
                    stack.enter_context(model.no_sync())
            yield

    def backward(self, loss: torch.Tensor, gradient: Optional[torch.Tensor] = None, retain_graph: bool = False,
                 create_graph: bool = False) -> None:
        """``loss.backward(...)``; with several ranks and gradient aggregation, DDP's all-reduce happens
        only on the batch that steps the optimizers."""
        if self.distributed.size > 1 and not self._should_communicate_and_update():
            with self._no_sync():
                loss.backward(gradient=gradient, retain_graph=retain_graph, create_graph=create_graph)
        else:
            loss.backward(gradient=gradient, retain_graph=retain_graph, create_graph=create_graph)

    def step_optimizer(self, optimizer: torch.optim.Optimizer, clip_grads: Optional[Callable[[Iterator], None]] = None,
                       auto_zero_grads: bool = True, scaler: Optional[Any] = None) -> None:
        """Step ``optimizer`` (on the batch that completes an aggregation window): divide accumulated
        gradients, ``clip_grads(parameters)``, ``scaler.step(optimizer)`` or ``optimizer.step()``, then
        zero the gradients unless ``auto_zero_grads=False``."""
        if self._aggregation_frequency > 1 and not auto_zero_grads:
            raise ValueError("if optimizations.aggregation_frequency is larger than 1, auto_zero_grads must be true")
        if id(optimizer) not in self._average_gradients:
            raise ValueError("step_optimizer() takes an optimizer returned by wrap_optimizer()")
        if not self._should_communicate_and_update():
            return
        parameters = [p for group in optimizer.param_groups for p in group.get("params", [])]
        if self._average_gradients[id(optimizer)] and self._aggregation_frequency > 1:
            for parameter in parameters:
                if parameter.grad is not None:
                    parameter.grad.data.div_(float(self._aggregation_frequency))
        if clip_grads is not None:
            clip_grads(parameters)  # type: ignore[arg-type]
        if scaler is not None:
            scaler.step(optimizer)
        else:
            optimizer.step()
        if auto_zero_grads:
            optimizer.zero_grad()

    # ---- where training is -------------------------------------------------------------------------
    def _position(self) -> tuple:
        if self._current_batch_idx is None:
            raise RuntimeError("Training hasn't started.")
        if self._epoch_len is None:
            raise RuntimeError("Training DataLoader uninitialized.")
        return divmod(self._current_batch_idx, self._epoch_len)

    def is_epoch_start(self) -> bool:
        return self._position()[1] == 0

    def is_epoch_end(self) -> bool:
        index = self._position()[1]
        return index == int(self._epoch_len or 0) - 1

    def current_train_epoch(self) -> int:
        return self._position()[0]

    def current_train_batch(self) -> int:
        if self._current_batch_idx is None:
            raise RuntimeError("Training hasn't started.")
        return self._current_batch_idx
