"""Commands that look back at an experiment: ``plot``, ``report``, ``best``, ``export``, ``tensorboard``.

``register(cli)`` adds them to the ``hpo-slurm`` group. Everything heavy (matplotlib, the store) is
imported inside the commands, so ``hpo-slurm --help`` stays fast. Mistakes raise UserError, which the
group prints as one line with exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from hpo_slurm.cli.options import name_argument, resolve_root, root_option
from hpo_slurm.core.errors import UserError
from hpo_slurm.cli.outputs import output_dir, output_file, write_failed

FORMATS = ("csv", "json", "jsonl")
WHAT = ("trials", "runs", "metrics")


def _load(name: str, root: Optional[str]):
    from hpo_slurm.experiment import folder as experiment
    from hpo_slurm.reporting import results

    return results.load(experiment.find(resolve_root(root), name))


def _choices(values):
    """Shell completion for an option validated by hand (so a bad value is one UserError line)."""
    from click.shell_completion import CompletionItem

    return lambda ctx, param, incomplete: [CompletionItem(v) for v in values if v.startswith(incomplete)]


@click.command()
@name_argument
@root_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the PNG files (default: <experiment>/plots).")
def plot(name: str, root, out_dir) -> None:
    """Draw the search as PNG pictures: learning curves, best result against GPU-hours, each
    hyperparameter against the metric, and the best trials in parallel coordinates.

    Needs matplotlib: pip install 'hpo-slurm[plots]'.

    \b
    Example:
      hpo-slurm plot first-try --out plots/
    """
    from hpo_slurm.reporting.live import progress
    from hpo_slurm.reporting.plots import FIGURES, require_matplotlib, write_pngs

    require_matplotlib()
    results = _load(name, root)
    target = output_dir(Path(out_dir) if out_dir else results.layout.dir / "plots")
    with progress("drawing") as update:
        done = []
        try:
            paths = write_pngs(results, target,
                               on_figure=lambda stem: (done.append(stem), update(len(done), len(FIGURES))))
        except OSError as exc:
            raise write_failed(target, exc) from None
    for path in paths:
        click.echo(str(path))


@click.command()
@name_argument
@root_option
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write (default: <experiment>/report.html).")
def report(name: str, root, out_file) -> None:
    """Write one self-contained HTML page: summary, best trial, pictures and the trial table.

    The pictures are inlined, so the file can be copied, mailed or attached anywhere.
    Needs matplotlib: pip install 'hpo-slurm[plots]'.

    \b
    Example:
      hpo-slurm report first-try --out first-try.html
    """
    from hpo_slurm.reporting.live import progress
    from hpo_slurm.reporting.plots import FIGURES, require_matplotlib
    from hpo_slurm.reporting.report import write_report
    from hpo_slurm.reporting.status import summarize

    require_matplotlib()
    results = _load(name, root)
    target = output_file(Path(out_file) if out_file else results.layout.dir / "report.html")
    with progress("drawing") as update:
        done = []
        try:
            path = write_report(results, summarize(results.layout), target,
                                on_figure=lambda stem: (done.append(stem), update(len(done), len(FIGURES))))
        except OSError as exc:
            raise write_failed(target, exc) from None
    click.echo(str(path))


@click.command()
@name_argument
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of YAML.")
def best(name: str, root, as_json: bool) -> None:
    """Print the best trial: its hyperparameters as a Determined ``hyperparameters:`` block (bare
    values are consts) and its checkpoint folder, at the best length when still on disk.

    The output is valid YAML (the facts are comments), so it can be redirected into a file.

    \b
    Example:
      hpo-slurm best first-try > best-hparams.yaml
      hpo-slurm best first-try --json | jq -r .checkpoint
    """
    import json

    from hpo_slurm.reporting.best import best_trial, render_yaml

    results = _load(name, root)
    found = best_trial(results)
    if as_json:
        click.echo(json.dumps(found))
    else:
        click.echo(render_yaml(found, results.config.hyperparameters), nl=False)


@click.command()
@name_argument
@root_option
@click.option("--format", "fmt", default="csv", show_default=True, metavar="csv|json|jsonl",
              shell_complete=_choices(FORMATS), help="Output format.")
@click.option("--what", default="trials", show_default=True, metavar="trials|runs|metrics",
              shell_complete=_choices(WHAT), help="Which table to export.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="File to write (default: standard output).")
def export(name: str, root, fmt: str, what: str, out_file: str) -> None:
    """Export trials (hyperparameters as dotted columns in CSV), runs or metrics for pandas.

    JSON keeps hyperparameters and metrics nested; pandas.json_normalize gives the same columns as
    the CSV (hparams.optimizer.lr, metrics.validation_loss).

    \b
    Example:
      hpo-slurm export first-try --format csv > trials.csv
      hpo-slurm export first-try --what metrics --format jsonl --out metrics.jsonl
      python -c "import pandas as pd; print(pd.read_csv('trials.csv').head())"
    """
    from hpo_slurm.reporting.export import rows, write

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if what not in WHAT:
        raise UserError(f"--what {what!r}: expected one of {', '.join(WHAT)}")
    target = None if out_file == "-" else output_file(Path(out_file))
    table = rows(_load(name, root), what)
    if target is None:
        write(table, fmt, sys.stdout)
        return
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            write(table, fmt, handle)
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(target, exc) from None
    click.echo(f"{len(table)} {what} rows written to {target}", err=True)


@click.command()
@name_argument
@root_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the event files (default: <experiment>/tensorboard).")
def tensorboard(name: str, root, out_dir) -> None:
    """Write every trial's metrics as TensorBoard event files, one folder per trial.

    Tags are <kind>/<metric> (validation/validation_loss, training/loss), steps are lengths.
    Running it again replaces the files. TensorBoard itself is not needed to write them.

    \b
    Example:
      hpo-slurm tensorboard first-try --out tb/ && tensorboard --logdir tb/
    """
    from hpo_slurm.reporting.live import progress
    from hpo_slurm.reporting.tensorboard_export import export as write_events

    results = _load(name, root)
    target = output_dir(Path(out_dir) if out_dir else results.layout.dir / "tensorboard")
    with progress("writing event files") as update:
        done = []
        try:
            paths = write_events(results, target, on_trial=lambda trial_id: (
                done.append(trial_id), update(len(done), len(results.trials))))
        except OSError as exc:
            raise write_failed(target, exc) from None
    click.echo(f"{len(paths)} trials written under {target}; view them with: tensorboard --logdir {target}")


COMMANDS = (plot, report, best, export, tensorboard)


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
    for command in COMMANDS:
        group.add_command(command)
