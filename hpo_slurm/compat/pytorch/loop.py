"""The training loop of a ``PyTorchTrial``, as Determined's harness runs it, over a ``Session``.

Counting. ``batches_trained`` counts global batches (one optimizer step of every rank) from the start
of the trial. An epoch is ``epoch_len`` batches: ``records_per_epoch // global batch size`` when the
experiment config sets ``records_per_epoch``, else the training loader's batches per pass over the data
divided over the ranks (rounded up). The global batch size is the ``global_batch_size`` hyperparameter,
else the training ``DataLoader``'s ``batch_size`` times the number of ranks.

Lengths. Reports and checkpoints carry a length in the search's unit: ``batches_trained``; for
records ``batches_trained * global batch size``; for epochs the epochs completed. The run's target
(a length in that unit) becomes a batch count (records: ``target // global batch size``, at least 1;
epochs: ``target * epoch_len``), and the validation and checkpoint there carry the target itself.

Order after each batch: the training report, when a reporting, validation or checkpoint period ends or
the length is reached (the mean of every batch since the last one, every rank's); the validation, when
its period ends; the checkpoint, when its period ends (or after every validation with
``checkpoint_policy="all"``); then the stop check (preemption, time limit, the search, or
``context.set_stop_requested(True)``): a stop checkpoints (with the metrics of the batches not yet
reported) and returns at once; a stop the trial requested also validates first. At the length:
validate and checkpoint there unless just done.

Resuming restores the batches of the training report in progress; a reducer the trial wrapped for
training (``context.wrap_reducer``) starts that report afresh.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import sys
from typing import Any, Dict, Iterator, List, Optional

import torch

from hpo_slurm.compat.pytorch import checkpoint_state
from hpo_slurm.compat.pytorch.callback import PyTorchCallback
from hpo_slurm.compat.pytorch.context import PyTorchTrialContext
from hpo_slurm.compat.pytorch.data import DataLoader
from hpo_slurm.compat.pytorch.lengths import Batch, Boundary, Epoch, Record, TrainUnit, records_to_batches
from hpo_slurm.compat.pytorch.reducer import as_value, average_training, plain, reduce_validation
from hpo_slurm.compat.pytorch.session import Session
from hpo_slurm.compat.pytorch.trial import PyTorchTrial

log = logging.getLogger("determined.pytorch")

POLICIES = ("best", "all", "none")


class TrainingLoop:
    """One ``fit``: train ``trial`` to ``max_length`` (a ``TrainUnit``) or, when ``target_length`` is
    given (a length in the session's unit), to that. ``latest_checkpoint``: a storage id to resume
    from. Periods are ``TrainUnit`` s or None. ``test_mode``: one batch, one validation batch."""

    def __init__(self, trial: PyTorchTrial, context: PyTorchTrialContext, session: Session, *,
                 max_length: Optional[TrainUnit], target_length: int, latest_checkpoint: Optional[str],
                 validation_period: Optional[TrainUnit], checkpoint_period: Optional[TrainUnit],
                 reporting_period: Optional[TrainUnit], checkpoint_policy: str = "best",
                 step_zero_validation: bool = False, test_mode: bool = False):
        if not isinstance(trial, PyTorchTrial):
            raise TypeError(f"Trainer takes a PyTorchTrial, got {type(trial).__name__}")
        if checkpoint_policy not in POLICIES:
            raise ValueError(f"checkpoint_policy must be one of {', '.join(POLICIES)}, got {checkpoint_policy!r}")
        if not context.models:
            raise ValueError("Must have at least one model. This might be caused by not wrapping your model "
                             "with wrap_model().")
        if not context.optimizers:
            raise ValueError("Must have at least one optimizer. This might be caused by not wrapping your "
                             "optimizer with wrap_optimizer().")
        self.trial, self.context, self.session = trial, context, session
        self.max_length, self.target_length = max_length, target_length
        self.latest_checkpoint = latest_checkpoint
        self.periods = {"validation": validation_period, "checkpoint": checkpoint_period, "report": reporting_period}
        self.policy = checkpoint_policy
        self.step_zero_validation = step_zero_validation
        self.test_mode = test_mode
        self.by_batch = _overridden(trial, "evaluate_batch")
        if self.by_batch == _overridden(trial, "evaluate_full_dataset"):
            raise ValueError("Please define exactly one of: `evaluate_batch()` or `evaluate_full_dataset()`.")
        self.callbacks: Dict[str, PyTorchCallback] = {}
        self.state: Dict[str, Any] = {"batches_trained": 0, "epochs_trained": 0, "last_val_batches": None,
                                      "last_val_length": None, "last_ckpt_batches": None, "last_ckpt_length": None,
                                      "trial_id": session.trial_id}
        self.window: List[Dict[str, Any]] = []  # this rank's metrics of the batches not yet reported

    # ---- setup -------------------------------------------------------------------------------------
    def run(self) -> None:
        ctx = self.context
        self.callbacks = dict(self.trial.build_callbacks())
        load_path = self.session.resolve(self.latest_checkpoint) if self.latest_checkpoint else None
        saved_state = checkpoint_state.read_trial_state(load_path) if load_path is not None else None
        start = int(saved_state["batches_trained"]) if saved_state else 0
        ctx._steps_completed = start
        with contextlib.ExitStack() as stack:
            for callback in self.callbacks.values():
                callback.on_trial_startup(start, self.latest_checkpoint)
                stack.callback(callback.on_trial_shutdown)
            seed = self._data_seed()
            training = self._training_loader(seed, start)
            self.validation_loader = self._validation_loader(seed)
            self._plan()
            if load_path is not None:
                log.info("Restoring trial from checkpoint %s", self.latest_checkpoint)
                loaded, self.window = checkpoint_state.load(load_path, ctx, self.callbacks)
                if loaded is not None:
                    self.state.update({k: v for k, v in loaded.items() if k in self.state and k != "trial_id"})
                self.window = [{k: as_value(v) for k, v in m.items()} for m in self.window]
            iterator = iter(training)
            stack.callback(_close, iterator)
            for callback in self.callbacks.values():
                callback.on_training_start()
            self._train(iterator)

    def _data_seed(self) -> int:
        """The trial seed (off hpo-slurm without one: drawn from torch's generator, the same on every rank)."""
        if self.session.trial_seed is not None:
            return int(self.session.trial_seed)
        return int(self.context.distributed.broadcast(int(torch.randint(0, 2**62, (1,)).item())))

    def _training_loader(self, seed: int, start: int) -> Any:
        dist = self.context.distributed
        loader = self.trial.build_training_data_loader()
        if isinstance(loader, DataLoader):
            self.loader_batch_size = loader.batch_size
            self.steps_per_epoch = math.ceil(loader.batches_per_epoch() / dist.size)
            return loader.build(seed, repeat=True, start_step=start, num_replicas=dist.size, rank=dist.rank)
        self._check_torch_loader("build_training_data_loader", loader)
        self.loader_batch_size = getattr(loader, "batch_size", None)
        try:
            self.steps_per_epoch = len(loader)
        except TypeError:
            self.steps_per_epoch = sys.maxsize
        return _repeat_and_skip(loader, start)

    def _validation_loader(self, seed: int) -> Any:
        dist = self.context.distributed
        loader = self.trial.build_validation_data_loader()
        if isinstance(loader, DataLoader):
            if self.by_batch:
                return loader.build(seed, repeat=False, num_replicas=dist.size, rank=dist.rank)
            return loader.build(seed, repeat=False) if dist.rank == 0 else None
        self._check_torch_loader("build_validation_data_loader", loader)
        return loader

    def _check_torch_loader(self, method: str, loader: Any) -> None:
        if not self.context.experimental._data_repro_checks_disabled:
            raise RuntimeError(f"{method}() returned a {type(loader).__name__}, not a det.pytorch.DataLoader: its "
                               "order is not sharded or resumed. Return det.pytorch.DataLoader(...) (same "
                               "arguments), or call context.experimental.disable_dataset_reproducibility_checks() "
                               "in the trial's __init__")

    def _plan(self) -> None:
        """The global batch size, the epoch length and the batch count to train to."""
        session, ctx = self.session, self.context
        if ctx._batch_sizes is not None:
            self.global_batch_size: Optional[int] = int(ctx._batch_sizes[1])
        elif isinstance(self.loader_batch_size, int):
            self.global_batch_size = self.loader_batch_size * ctx.distributed.size
        else:
            self.global_batch_size = None
        if session.records_per_epoch > 0:
            self.epoch_len = records_to_batches(session.records_per_epoch, self._need_batch_size("records_per_epoch"))
        else:
            self.epoch_len = max(1, self.steps_per_epoch)
        ctx._epoch_len = self.epoch_len
        if session.unit == "records":
            self._need_batch_size("lengths in records")
        if self.target_length > 0:
            unit = session.unit
            self.limit = self._batches(Batch(self.target_length) if unit == "batches" else Record(self.target_length)
                                       if unit == "records" else Epoch(self.target_length))
            self.limit_length: Optional[int] = self.target_length
        else:
            assert self.max_length is not None
            self.limit, self.limit_length = self._batches(self.max_length), None
        self.boundaries = {name: Boundary(unit, self.global_batch_size) for name, unit in self.periods.items()}

    def _need_batch_size(self, what: str) -> int:
        if not self.global_batch_size:
            raise ValueError(f"{what} need the global batch size: set the hyperparameter global_batch_size, or "
                             "give the training det.pytorch.DataLoader a batch_size")
        return self.global_batch_size

    def _batches(self, length: TrainUnit) -> int:
        if not isinstance(length.value, int):
            raise TypeError(f"max_length must be a Batch(int), Epoch(int) or Record(int), got {length!r}")
        if isinstance(length, Epoch):
            return length.value * self.epoch_len
        if isinstance(length, Record):
            return records_to_batches(length.value, self._need_batch_size("Record lengths"))
        return length.value

    def length_at(self, batches: int) -> int:
        """The length, in the session's unit, after ``batches`` batches (the target itself at the limit)."""
        if self.limit_length is not None and batches == self.limit:
            return self.limit_length
        if self.session.unit == "records":
            return batches * int(self.global_batch_size or 0)
        if self.session.unit == "epochs":
            return batches // self.epoch_len
        return batches

    # ---- the loop ----------------------------------------------------------------------------------
    def _train(self, iterator: Iterator) -> None:
        state, ctx = self.state, self.context
        if self.step_zero_validation and state["batches_trained"] == 0 and state["last_val_batches"] is None:
            self._validate()
        limit = state["batches_trained"] + 1 if self.test_mode else self.limit
        self._set_train_mode()
        while state["batches_trained"] < limit:
            batch_idx = state["batches_trained"]
            epoch_idx, in_epoch = divmod(batch_idx, self.epoch_len)
            ctx._current_batch_idx = batch_idx
            if in_epoch == 0:
                for callback in self.callbacks.values():
                    callback.on_training_epoch_start(epoch_idx)
            if not self.window:
                ctx.reset_reducers(for_training=True)
            self._train_batch(next(iterator), epoch_idx, batch_idx)
            state["batches_trained"] = batches = batch_idx + 1
            epoch_end = in_epoch == self.epoch_len - 1
            if epoch_end:
                for callback in self.callbacks.values():
                    callback.on_training_epoch_end(epoch_idx)
                state["epochs_trained"] += 1
            at_limit = batches >= limit
            due = {name: b.reached(batches, epoch_end, state["epochs_trained"]) for name, b in self.boundaries.items()}
            if at_limit or any(due.values()):
                self._report_training()
            if due["validation"] and state["last_val_batches"] != batches:
                self._validate()
            if due["checkpoint"] and state["last_ckpt_batches"] != batches:
                self._checkpoint()
            if at_limit:
                break
            stop = self.session.should_stop()
            asked = self._trial_asked_to_stop()
            if stop or asked:
                if asked and not stop:
                    self._report_training()
                    if state["last_val_batches"] != batches:
                        self._validate()
                if state["last_ckpt_batches"] != batches:
                    self._checkpoint()
                log.info("stopping at batch %d: %s", batches, "stop requested" if stop else "the trial asked to stop")
                if asked and not stop:
                    self.session.end_trial(f"context.set_stop_requested(True) at batch {batches}")
                return
        length = self.length_at(state["batches_trained"])
        if state["last_val_batches"] != state["batches_trained"] or state["last_val_length"] != length:
            self._validate()
        if state["last_ckpt_batches"] != state["batches_trained"] or state["last_ckpt_length"] != length:
            self._checkpoint()

    def _trial_asked_to_stop(self) -> bool:
        """``context.set_stop_requested(True)`` on any rank."""
        asked = self.context.get_stop_requested()
        if self.context.distributed.size > 1:
            flag = torch.tensor([int(asked)], device=self.context.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            asked = bool(flag.item())
        return asked

    def _set_train_mode(self) -> None:
        for model in self.context.models:
            model.train()

    def _train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> None:
        ctx = self.context
        if ctx.experimental._auto_to_device:
            batch = ctx.to_device(batch)
        metrics = self.trial.train_batch(batch=batch, epoch_idx=epoch_idx, batch_idx=batch_idx)
        if isinstance(metrics, torch.Tensor):
            metrics = {"loss": metrics}
        if not isinstance(metrics, dict):
            raise TypeError(f"train_batch must return a dict of metrics or a loss tensor, got {type(metrics).__name__}")
        for scheduler in ctx.lr_schedulers:
            scheduler.auto_step(batch_idx, self.epoch_len, ctx._aggregation_frequency)
        self.window.append({str(name): as_value(value) for name, value in metrics.items()})

    def _report_training(self) -> None:
        """Report the window's metrics (nothing when it is empty: the same on every rank)."""
        ctx, state = self.context, self.state
        if not self.window:
            return
        averaged = average_training(self.window, ctx.distributed.allgather)
        averaged.update({k: plain(v) for k, v in ctx.reduce_metrics(for_training=True).items()})
        averaged.setdefault("batches", state["batches_trained"])
        averaged.setdefault("epochs", state["epochs_trained"])
        self.session.report_training(self.length_at(state["batches_trained"]), averaged)
        batch_metrics = [{k: plain(v) for k, v in m.items()} for m in self.window]
        for callback in self.callbacks.values():
            callback.on_training_workload_end(avg_metrics=averaged, batch_metrics=batch_metrics)
        self.window = []

    # ---- validation and checkpoints ----------------------------------------------------------------
    @torch.no_grad()
    def _validate(self) -> None:
        ctx, state = self.context, self.state
        ctx.reset_reducers(for_training=False)
        for model in ctx.models:
            model.eval()
        for callback in self.callbacks.values():
            callback.on_validation_start()
        if self.by_batch:
            metrics = self._evaluate_batches()
        else:
            metrics = None
            if ctx.distributed.rank == 0:
                metrics = self.trial.evaluate_full_dataset(data_loader=self.validation_loader)
                if not isinstance(metrics, dict):
                    raise TypeError(f"evaluate_full_dataset must return a dict, got {type(metrics).__name__}")
                metrics = {str(k): plain(v) for k, v in metrics.items()}
            metrics = ctx.distributed.broadcast(metrics)
        metrics.update({k: plain(v) for k, v in ctx.reduce_metrics(for_training=False).items()})
        for callback in self.callbacks.values():
            callback.on_validation_end(metrics)
        batches = state["batches_trained"]
        length = self.length_at(batches)
        reported = dict(metrics)
        reported.setdefault("batches", batches)
        reported.setdefault("epochs", state["epochs_trained"])
        self.session.report_validation(length, reported)
        state["last_val_batches"], state["last_val_length"] = batches, length
        self._set_train_mode()
        if self.policy == "all" and state["last_ckpt_batches"] != batches:
            self._checkpoint()

    def _evaluate_batches(self) -> Dict[str, Any]:
        ctx = self.context
        for callback in self.callbacks.values():
            callback.on_validation_epoch_start()
        takes_index = _takes_batch_idx(self.trial.evaluate_batch)
        outputs: List[Dict[str, Any]] = []
        lengths: List[int] = []
        for idx, batch in enumerate(self.validation_loader):
            if ctx.experimental._auto_to_device:
                batch = ctx.to_device(batch)
            lengths.append(self.trial.get_batch_length(batch))
            found = (self.trial.evaluate_batch(batch=batch, batch_idx=idx) if takes_index
                     else self.trial.evaluate_batch(batch=batch))  # type: ignore[call-arg]
            if not isinstance(found, dict):
                raise TypeError(f"evaluate_batch must return a dict of metrics, got {type(found).__name__}")
            outputs.append({str(k): as_value(v) for k, v in found.items()})
            if self.test_mode:
                break
        for callback in self.callbacks.values():
            callback.on_validation_epoch_end(outputs)
        return reduce_validation(outputs, lengths, self.trial.evaluation_reducer(), ctx.distributed.allgather)

    def _checkpoint(self) -> None:
        ctx, state = self.context, self.state
        batches = state["batches_trained"]
        length = self.length_at(batches)
        state["last_ckpt_batches"], state["last_ckpt_length"] = batches, length
        metadata = {"steps_completed": length, "batches": batches, "framework": f"torch-{torch.__version__}",
                    "format": "pickle"}
        pending = [{k: plain(v) for k, v in m.items()} for m in self.window]
        with self.session.checkpoint(length, metadata) as (path, storage_id):
            checkpoint_state.save(path, ctx, self.trial, self.callbacks, state, pending)
            if ctx.distributed.rank == 0:
                for callback in self.callbacks.values():
                    callback.on_checkpoint_end(str(path))
                    callback.on_checkpoint_write_end(str(path))
        for callback in self.callbacks.values():
            callback.on_checkpoint_upload_end(uuid=storage_id)


def _overridden(trial: PyTorchTrial, name: str) -> bool:
    return getattr(type(trial), name) is not getattr(PyTorchTrial, name)


def _takes_batch_idx(method: Any) -> bool:
    parameters = inspect.signature(method).parameters
    return "batch_idx" in parameters or len(parameters) >= 2


def _repeat_and_skip(loader: Any, skip: int) -> Iterator:
    """A torch loader repeated forever, its first ``skip`` batches drawn and dropped."""
    def batches() -> Iterator:
        while True:
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise RuntimeError("the training data loader gives no batch")

    iterator = batches()
    for _ in range(skip):
        next(iterator)
    return iterator


def _close(iterator: Any) -> None:
    """Shut a loader's worker processes down now rather than at garbage collection."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()
