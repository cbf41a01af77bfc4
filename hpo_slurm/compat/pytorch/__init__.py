"""Determined's ``determined.pytorch`` on hpo-slurm: ``PyTorchTrial``, its context and trainer.

    class MyTrial(det.pytorch.PyTorchTrial): ...
    with det.pytorch.init() as context:                       # the Trainer API
        det.pytorch.Trainer(MyTrial(context), context).fit(max_length=det.pytorch.Epoch(1),
                                                           latest_checkpoint=info.latest_checkpoint)
    entrypoint: model_def:MyTrial                             # the legacy harness (``harness``)

Modules: ``lengths`` (Batch, Epoch, Record), ``data`` (DataLoader: seeded, sharded, resumable order),
``lr_scheduler``, ``callback``, ``reducer`` (metric reduction), ``context`` (PyTorchTrialContext),
``trial`` (PyTorchTrial), ``session`` (where reports and checkpoints go), ``checkpoint_state`` (what a
checkpoint holds), ``loop`` (the training loop), ``trainer`` (init, Trainer), ``harness``
(``run_trial_class``), ``load`` (``load_trial_from_checkpoint_path``). This subpackage imports torch;
the rest of ``hpo_slurm.compat`` never does.
"""

from hpo_slurm.compat.errors import Unsupported
from hpo_slurm.compat.pytorch.callback import PyTorchCallback
from hpo_slurm.compat.pytorch.context import PyTorchExperimentalContext, PyTorchTrialContext
from hpo_slurm.compat.pytorch.data import DataLoader, TorchData, data_length, to_device
from hpo_slurm.compat.pytorch.lengths import Batch, Epoch, Record, TrainUnit
from hpo_slurm.compat.pytorch.load import CheckpointLoadContext, load_trial_from_checkpoint_path
from hpo_slurm.compat.pytorch.lr_scheduler import LRScheduler
from hpo_slurm.compat.pytorch.reducer import MetricReducer, Reducer
from hpo_slurm.compat.pytorch.trainer import Trainer, init
from hpo_slurm.compat.pytorch.trial import PyTorchTrial

__all__ = [
    "Batch", "CheckpointLoadContext", "DataLoader", "Epoch", "LRScheduler", "MetricReducer", "PyTorchCallback", "PyTorchExperimentalContext",
    "PyTorchTrial", "PyTorchTrialContext", "Record", "Reducer", "TorchData", "TrainUnit", "Trainer", "Unsupported",
    "data_length", "init", "load_trial_from_checkpoint_path", "to_device",
]
