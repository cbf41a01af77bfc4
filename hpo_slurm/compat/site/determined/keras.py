"""``determined.keras``: not supported on hpo-slurm (importing it raises a one-line ``Unsupported``)."""

from hpo_slurm.compat.errors import Unsupported

raise Unsupported("determined.keras (TFKerasTrial)",
                  "train with PyTorch (det.pytorch or the Core API), or report from Keras through det.core")
