"""Which ``determined`` a trial imports: hpo-slurm's Determined API, or a Determined installed beside it.

hpo-slurm ships its Determined API as a top-level ``determined`` package in ``hpo_slurm/compat/site/``,
a folder that is not on ``sys.path`` by default. Before a trial starts, the job puts one folder first
on its path (``PYTHONPATH`` of a shell command, ``sys.path`` of a ``module:function`` entrypoint),
chosen by the environment variable ``HPO_SLURM_DETERMINED``:

``HPO_SLURM_DETERMINED=hpo-slurm``
    hpo-slurm's ``determined`` (the site folder), whatever else is installed.
``HPO_SLURM_DETERMINED=installed``
    nothing: the trial imports the ``determined`` installed in its interpreter (none: ImportError).
unset (or empty)
    hpo-slurm's ``determined`` when no other ``determined`` is importable by the trial (looked up
    with ``importlib``'s path finder over the context folder, ``PYTHONPATH`` and the interpreter's
    path, without hpo-slurm's folders). When another one is importable, a guard package comes first
    instead: a trial that imports ``determined`` ends at once with ONE line naming the installed
    package's location and the two values to choose from; a trial that never imports it is unaffected.

Never a silent shadow: hpo-slurm's ``determined`` is used over an installed one only when asked for.
Any other value of the variable fails the run with one line (``PackageChoiceError``).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

CHOICE_ENV = "HPO_SLURM_DETERMINED"
HPO_SLURM = "hpo-slurm"
INSTALLED = "installed"
SITE = Path(__file__).resolve().parent / "site"  # holds hpo-slurm's top-level `determined`
GUARD = Path(__file__).resolve().parent / "guard"  # holds the `determined` that says to choose


class PackageChoiceError(ValueError):
    """``HPO_SLURM_DETERMINED`` holds a value that is not a choice."""


def site_path(search_path: Sequence[str], environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The folder to put first on the trial's path (None: none), for a trial whose interpreter searches
    ``search_path`` (in order) and whose environment is ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    value = env.get(CHOICE_ENV, "").strip()
    if value == HPO_SLURM:
        return str(SITE)
    if value == INSTALLED:
        return None
    if value:
        raise PackageChoiceError(f"{CHOICE_ENV}={value!r} is not a choice: set it to {HPO_SLURM} or {INSTALLED}")
    return str(SITE) if installed_determined(search_path) is None else str(GUARD)


def trial_search_path(context_dir: str, environ: Optional[Mapping[str, str]] = None,
                      interpreter_path: Optional[Sequence[str]] = None) -> List[str]:
    """Where a trial started in ``context_dir`` looks for modules: the context folder (a script's own
    folder, or the current one of ``python -m``), ``environ``'s PYTHONPATH, then ``interpreter_path``
    (default: this interpreter's ``sys.path``, the one a trial's ``python3`` is)."""
    env = os.environ if environ is None else environ
    pythonpath = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    rest = list(sys.path if interpreter_path is None else interpreter_path)
    return [context_dir, *pythonpath, *rest]


def installed_determined(search_path: Sequence[str]) -> Optional[str]:
    """Where the ``determined`` that ``search_path`` holds lives (its folder, or its module file), not
    counting hpo-slurm's own folders; None when there is none."""
    ours = {str(SITE), str(GUARD)}
    paths = [p for p in search_path if _resolved(p) not in ours]
    found = importlib.machinery.PathFinder.find_spec("determined", paths)
    if found is None:
        return None
    if found.submodule_search_locations:
        return str(list(found.submodule_search_locations)[0])
    return str(found.origin)


def conflict_line(search_path: Sequence[str]) -> str:
    """The one line a trial ends with when it imports ``determined`` with the choice unset and another
    ``determined`` importable from ``search_path``."""
    where = installed_determined(search_path) or "an unknown location"
    return (f"hpo-slurm: another `determined` is installed at {where} and {CHOICE_ENV} is not set: set "
            f"{CHOICE_ENV}={INSTALLED} to use it, or {CHOICE_ENV}={HPO_SLURM} to use hpo-slurm's Determined API")


def _resolved(path: str) -> str:
    try:
        return str(Path(path or ".").resolve())
    except OSError:
        return path
