"""What a PyTorchTrial checkpoint holds, in Determined's layout, and how it is restored.

Files in the checkpoint folder:

``state_dict.pth`` (written by rank 0)
    Determined's dict: ``models_state_dict`` (each wrapped model's own ``state_dict()``, without DDP's
    ``module.`` prefix), ``optimizers_state_dict``, ``lr_schedulers_state_dict``, ``callbacks`` (name ->
    ``state_dict()``), ``scaler_state_dict`` (when a scaler is wrapped) and ``rng_state`` (rank 0's
    generators, ``hpo_slurm.torch.rng_state``). Callbacks' ``on_checkpoint_save_start`` may add keys.
``rank-<k>.pth`` (written by every rank k)
    That rank's generators and the training metrics of the batches trained since the last training
    report, so a resumed run reports exactly what an uninterrupted one would.
``trial_state.json`` (rank 0)
    Where training is: ``batches_trained``, ``epochs_trained``, and the batches and lengths of the last
    validation and checkpoint.
``load_data.json`` (rank 0)
    Determined's: the trial class (``module:qualname``), hyperparameters and experiment config, for
    ``load_trial_from_checkpoint_path``.

Every rank restores the shared states from ``state_dict.pth`` (DDP broadcast its weights only when it
was built) and its own generators from its ``rank-<k>.pth``, last, so nothing done before the restore
changes what happens after it. A checkpoint saved by another number of ranks restores the shared states
and rank 0's generators in every rank, with a warning: the run then does not continue bit for bit.
``state_dict.pth`` of a Determined checkpoint (``models_state_dict`` ...) loads too, with its own
generators or none.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from hpo_slurm.compat.pytorch.callback import PyTorchCallback
from hpo_slurm.compat.pytorch.context import PyTorchTrialContext
from hpo_slurm.torch import load_file, rng_state, set_rng_state

log = logging.getLogger("determined.pytorch")

STATE_FILE = "state_dict.pth"
RANK_FILE = "rank-{rank}.pth"
TRIAL_STATE = "trial_state.json"
LOAD_DATA = "load_data.json"
FORMAT = 1


def save(path: Path, context: PyTorchTrialContext, trial: Any, callbacks: Mapping[str, PyTorchCallback],
         trial_state: Mapping[str, Any], pending: List[Dict[str, Any]]) -> None:
    """Write this rank's part of a checkpoint into ``path`` (module docstring). ``trial_state`` is JSON;
    ``pending`` this rank's training metrics not yet reported, as plain values."""
    rank, size = context.distributed.rank, context.distributed.size
    generators = rng_state()
    if rank == 0:
        checkpoint: Dict[str, Any] = {
            "models_state_dict": [model.state_dict() for model in context._inner_models],
            "optimizers_state_dict": [optimizer.state_dict() for optimizer in context.optimizers],
            "lr_schedulers_state_dict": [scheduler.state_dict() for scheduler in context.lr_schedulers],
            "callbacks": {name: callback.state_dict() for name, callback in callbacks.items()},
            "rng_state": generators,
        }
        if context._scaler is not None:
            checkpoint["scaler_state_dict"] = context._scaler.state_dict()
        for callback in callbacks.values():
            callback.on_checkpoint_save_start(checkpoint)
        torch.save(checkpoint, path / STATE_FILE)
        (path / TRIAL_STATE).write_text(json.dumps(dict(trial_state), sort_keys=True), encoding="utf-8")
        cls = type(trial)
        (path / LOAD_DATA).write_text(json.dumps({
            "trial_type": "PyTorchTrial",
            "experiment_config": context._exp_conf,
            "hparams": context._hparams,
            "trial_cls_spec": f"{cls.__module__}:{cls.__qualname__}",
            "is_trainer": True,
        }, default=str), encoding="utf-8")
    torch.save({"format": FORMAT, "rank": rank, "world_size": size, "rng_state": generators, "pending": pending},
               path / RANK_FILE.format(rank=rank))


def read_trial_state(path: Path) -> Optional[Dict[str, Any]]:
    """The ``trial_state.json`` of the checkpoint in ``path`` (None: not a checkpoint of this trainer)."""
    file = path / TRIAL_STATE
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def load(path: Path, context: PyTorchTrialContext,
         callbacks: Mapping[str, PyTorchCallback]) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
    """Restore the checkpoint in ``path`` into ``context``'s wrapped objects and ``callbacks`` and set
    this rank's generators (module docstring). Returns its trial state (None for a Determined checkpoint
    without one) and this rank's pending training metrics ([] when not restored). ``ValueError`` when
    the checkpoint holds another number of models, optimizers or LR schedulers."""
    checkpoint = load_file(path / STATE_FILE)
    for callback in callbacks.values():
        callback.on_checkpoint_load_start(checkpoint)
    models = checkpoint.get("models_state_dict")
    if models is None and "model_state_dict" in checkpoint:
        models = [checkpoint["model_state_dict"]]
    _check_count("models", models, context._inner_models)
    for model, state in zip(context._inner_models, models):
        _load_model(model, state)
    optimizers = checkpoint.get("optimizers_state_dict")
    if optimizers is None and "optimizer_state_dict" in checkpoint:
        optimizers = [checkpoint["optimizer_state_dict"]]
    _check_count("optimizers", optimizers, context.optimizers)
    for optimizer, state in zip(context.optimizers, optimizers):
        optimizer.load_state_dict(state)
    schedulers = checkpoint.get("lr_schedulers_state_dict", [])
    _check_count("LR schedulers", schedulers, context.lr_schedulers)
    for scheduler, state in zip(context.lr_schedulers, schedulers):
        scheduler.load_state_dict(state)
    if context._scaler is not None:
        if "scaler_state_dict" in checkpoint:
            context._scaler.load_state_dict(checkpoint["scaler_state_dict"])
        else:
            log.warning("the trial wraps a scaler but the checkpoint holds no scaler state")
    saved_callbacks = checkpoint.get("callbacks", {})
    for name, callback in callbacks.items():
        if name in saved_callbacks:
            callback.load_state_dict(saved_callbacks[name])
    pending, generators = _own_state(path, context, checkpoint)
    trial_state = read_trial_state(path)
    if generators is not None:
        set_rng_state(generators)
    return trial_state, pending


def _own_state(path: Path, context: PyTorchTrialContext,
               checkpoint: Mapping[str, Any]) -> Tuple[List[Dict[str, Any]], Optional[Mapping[str, Any]]]:
    """This rank's pending metrics and generators (see the module docstring)."""
    rank, size = context.distributed.rank, context.distributed.size
    own_file = path / RANK_FILE.format(rank=rank)
    if own_file.is_file():
        own = load_file(own_file)
        if own.get("world_size") == size and own.get("rank") == rank:
            return list(own.get("pending") or []), own["rng_state"]
    saved = checkpoint.get("rng_state")
    if rank == 0:
        log.warning("%s was not saved by %d rank(s): the weights and states are restored, the random generators "
                    "are rank 0's (if any) and the current training report starts afresh, so the run does not "
                    "continue exactly as it would have", path, size)
    if isinstance(saved, Mapping) and "python" in saved and "torch" in saved:
        return [], saved
    return [], None


def _check_count(what: str, saved: Any, wrapped: List[Any]) -> None:
    if saved is None or len(saved) != len(wrapped):
        found = "none" if saved is None else len(saved)
        raise ValueError(f"the checkpoint holds {found} {what}, the trial wrapped {len(wrapped)}")


def _load_model(model: nn.Module, state: Dict[str, Any]) -> None:
    """Load ``state`` into the unwrapped ``model``; a state saved from a DDP model (``module.`` keys) too."""
    if state and all(key.startswith("module.") for key in state):
        state = dict(state)
        torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module.")
    model.load_state_dict(state)
