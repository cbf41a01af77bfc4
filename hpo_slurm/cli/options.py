"""Options and arguments several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, TypeVar

import click

from hpo_slurm.cli.completion import complete_experiment_names

F = TypeVar("F", bound=Callable)

ROOT_HELP = "Folder holding experiments (default: $HPO_SLURM_ROOT, else ./hpo-runs)."


def root_option(function: F) -> F:
    """``--root DIR``: where experiments live (resolve it with ``resolve_root``)."""
    return click.option("--root", type=click.Path(file_okay=False), default=None, help=ROOT_HELP)(function)


def name_argument(function: F) -> F:
    """The experiment's ``NAME``, completed in the shell from the experiments under the root."""
    return click.argument("name", shell_complete=complete_experiment_names)(function)


def optional_name_argument(function: F) -> F:
    """An experiment's ``NAME`` that may be left out (then the command is about every experiment)."""
    return click.argument("name", required=False, shell_complete=complete_experiment_names)(function)


def resolve_root(root: Optional[str]) -> Path:
    """The experiments folder ``--root`` names, else $HPO_SLURM_ROOT, else ./hpo-runs (UserError when unusable)."""
    from hpo_slurm.experiment.folder import resolve_root as resolve

    return resolve(root)
