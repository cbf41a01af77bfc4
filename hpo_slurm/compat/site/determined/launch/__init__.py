"""``python3 -m determined.launch.<launcher>`` on hpo-slurm: see ``hpo_slurm.compat.launch``."""
