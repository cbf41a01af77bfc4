"""``det.pytorch``: forwards to ``hpo_slurm.compat.pytorch``."""

from hpo_slurm.compat.pytorch import *  # noqa: F401,F403
