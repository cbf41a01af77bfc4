"""Starting a sweep (``start``): check the config and the cluster, create the experiment, record every
trial and run and submit them all with one driver start, then return. ``--dry-run`` prints the
scripts and the task -> trial table instead and creates nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import click

from hpo_slurm.core.types import awaits_submission
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout, run_name
from hpo_slurm.sweep.driving import driving
from hpo_slurm.sweep.kind import EXECUTOR, check_sweepable
from hpo_slurm.sweep.plan import DRY_RUN_PREFIX, planned_requests, planned_trials

if TYPE_CHECKING:  # pragma: no cover  (the config module and YAML are imported by the functions that read a config)
    from hpo_slurm.executors.array.executor import ArrayExecutor
    from hpo_slurm.executors.array.manifest import ArrayManifest
    from hpo_slurm.executors.base import JobRequest


def start(config_path: str, name: Optional[str], root: Path, context: Optional[Path], max_jobs: Optional[int],
          dry_run: bool) -> None:
    """``hpo-slurm sweep CONFIG``. Bad input is a UserError before anything exists; runs the
    cluster refused are reported as a ClickException that names ``--resubmit``."""
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.executors.array.executor import ArrayExecutor
    from hpo_slurm.executors.base import placement_or_error
    from hpo_slurm.experiment import folder as experiment

    config = load_config(config_path)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    check_sweepable(config)
    display, name = experiment.name_and_folder(Path(root), name, config)
    directory = (Path(root) / name).absolute()
    trials = planned_trials(config)
    executor = ArrayExecutor(config, directory, max_jobs=max_jobs)
    # without Slurm (a dry run) the nodes' GPUs are the config's, if it says
    placement = (executor.placement(config) if shutil.which("sinfo")
                 else placement_or_error(config, config.slurm.gpus_per_node))
    requests = planned_requests(config, directory, trials, placement)
    if dry_run:
        _print_dry_run(name, executor, requests, trials)
        return
    if not shutil.which("sbatch"):
        raise UserError("hpo-slurm sweep needs Slurm and sbatch is not on PATH; to run the trials on this "
                        f"machine use `hpo-slurm launch {config_path}`")
    if directory.exists():
        raise UserError(f"experiment {display!r} already exists in {root}: choose another --name")
    arrays, _ = executor.plan(requests, executor.limits(), 0)
    first = arrays[0]
    warning = executor.check(len(first.requests), first.gpus, first.time_minutes, DRY_RUN_PREFIX)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    layout = experiment.create(config, Path(config_path), Path(root), name, EXECUTOR, context,
                               warn=lambda message: click.echo(f"warning: {message}", err=True), display=display)
    with driving(layout, executor, submit=True) as driver:
        driver.start(fresh=True)
    _report_start(layout, executor, driver)


def _report_start(layout: ExperimentLayout, executor: ArrayExecutor, driver: Any) -> None:
    runs = list(driver.runs.values())
    unbound = [r for r in runs if awaits_submission(r)]
    arrays = _arrays(executor)
    out_now = [job_id for _, job_id in arrays if job_id]
    waves = [manifest for manifest, _ in arrays if manifest.wave_name]
    K = executor.throttle
    message = (f"sweep {layout.name}: {len(driver.trials)} trials as {len(arrays)} job "
               f"array{'s' if len(arrays) != 1 else ''} (job{'s' if len(out_now) != 1 else ''} "
               f"{', '.join(out_now) or 'none'}"
               f"{f'; {len(waves)} more submitted in waves as earlier ones end' if waves else ''}"
               f"{f', at most {K} tasks at once' if 0 < K < len(driver.trials) else ''}).")
    click.echo(message, err=True)
    if unbound:
        raise click.ClickException(
            f"{len(unbound)} of {len(runs)} runs were not submitted ({executor.last_error or 'see driver.log'}); "
            f"`hpo-slurm sweep --resubmit {layout.name}` submits them")
    click.echo(f"Nothing keeps running here. Follow it with `hpo-slurm status {layout.name}`.", err=True)


def _arrays(executor: ArrayExecutor) -> List[Tuple[ArrayManifest, Optional[str]]]:
    """Every readable manifest of the experiment, in array order, with its array's job id (None
    while it is not out)."""
    found = []
    for index in executor.folders.indexes():
        manifest = executor.folders.manifest(index)
        if manifest is not None:
            found.append((manifest, executor.folders.submitted_id(index)))
    return found


def _print_dry_run(name: str, executor: ArrayExecutor, requests: Sequence[JobRequest],
                   trials: List[Tuple[int, Dict[str, Any], int]]) -> None:
    from hpo_slurm.executors.array.caps import Limits
    from hpo_slurm.executors.base import SchedulerError

    try:
        limits = executor.limits()
        where = f"MaxArraySize {limits.max_array_size}"
        if limits.room is not None and limits.room < len(trials):
            where += f", room for {limits.room} more queued jobs ({limits.source})"
    except (UserError, SchedulerError) as exc:
        limits = Limits()
        where = f"cannot read the cluster's limits ({exc}); assuming MaxArraySize {limits.max_array_size} and no cap"
    arrays, plan = executor.plan(requests, limits, 0)
    K = executor.throttle
    click.echo(f"# sweep {name}: {len(trials)} trials in {len(arrays)} job array{'s' if len(arrays) != 1 else ''}"
               f"{' submitted in waves' if plan.waves else ' submitted at once'}"
               f"{f', at most {K} running at once' if 0 < K < len(trials) else ''} ({where})")
    click.echo(f"# dry run: nothing is created or submitted; the experiment folder would be {executor.dir}")
    for position, array in enumerate(arrays):
        ids = [r.run_id for r in array.requests]
        click.echo(f"\n# ---- jobs/array-{array.index}/array.sbatch: tasks 0-{len(ids) - 1} = runs "
                   f"{ids[0]} .. {ids[-1]}{' (submitted by a wave job)' if plan.waves and position else ''} ----")
        click.echo(executor.scripts.render(array, DRY_RUN_PREFIX), nl=False)
        if plan.waves and position:
            click.echo(f"\n# ---- jobs/array-{array.index}/wave.sbatch ----")
            click.echo(executor.scripts.render_wave(array.index, DRY_RUN_PREFIX), nl=False)
    by_run = {run_name(trial_id, 1): (trial_id, hparams) for trial_id, hparams, _ in trials}
    click.echo("\n# ---- manifests: array, task -> trial, run, hyperparameters (each task's spec is in its manifest) ----")
    for array in arrays:
        for task, request in enumerate(array.requests):
            trial_id, hparams = by_run[request.run_id]
            click.echo(f"# array-{array.index} task {task}: trial {trial_id} run {request.run_id} "
                       f"{json.dumps(hparams, sort_keys=True)}")
