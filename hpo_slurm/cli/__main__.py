"""``python -m hpo_slurm.cli``: the ``hpo-slurm`` command (the driver job runs it this way)."""

from hpo_slurm.cli import main

main()
