"""Kept so wave jobs queued by hpo-slurm 0.1.0 still run (``python -m hpo_slurm.sweep_wave MANIFEST``).
New wave jobs use ``hpo_slurm.executors.array.wave_job``."""

import sys

from hpo_slurm.executors.array.wave_job import main

if __name__ == "__main__":
    sys.exit(main())
