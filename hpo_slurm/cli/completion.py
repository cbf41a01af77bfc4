"""Shell completion of experiment names, for click's completion (``_HPO_SLURM_COMPLETE=bash_source``).

Light on purpose: this module is imported whenever the command line is, so it imports only click and
reads the root folder only when the shell asks for candidates.
"""

from __future__ import annotations

from typing import List

import click
from click.shell_completion import CompletionItem


def complete_experiment_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[CompletionItem]:
    """Names of the experiments under the root that start with ``incomplete``. The root is the
    command's ``--root`` when already typed, else ``$HPO_SLURM_ROOT``, else ``./hpo-runs``. Never
    raises: an unreadable root completes to nothing."""
    from hpo_slurm.core.errors import UserError
    from hpo_slurm.experiment.folder import resolve_root

    try:
        folder = resolve_root((ctx.params or {}).get("root"))
        names = sorted(p.name for p in folder.iterdir() if (p / "experiment.db").is_file())
    except (OSError, UserError):
        return []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]
