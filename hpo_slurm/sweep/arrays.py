"""``hpo-slurm sweep``: a whole non-adaptive search (single, grid, random) as Slurm job arrays, with
no process left on the login node.

    hpo-slurm sweep grid.yaml [--name NAME] [--root DIR] [--dry-run] [--max-jobs N]
    hpo-slurm sweep --resubmit NAME        # the failed or lost tasks, as one more array

A sweep is an ordinary experiment (executor ``array``): the real searcher, with its concurrency cap
lifted, creates every trial up front (the same trials ``launch`` would create), the driver records
every trial and run, and one driver start submits them all through ``ArrayExecutor``. Then the command
returns. ``hpo-slurm status NAME`` takes the driver lock for one tick (poll, ingest, judge, no
submission), so a sweep shows the same tables as a driven search; a failed task gets a retry run
that waits for ``--resubmit``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

import click

from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout, run_name
from hpo_slurm.core.types import Create, Train

if TYPE_CHECKING:  # pragma: no cover  (the config module and YAML are imported by the functions that read a config)
    from hpo_slurm.config.schema import ExperimentConfig

SWEEP_SEARCHERS = ("single", "grid", "random")
EXECUTOR = "array"
DRY_RUN_PREFIX = "hpo.xxxxxxxx."


def check_sweepable(config: ExperimentConfig) -> None:
    if config.searcher.name not in SWEEP_SEARCHERS:
        raise UserError(
            f"{config.source}: searcher.name: a sweep runs searches that need no decisions "
            f"({', '.join(SWEEP_SEARCHERS)}); {config.searcher.name} adapts to results, so it needs the "
            f"driver: use `hpo-slurm launch {config.source}`")


def planned_trials(config: ExperimentConfig) -> List[Tuple[int, Dict[str, Any], int]]:
    """(trial id, hyperparameters, length) of every trial the sweep creates, from the real searcher."""
    from hpo_slurm.searchers import make_searcher

    searcher = make_searcher(config.uncapped())
    trials: Dict[int, Dict[str, Any]] = {}
    lengths: Dict[int, int] = {}
    queue = deque(searcher.initial())
    while queue:
        action = queue.popleft()
        if isinstance(action, Create):
            trials[action.trial_id] = action.hparams
            queue.extend(searcher.on_created(action.trial_id))
        elif isinstance(action, Train):
            lengths[action.trial_id] = action.length
    return [(trial_id, hparams, lengths.get(trial_id, 0)) for trial_id, hparams in trials.items()]


# ---- starting a sweep ---------------------------------------------------------------------------

def start(config_path: str, name: Optional[str], root: Path, context: Optional[Path], max_jobs: Optional[int],
          dry_run: bool) -> None:
    from hpo_slurm.experiment import folder as experiment
    from hpo_slurm.config.schema import check_name, load_config
    from hpo_slurm.executors.array.executor import ArrayExecutor
    from hpo_slurm.executors.base import JobRequest

    config = load_config(config_path)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    check_sweepable(config)
    name = name or config.name
    check_name(name, "--name", "")
    directory = (Path(root) / name).absolute()
    trials = planned_trials(config)
    executor = ArrayExecutor(config, directory, max_jobs=max_jobs)
    requests = [
        JobRequest(run_id=run_name(trial_id, 1), job_name=DRY_RUN_PREFIX + run_name(trial_id, 1),
                   run_dir=directory / "runs" / run_name(trial_id, 1),
                   spec_path=directory / "runs" / run_name(trial_id, 1) / "spec.json",
                   gpus=config.slots_per_trial, time_minutes=config.slurm.time_minutes)
        for trial_id, _, _ in trials
    ]
    if dry_run:
        _print_dry_run(config, name, executor, requests, trials)
        return
    if not shutil.which("sbatch"):
        raise UserError("hpo-slurm sweep needs Slurm and sbatch is not on PATH; to run the trials on this "
                        f"machine use `hpo-slurm launch {config_path}`")
    if directory.exists():
        raise UserError(f"experiment {name!r} already exists in {root}: choose another --name")
    arrays, _ = executor.plan(requests, executor.limits(), 0)
    first = arrays[0]
    warning = executor.check(len(first.requests), first.gpus, first.time_minutes, DRY_RUN_PREFIX)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    layout = experiment.create(config, Path(config_path), Path(root), name, EXECUTOR, context,
                               warn=lambda message: click.echo(f"warning: {message}", err=True))
    executor = ArrayExecutor(config, layout.dir, max_jobs=max_jobs)
    with _driving(layout, executor, submit=True) as driver:
        driver.start(fresh=True)
    _report_start(layout, executor, driver)


def _report_start(layout: ExperimentLayout, executor, driver) -> None:
    runs = list(driver.runs.values())
    unbound = [r for r in runs if not r["job_id"] and r["state"] == "SUBMITTED"]
    arrays = _arrays(layout)
    out_now = [a for a in arrays if a.get("job_id")]
    waves = [a for a in arrays if a.get("wave_name")]
    K = executor.throttle
    message = (f"sweep {layout.name}: {len(driver.trials)} trials as {len(arrays)} job "
               f"array{'s' if len(arrays) != 1 else ''} (job{'s' if len(out_now) != 1 else ''} "
               f"{', '.join(a['job_id'] for a in out_now) or 'none'}"
               f"{f'; {len(waves)} more submitted in waves as earlier ones end' if waves else ''}"
               f"{f', at most {K} tasks at once' if 0 < K < len(driver.trials) else ''}).")
    click.echo(message, err=True)
    if unbound:
        raise click.ClickException(
            f"{len(unbound)} of {len(runs)} runs were not submitted ({executor.last_error or 'see driver.log'}); "
            f"`hpo-slurm sweep --resubmit {layout.name}` submits them")
    click.echo(f"Nothing keeps running here. Follow it with `hpo-slurm status {layout.name}`.", err=True)


def _arrays(layout: ExperimentLayout) -> List[Dict[str, Any]]:
    from hpo_slurm.core.fsio import read_json

    found = []
    jobs = layout.dir / "jobs"
    for folder in sorted(jobs.glob("array-*"), key=lambda p: int(p.name.split("-")[1])) if jobs.is_dir() else []:
        try:
            manifest = read_json(folder / "manifest.json")
        except (OSError, ValueError):
            continue
        try:
            manifest["job_id"] = str(read_json(folder / "submitted.json")["job_id"])
        except (OSError, ValueError, KeyError):
            manifest["job_id"] = None
        found.append(manifest)
    return found


def _print_dry_run(config: ExperimentConfig, name: str, executor, requests, trials) -> None:
    from hpo_slurm.executors.base import SchedulerError
    from hpo_slurm.executors.array.caps import Limits

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
        click.echo(executor.render(array, DRY_RUN_PREFIX), nl=False)
        if plan.waves and position:
            click.echo(f"\n# ---- jobs/array-{array.index}/wave.sbatch ----")
            click.echo(executor.render_wave(array.index, DRY_RUN_PREFIX), nl=False)
    by_run = {run_name(trial_id, 1): (trial_id, hparams) for trial_id, hparams, _ in trials}
    click.echo("\n# ---- manifests: array, task -> trial, run, hyperparameters (read from spec files) ----")
    for array in arrays:
        for task, request in enumerate(array.requests):
            trial_id, hparams = by_run[request.run_id]
            click.echo(f"# array-{array.index} task {task}: trial {trial_id} run {request.run_id} "
                       f"{json.dumps(hparams, sort_keys=True)}")


# ---- status and resubmission --------------------------------------------------------------------

def is_sweep(layout: ExperimentLayout) -> bool:
    """Whether the experiment runs as job arrays with no driver; a UserError when its database
    cannot be read (locked for longer than the busy timeout, damaged)."""
    import sqlite3

    from hpo_slurm.experiment.store import Store

    try:
        store = Store.open(layout.database, readonly=True)
        try:
            return store.experiment().get("executor") == EXECUTOR
        finally:
            store.close()
    except sqlite3.Error as exc:
        raise UserError(f"{layout.name}: cannot read experiment.db ({exc})") from None


def refresh(layout: ExperimentLayout, quiet: bool = False) -> None:
    """For ``status``: one driver tick that submits nothing (poll Slurm, ingest the tasks' files,
    judge ended tasks). Skipped when another process holds the experiment's driver lock, or Slurm
    cannot be reached (the last known state is shown)."""
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.executors.array.executor import ArrayExecutor
    from hpo_slurm.executors.base import SchedulerError

    try:
        if not is_sweep(layout):
            return
        executor = ArrayExecutor(load_config(str(layout.config)), layout.dir)
        with _driving(layout, executor, submit=False) as driver:
            if not driver.done:
                driver.tick()
            waiting = [r for r in driver.runs.values() if not r["job_id"] and r["state"] == "SUBMITTED"]
    except (UserError, SchedulerError) as exc:
        if not quiet:
            click.echo(f"hpo-slurm: {layout.name}: not refreshed ({exc})", err=True)
        return
    if waiting and not quiet:
        click.echo(f"{layout.name}: {len(waiting)} run{'s' if len(waiting) != 1 else ''} of failed or lost tasks "
                   f"wait{'s' if len(waiting) == 1 else ''} for `hpo-slurm sweep --resubmit {layout.name}`", err=True)


def resubmit_failed(layout: ExperimentLayout, max_jobs: Optional[int]) -> None:
    """Ingest and judge like ``status``, then submit every run waiting for a job (retries of failed
    or lost tasks, runs a crashed ``sweep`` never submitted) as one more array."""
    if not is_sweep(layout):
        raise UserError(f"{layout.name} is not a sweep: use `hpo-slurm resume {layout.name}`")
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.executors.array.executor import ArrayExecutor

    executor = ArrayExecutor(load_config(str(layout.config)), layout.dir, max_jobs=max_jobs)
    with _driving(layout, executor, submit=False) as driver:
        driver.start(fresh=False)  # runs recorded but never bound are looked up by name first
        driver.tick()
        before = {run_id for run_id, run in driver.runs.items() if run["job_id"]}
        driver.submit_enabled = True
        driver.tick()
        sent = [run for run_id, run in driver.runs.items() if run["job_id"] and run_id not in before]
        left = [r for r in driver.runs.values() if not r["job_id"] and r["state"] == "SUBMITTED"]
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


@contextlib.contextmanager
def _driving(layout: ExperimentLayout, executor, submit: bool) -> Iterator[Any]:
    """A driver for one or two ticks: the experiment's lock (UserError when held), its log file (not
    the terminal of `status`), the searcher as the last driver left it (with the sweep's uncapped
    config)."""
    from hpo_slurm.engine.driver import Driver, load_searcher
    from hpo_slurm.engine.session import driver_session

    with driver_session(layout, log_to_terminal=False) as (_, store):
        config = executor.config
        _bind_placeholders(store, executor)
        searcher, _ = load_searcher(config.uncapped(), store)
        driver = Driver(layout, config, store, executor, searcher, poll_interval_s=0.0, submit=submit)
        yield driver
        driver.checkpoint_searcher()


def _bind_placeholders(store, executor) -> None:
    """Runs of a wave were bound to ``array-<n>_<task>`` before their array went out; once it has,
    record the real job id (we hold the driver lock: we are the only writer)."""
    from hpo_slurm.executors.array.executor import PLACEHOLDER

    changes = {}
    for run in store.runs():
        if run["job_id"] and PLACEHOLDER.match(run["job_id"]):
            real = executor.resolve(run["job_id"])
            if real:
                changes[run["id"]] = real
    if changes:
        with store.transaction():
            for run_id, job_id in changes.items():
                store.update_run(run_id, job_id=job_id, submitted_at=time.time())  # its array just went out


# ---- the command --------------------------------------------------------------------------------

def register(cli: click.Group) -> None:
    """Add ``sweep`` to the ``hpo-slurm`` command group."""

    @cli.command()
    @click.argument("target", metavar="CONFIG | NAME")
    @click.option("--name", default=None, help="Experiment name (default: the config's name).")
    @click.option("--root", type=click.Path(file_okay=False), default=None,
                  help="Folder holding experiments (default: $HPO_SLURM_ROOT, else ./hpo-runs).")
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
        from hpo_slurm.experiment.folder import find, resolve_root

        root_path = resolve_root(root)
        if resubmit:
            if name or dry_run or context:
                raise UserError("--resubmit takes a sweep's NAME; --name, --context and --dry-run do not apply")
            resubmit_failed(find(root_path, target), max_jobs)
            return
        start(target, name, root_path, Path(context) if context else None, max_jobs, dry_run)


__all__ = ["register", "check_sweepable", "planned_trials", "refresh", "resubmit_failed", "start"]
