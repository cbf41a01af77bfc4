"""``determined.estimator``: not supported on hpo-slurm (importing it raises a one-line ``Unsupported``)."""

from hpo_slurm.compat.errors import Unsupported

raise Unsupported("determined.estimator (EstimatorTrial)", "report from the training loop through det.core")
