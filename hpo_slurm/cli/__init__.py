"""The ``hpo-slurm`` command: click commands only, each a thin shell over the packages below.
May import: everything in hpo_slurm. ``cli`` is the click group, ``main`` the console script."""

from hpo_slurm.cli.commands import cli, main

__all__ = ["cli", "main"]
