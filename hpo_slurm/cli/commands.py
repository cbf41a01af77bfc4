"""The ``hpo-slurm`` command line: a thin shell over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hpo_slurm.cli.options import name_argument, optional_name_argument, resolve_root, root_option
from hpo_slurm.core.errors import UserError


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # () catches nothing (click 8.1)


class _Group(click.Group):
    """Turns a UserError anywhere below, and click's own usage errors (a bad option value, a missing
    argument), into one line on stderr and exit status 2; Slurm not answering and a full disk into one
    line and exit status 1."""

    def invoke(self, ctx: click.Context):
        from hpo_slurm.executors.base import SchedulerError

        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"hpo-slurm: {exc}", err=True)
            ctx.exit(2)
        except SchedulerError as exc:  # Slurm itself did not answer: not the user's mistake
            click.echo(f"hpo-slurm: cannot reach Slurm ({exc}); try again once it answers", err=True)
            ctx.exit(1)
        except Exception as exc:  # a full disk is not the user's mistake either: one line, exit status 1
            from hpo_slurm.engine.disk_space import DiskFullError, describe, is_disk_full

            if isinstance(exc, DiskFullError):
                click.echo(f"hpo-slurm: {exc}", err=True)
            elif is_disk_full(exc):
                click.echo(f"hpo-slurm: the disk is full ({describe(exc)}); free space and try again", err=True)
            else:
                raise
            ctx.exit(1)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("", err=True)
            sys.exit(130)
        except _NO_ARGS_IS_HELP as exc:  # a bare `hpo-slurm` (click 8.2+): the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see `{exc.ctx.command_path} --help`)"
            click.echo(f"hpo-slurm: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group)
@click.version_option(package_name="hpo-slurm")
def cli() -> None:
    """Hyperparameter searches on Slurm, with Determined-compatible configs.

    \b
    Example:
      hpo-slurm preview examples/quadratic/adaptive.yaml
      hpo-slurm launch examples/quadratic/adaptive.yaml
    """


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--seconds-per-unit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Training seconds per unit of length, to estimate GPU-hours.")
@click.option("--gpus", type=click.IntRange(min=1), default=None,
              help="GPUs per trial for the estimate (default: resources.slots_per_trial).")
def preview(config_path: str, as_json: bool, seconds_per_unit, gpus) -> None:
    """Show what a search will train, before it spends GPU-hours.

    Runs the real searcher against a synthetic metric: no trials, no files.

    \b
    Example:
      hpo-slurm preview search.yaml --seconds-per-unit 0.5
    """
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.reporting.plan_tables import render_plan
    from hpo_slurm.searchers.preview import build_plan

    config = load_config(config_path)
    _print_warnings(config)
    plan = build_plan(config, seconds_per_unit=seconds_per_unit, gpus=gpus)
    if as_json:
        click.echo(json.dumps(plan))
    else:
        render_plan(plan)



def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _print_warnings(config) -> None:
    """The config's ignored or adjusted keys, one ``warning:`` line each on stderr."""
    for warning in config.warnings:
        _warn(warning)


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Experiment name (default: the config's name).")
@root_option
@click.option("--executor", type=click.Choice(["auto", "local", "slurm"]), default="auto", show_default=True,
              help="Where trials run: slurm when sbatch is on PATH, else local processes.")
@click.option("--context", type=click.Path(file_okay=False, exists=True), default=None,
              help="Model folder to copy (default: the config's folder); .hpoignore is honoured.")
@click.option("--detach", is_flag=True, help="Run the driver in the background, logging to driver.log.")
@click.option("--as-job", is_flag=True,
              help="Run the driver itself as a Slurm job that requeues itself (sites that forbid long login-node processes).")
def launch(config_path: str, name, root, executor: str, context, detach: bool, as_job: bool) -> None:
    """Start a search: copy the config and model folder, then drive the trials.

    \b
    Example:
      hpo-slurm launch examples/quadratic/adaptive.yaml --name first-try
    """
    from hpo_slurm.experiment import folder as experiment
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.executors import resolve_executor_name

    config = load_config(config_path)
    _print_warnings(config)
    root_path = resolve_root(root)
    display, name = experiment.name_and_folder(root_path, name, config)
    from hpo_slurm.reporting.live import progress

    executor = resolve_executor_name(executor)
    if executor == "slurm":  # what Slurm would refuse is refused before anything is created
        from hpo_slurm.config.pool_section import worker_time_minutes
        from hpo_slurm.executors.slurm.executor import SlurmExecutor

        pool = config.slurm.pool  # a pool's worker jobs ask for its own time limit
        time_minutes = worker_time_minutes(pool, config.slurm.time_minutes) if pool else config.slurm.time_minutes
        warning = SlurmExecutor(config, root_path / name).check(config.slots_per_trial, time_minutes)
        if warning:
            _warn(warning)
    elif executor == "local":  # a trial this machine cannot hold is refused before anything is created
        from hpo_slurm.executors.local import LocalExecutor

        LocalExecutor().placement(config)
    if as_job:  # its script too
        from hpo_slurm.engine import driver_job
        from hpo_slurm.core.layout import ExperimentLayout

        driver_job.render(config, ExperimentLayout(root_path / name), uid="0" * 32)
    with progress("copying the model folder", unit="bytes") as copied:
        layout = experiment.create(config, Path(config_path), root_path, name, executor,
                                   Path(context) if context else None, progress=copied, warn=_warn,
                                   display=display)
    shown = name if display == name else f"{display!r} (folder {name})"
    click.echo(f"experiment {shown} created in {layout.dir}", err=True)
    if as_job:
        from hpo_slurm.engine import driver_job
        from hpo_slurm.experiment.store import Store

        store = Store.open(layout.database, readonly=True)
        uid = store.experiment()["uid"]
        store.close()
        job_id = driver_job.submit(driver_job.render(config, layout, uid), layout)
        click.echo(f"driver submitted as Slurm job {job_id}; follow it with `hpo-slurm status {name} --watch`", err=True)
        return
    _drive(layout, detach)


@cli.command()
@name_argument
@root_option
@click.option("--detach", is_flag=True, help="Run the driver in the background, logging to driver.log.")
def resume(name: str, root, detach: bool) -> None:
    """Restart the driver of an experiment after it stopped (crash, reboot, Ctrl-C).

    It re-adopts queued and running jobs, ingests what finished meanwhile, and carries on.

    \b
    Example:
      hpo-slurm resume first-try
    """
    from hpo_slurm.experiment import folder as experiment

    layout = experiment.find(resolve_root(root), name)
    _drive(layout, detach)


class _TimeLimitWarning(BaseException):
    """SIGUSR1 reached the driver: stop cleanly so its job can requeue itself."""


def _drive(layout, detach: bool) -> None:
    import subprocess

    if detach:
        with open(layout.driver_log, "ab") as log_file:
            logged = log_file.tell()
            process = subprocess.Popen(
                [sys.executable, "-m", "hpo_slurm.cli", "resume", layout.name, "--root", str(layout.dir.parent)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        _wait_until_driving(layout, process, logged)
        click.echo(f"driver started in the background (pid {process.pid}); follow it with "
                   f"`hpo-slurm status {layout.name} --watch`", err=True)
        return
    import signal

    from hpo_slurm.engine.driver_job import REQUEUE_EXIT_CODE
    from hpo_slurm.engine.session import run_driver
    from hpo_slurm.reporting.live import live_view

    def time_limit_warning(signum, frame):
        raise _TimeLimitWarning()

    signal.signal(signal.SIGUSR1, time_limit_warning)
    try:
        with live_view(layout) as on_tick:
            driver = run_driver(layout, on_tick=on_tick)
    except KeyboardInterrupt:
        click.echo(f"\ndriver stopped; trials keep their work. Continue with `hpo-slurm resume {layout.name}`", err=True)
        sys.exit(130)
    except _TimeLimitWarning:
        click.echo("driver stopped on SIGUSR1 (its job's time-limit warning, or a preemption); trials keep their work "
                   "and the job requeues itself", err=True)
        sys.exit(REQUEUE_EXIT_CODE)
    state = driver.experiment["state"]
    click.echo(f"experiment {layout.name}: {state}", err=True)
    if state == "ERRORED":
        sys.exit(1)  # a script can tell a failed search from a finished one


def _wait_until_driving(layout, process, logged: int, timeout: float = 30.0) -> None:
    """Return once the background driver has ticked (its lock's heartbeat moved after it took the
    lock), or finished the search; a UserError with its last log line when it exited with an error
    (another driver running, Slurm unreachable)."""
    import time as _time

    from hpo_slurm.experiment.lock import read_lock

    deadline = _time.monotonic() + timeout
    first_beat = None
    while _time.monotonic() < deadline:
        holder = read_lock(layout.lock) or {}
        code = process.poll()
        if code is not None:
            if code == 0 or first_beat is not None or holder.get("pid") == process.pid:
                return  # it drove the search, which ended already: `status` tells how
            with open(layout.driver_log, "rb") as handle:
                handle.seek(logged)
                lines = handle.read().decode(errors="replace").strip().splitlines()
            if lines and lines[-1].startswith(f"experiment {layout.name}: "):
                return  # it ran and the search ended (ERRORED) before its lock was seen
            reason = lines[-1].removeprefix("hpo-slurm: ") if lines else f"exit status {code}"
            raise UserError(f"the driver did not start: {reason}")
        if holder.get("pid") == process.pid:
            if first_beat is None:
                first_beat = holder.get("heartbeat")
            elif holder.get("heartbeat") != first_beat:
                return
        _time.sleep(0.05)


@cli.command()
@optional_name_argument
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Refresh in place until interrupted.")
@click.option("--trials", "trials", metavar="all|N", default=None,
              help="Also list trials with their runs: every trial, or the latest N (default: the summary only).")
def status(name, root, as_json: bool, watch: bool, trials) -> None:
    """Show experiments, or one experiment's summary: progress, trials and runs by state, compute,
    best trial, active runs and the top trials.

    \b
    Example:
      hpo-slurm status                 # every experiment under the root
      hpo-slurm status first-try --json
      hpo-slurm status first-try --json --trials all
    """
    from hpo_slurm.experiment import folder as experiment
    from hpo_slurm.reporting.status import parse_trials_option, summarize
    from hpo_slurm.sweep.refresh import refresh as refresh_sweep  # a sweep has no driver: status ingests its tasks' files

    wanted = parse_trials_option(trials)
    root_path = resolve_root(root)
    if name is None:
        if wanted is not None:
            raise UserError(f"--trials {trials}: lists one experiment's trials; give its NAME")
        summaries = [refresh_sweep(layout, quiet=True) or summarize(layout) for layout in experiment.list_all(root_path)]
        if as_json:
            click.echo(json.dumps({"experiments": summaries}))
        elif not summaries:
            click.echo(f"no experiments in {root_path}")
        else:
            from hpo_slurm.reporting.views import experiments_table, output_console

            output_console().print(experiments_table(summaries))
        return
    layout = experiment.find(root_path, name)
    refresh_sweep(layout)
    if as_json:
        click.echo(json.dumps(summarize(layout, trials=wanted)))
    elif watch:
        from hpo_slurm.reporting.live import watch_status

        watch_status(layout, trials=wanted)
    else:
        from hpo_slurm.reporting.views import print_summary

        print_summary(summarize(layout, trials=wanted))


@cli.command()
@name_argument
@root_option
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the jobs to end.")
def stop(name: str, root, timeout: float) -> None:
    """Stop a search: cancel its queued and running work and close it.

    \b
    Example:
      hpo-slurm stop first-try
    """
    import time as _time

    from hpo_slurm.experiment import folder as experiment
    from hpo_slurm.experiment.lock import driver_alive
    from hpo_slurm.engine.session import run_driver

    layout = experiment.find(resolve_root(root), name)
    layout.stop_request.touch()
    if driver_alive(layout.lock)["alive"]:
        deadline = _time.monotonic() + timeout
        while driver_alive(layout.lock)["alive"] and _time.monotonic() < deadline:
            _time.sleep(0.5)
    else:
        run_driver(layout, max_ticks=int(timeout / 0.25))
    click.echo(f"experiment {name}: stopped", err=True)


@cli.command()
@name_argument
@click.argument("trial_id", type=int)
@root_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing the trial's output, run by run, until the trial ends.")
def logs(name: str, trial_id: int, root, follow: bool) -> None:
    """Print a trial's output, run by run.

    \b
    Example:
      hpo-slurm logs first-try 3 --follow
    """
    from hpo_slurm.experiment import folder as experiment
    from hpo_slurm.reporting.logs import print_trial_logs
    from hpo_slurm.sweep.kind import is_sweep
    from hpo_slurm.sweep.refresh import refresh as refresh_sweep

    layout = experiment.find(resolve_root(root), name)
    refresh = (lambda: refresh_sweep(layout, quiet=True)) if follow and is_sweep(layout) else None
    print_trial_logs(layout, trial_id, follow, refresh)


from hpo_slurm.cli.results import register as _register_results; _register_results(cli)  # noqa: E402,E702


from hpo_slurm.cli.sweep import register as _register_sweep; _register_sweep(cli)  # noqa: E402,E702


from hpo_slurm.cli.simulate import register as _register_simulate; _register_simulate(cli)  # noqa: E402,E702


from hpo_slurm.cli.dashboard import register as _register_dashboard; _register_dashboard(cli)  # noqa: E402,E702


def main() -> None:
    cli(prog_name="hpo-slurm")


if __name__ == "__main__":
    main()
