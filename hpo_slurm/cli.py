"""The ``hpo-slurm`` command line: a thin shell over the library."""

from __future__ import annotations

import json
import sys

import click

from .errors import UserError


class _Group(click.Group):
    """Turns a UserError anywhere below into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"hpo-slurm: {exc}", err=True)
            ctx.exit(2)


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
    from .config import load_config
    from .preview import build_plan, render_plan

    config = load_config(config_path)
    plan = build_plan(config, seconds_per_unit=seconds_per_unit, gpus=gpus)
    if as_json:
        click.echo(json.dumps(plan))
    else:
        render_plan(plan)


def main() -> None:
    cli(prog_name="hpo-slurm")


if __name__ == "__main__":
    main()
