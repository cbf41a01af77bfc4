"""``hpo-slurm sweep``: a whole non-adaptive search (single, grid, random) as Slurm job arrays, with
no process left on the login node.

    hpo-slurm sweep grid.yaml [--name NAME] [--root DIR] [--dry-run] [--max-jobs N]
    hpo-slurm sweep --resubmit NAME        # the failed or lost tasks, as one more array

A sweep is an ordinary experiment (executor ``array``): the real searcher, with its concurrency cap
lifted, creates every trial up front (the same trials ``launch`` would create), the driver records
every trial and run, and one driver start submits them all through ``ArrayExecutor``. Then the command
returns. ``hpo-slurm status NAME`` takes the driver lock for one tick (poll, ingest, judge, no
submission), so a sweep shows the same tables as a driven search; a failed task gets a retry run
that waits for ``--resubmit`` (``hpo_slurm.sweep``).
"""

from __future__ import annotations

from pathlib import Path

import click

from hpo_slurm.cli.options import resolve_root, root_option
from hpo_slurm.core.errors import UserError


def register(cli: click.Group) -> None:
    """Add ``sweep`` to the ``hpo-slurm`` command group."""

    @cli.command()
    @click.argument("target", metavar="CONFIG | NAME")
    @click.option("--name", default=None, help="Experiment name (default: the config's name).")
    @root_option
    @click.option("--context", type=click.Path(file_okay=False, exists=True), default=None,
                  help="Model folder to copy (default: the config's folder); .hpoignore is honoured.")
    @click.option("--dry-run", is_flag=True, help="Print the sbatch scripts and manifests; create and submit nothing.")
    @click.option("--resubmit", is_flag=True, help="TARGET is a sweep's NAME: submit its failed or lost tasks again.")
    @click.option("--max-jobs", type=click.IntRange(min=1), default=None,
                  help="Queue at most this many jobs at a time (on top of the cluster's own caps).")
    def sweep(target: str, name, root, context, dry_run: bool, resubmit: bool, max_jobs) -> None:
        """Run a single, grid or random search as Slurm job arrays, with nothing left running here.

        Every trial is created up front (the same trials `launch` would train) and submitted as job
        arrays rendered from templates/sbatch/array.sbatch (or slurm.array_template): at most
        max_concurrent_trials tasks run at once, arrays are split below MaxArraySize, and when the
        cluster caps queued jobs later arrays are submitted by small wave jobs. Tasks checkpoint,
        requeue themselves at the time-limit warning and resume after a preemption. `status NAME`
        collects the results; `sweep --resubmit NAME` runs failed or lost tasks again.

        \b
        Example:
          hpo-slurm sweep examples/quadratic/grid.yaml --dry-run
          hpo-slurm sweep examples/quadratic/grid.yaml --name grid-1
          hpo-slurm status grid-1
          hpo-slurm sweep --resubmit grid-1
        """
        from hpo_slurm.experiment.folder import find
        from hpo_slurm.sweep.launch import start
        from hpo_slurm.sweep.refresh import resubmit_failed

        root_path = resolve_root(root)
        if resubmit:
            if name or dry_run or context:
                raise UserError("--resubmit takes a sweep's NAME; --name, --context and --dry-run do not apply")
            resubmit_failed(find(root_path, target), max_jobs)
            return
        start(target, name, root_path, Path(context) if context else None, max_jobs, dry_run)
