"""The ``hpo-slurm`` command: click commands only, each a thin shell over the packages below.
May import: everything in hpo_slurm."""
