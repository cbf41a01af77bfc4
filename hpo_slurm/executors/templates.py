"""The sbatch templates shipped with hpo-slurm: the repository's ``templates/sbatch/`` folder,
installed as the package data ``hpo_slurm.sbatch_templates`` (source, editable and wheel installs
alike)."""

from __future__ import annotations

from importlib import resources

PACKAGE = "hpo_slurm.sbatch_templates"


def sbatch_template(name: str) -> str:
    """The text of the shipped template ``name`` (``array.sbatch`` or ``driver.sbatch``)."""
    return resources.files(PACKAGE).joinpath(name).read_text(encoding="utf-8")


def sbatch_template_location(name: str) -> str:
    """Where the shipped template ``name`` is read from, for messages."""
    return str(resources.files(PACKAGE).joinpath(name))
