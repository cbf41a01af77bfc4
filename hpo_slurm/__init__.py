"""hpo-slurm: hyperparameter searches on Slurm, with a crash-safe driver and Determined-compatible configs."""

__version__ = "0.1.0"
