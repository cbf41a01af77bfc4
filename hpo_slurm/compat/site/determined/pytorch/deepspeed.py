"""``determined.pytorch.deepspeed``: not supported on hpo-slurm (importing it raises a one-line
``Unsupported``)."""

from hpo_slurm.compat.errors import Unsupported

raise Unsupported("determined.pytorch.deepspeed (DeepSpeedTrial)",
                  "use det.pytorch.PyTorchTrial, or call deepspeed yourself under the Core API")
