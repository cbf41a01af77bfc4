"""hpo-slurm's Determined API: ``import determined as det`` in a trial run by hpo-slurm.

Plain forwarding modules over ``hpo_slurm.compat`` (``hpo_slurm.compat.package_choice`` says when a
trial imports this package). ``det.pytorch`` is imported on first use.
"""

import importlib
from typing import Any

from determined import core
from hpo_slurm.compat.cluster_info import ClusterInfo, TrialInfo, get_cluster_info
from hpo_slurm.compat.core import LOG_FORMAT
from hpo_slurm.compat.errors import Unsupported
from hpo_slurm.trial import InvalidHP

__all__ = ["ClusterInfo", "InvalidHP", "LOG_FORMAT", "TrialInfo", "Unsupported", "core", "get_cluster_info",
           "launch", "pytorch"]


def __getattr__(name: str) -> Any:
    if name in ("pytorch", "launch"):
        return importlib.import_module(f"determined.{name}")
    raise AttributeError(f"module 'determined' has no attribute {name!r}")
