"""Kept so sweep arrays queued by hpo-slurm 0.1.0 still run (``python -m hpo_slurm.sweep_task MANIFEST``).
New arrays use ``hpo_slurm.tasks.sweep_task``."""

import sys

from hpo_slurm.tasks.sweep_task import main

if __name__ == "__main__":
    sys.exit(main())
