"""``det.core``: forwards to ``hpo_slurm.compat.core``."""

from hpo_slurm.compat.core import *  # noqa: F401,F403
from hpo_slurm.compat.core import __all__  # noqa: F401
