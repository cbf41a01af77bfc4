"""A sweep after it started: ``refresh`` (what ``status`` and ``logs --follow`` run first) and
``resubmit_failed`` (``sweep --resubmit``). With no resident driver, each runs one for a tick or two:
poll Slurm, ingest the tasks' files, judge ended tasks. A failed or lost task gets a retry run that
waits, unsubmitted, for ``--resubmit``."""

from __future__ import annotations

from typing import Optional

import click

from hpo_slurm.core.types import awaits_submission
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.sweep.driving import driving
from hpo_slurm.sweep.kind import is_sweep


def refresh(layout: ExperimentLayout, quiet: bool = False) -> None:
    """For ``status``: one driver tick that submits nothing (poll Slurm, ingest the tasks' files,
    judge ended tasks). Nothing for an experiment that is not a sweep. Skipped, with a message unless
    ``quiet``, when another process holds the experiment's driver lock, or Slurm cannot be reached
    (the last known state is shown)."""
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.executors.array.executor import ArrayExecutor
    from hpo_slurm.executors.base import SchedulerError

    try:
        if not is_sweep(layout):
            return
        executor = ArrayExecutor(load_config(str(layout.config)), layout.dir)
        with driving(layout, executor, submit=False) as driver:
            if not driver.done:
                driver.tick()
            waiting = [r for r in driver.runs.values() if awaits_submission(r)]
    except (UserError, SchedulerError) as exc:
        if not quiet:
            click.echo(f"hpo-slurm: {layout.name}: not refreshed ({exc})", err=True)
        return
    if waiting and not quiet:
        click.echo(f"{layout.name}: {len(waiting)} run{'s' if len(waiting) != 1 else ''} of failed or lost tasks "
                   f"wait{'s' if len(waiting) == 1 else ''} for `hpo-slurm sweep --resubmit {layout.name}`", err=True)


def resubmit_failed(layout: ExperimentLayout, max_jobs: Optional[int]) -> None:
    """Ingest and judge like ``status``, then submit every run waiting for a job (retries of failed
    or lost tasks, runs a crashed ``sweep`` never submitted) as one more array. A UserError for an
    experiment that is not a sweep; a ClickException when runs are left unsubmitted."""
    if not is_sweep(layout):
        raise UserError(f"{layout.name} is not a sweep: use `hpo-slurm resume {layout.name}`")
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.executors.array.executor import ArrayExecutor

    executor = ArrayExecutor(load_config(str(layout.config)), layout.dir, max_jobs=max_jobs)
    with driving(layout, executor, submit=False) as driver:
        driver.start(fresh=False)  # runs recorded but never bound are looked up by name first
        driver.tick()
        before = {run_id for run_id, run in driver.runs.items() if run["job_id"]}
        driver.submit_enabled = True
        driver.tick()
        sent = [run for run_id, run in driver.runs.items() if run["job_id"] and run_id not in before]
        left = [r for r in driver.runs.values() if awaits_submission(r)]
    if not sent and not left:
        click.echo(f"sweep {layout.name}: nothing to resubmit ({driver.experiment['state'].lower()})", err=True)
        return
    if sent:
        jobs = sorted({run["job_id"].split("_")[0] for run in sent})
        click.echo(f"sweep {layout.name}: resubmitted {len(sent)} run{'s' if len(sent) != 1 else ''} "
                   f"({', '.join(r['id'] for r in sent)}) as job {', '.join(jobs)}", err=True)
    if left:
        raise click.ClickException(f"{len(left)} runs were not submitted ({executor.last_error or 'see driver.log'}); "
                                   f"try `hpo-slurm sweep --resubmit {layout.name}` again later")
