"""``det.pytorch.load_trial_from_checkpoint_path``: a trained ``PyTorchTrial`` back from its checkpoint
folder (``trials/<id>/checkpoints/length-<n>/`` of an experiment), outside training."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Type, Union

from hpo_slurm.compat.distributed import DummyDistributedContext
from hpo_slurm.compat.pytorch.checkpoint_state import LOAD_DATA, STATE_FILE
from hpo_slurm.torch import load_file
from hpo_slurm.compat.pytorch.context import PyTorchTrialContext
from hpo_slurm.compat.pytorch.session import LocalSession
from hpo_slurm.compat.pytorch.trial import PyTorchTrial


class CheckpointLoadContext(PyTorchTrialContext):
    """A context for building a trial outside training: one process, nothing reported or saved."""

    def __init__(self, hparams: Optional[Dict[str, Any]] = None, exp_conf: Optional[Dict[str, Any]] = None):
        dist = DummyDistributedContext()
        super().__init__(LocalSession(dist, hparams, exp_conf), dist, hparams, exp_conf, trial_seed=0)


def load_trial_from_checkpoint_path(path: Union[str, Path], trial_class: Optional[Type[PyTorchTrial]] = None,
                                    trial_kwargs: Optional[Dict[str, Any]] = None,
                                    torch_load_kwargs: Optional[Dict[str, Any]] = None) -> PyTorchTrial:
    """The trial of the checkpoint in ``path``, built with its hyperparameters and experiment config and
    its models' weights loaded. ``trial_class`` defaults to the class the checkpoint names (imported as
    ``module:qualname``: run from the experiment's ``context/`` folder, or pass it); ``trial_kwargs`` are
    passed to it after the context; ``torch_load_kwargs`` to ``torch.load`` (default: onto the CPU)."""
    folder = Path(path)
    data = json.loads((folder / LOAD_DATA).read_text(encoding="utf-8"))
    if trial_class is None:
        module_name, _, qualname = str(data["trial_cls_spec"]).partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import the trial class {data['trial_cls_spec']} ({exc}): pass trial_class=") from exc
        trial_class = found
    assert trial_class is not None
    context = CheckpointLoadContext(data.get("hparams"), data.get("experiment_config"))
    trial = trial_class(context, **(trial_kwargs or {}))  # type: ignore[call-arg]
    if torch_load_kwargs:
        import torch

        checkpoint = torch.load(folder / STATE_FILE, **torch_load_kwargs)
    else:
        checkpoint = load_file(folder / STATE_FILE)
    states = checkpoint["models_state_dict"]
    if len(states) != len(context._inner_models):
        raise ValueError(f"the checkpoint holds {len(states)} models, the trial wrapped {len(context._inner_models)}")
    for model, state in zip(context._inner_models, states):
        model.load_state_dict(state)
    return trial
