"""``hpo-slurm simulate``: the command line of ``engine.simulation`` (a search on a simulated cluster)."""

from __future__ import annotations

import click

from hpo_slurm.cli.options import resolve_root, root_option
from hpo_slurm.core.errors import UserError


def _probability(name: str):
    return click.option(f"--{name}", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                        help=f"Probability that a run attempt is hit by {name} (see the README).")


def register(cli: click.Group) -> None:
    """Add the ``simulate`` command to ``cli``."""

    @cli.command("simulate")
    @click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, exists=True))
    @click.option("--objective", required=True, metavar="MODULE:FUNCTION",
                  help="f(hparams, length) -> {metric: value, 'seconds': cumulative training seconds}.")
    @click.option("--workers", type=click.IntRange(min=1), default=16, show_default=True,
                  help="Simulated workers (GPUs) running trials at once; more runs wait in a FIFO queue.")
    @click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
                  help="Replaces reproducibility.experiment_seed and seeds the injected faults.")
    @click.option("--name", default=None, help="Experiment name (default: the config's name).")
    @root_option
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @_probability("stragglers")
    @click.option("--straggler-factor", type=click.FloatRange(min=1), default=4.0, show_default=True,
                  help="How many times slower a straggler runs.")
    @_probability("failures")
    @_probability("preemptions")
    @click.option("--queue-wait", "queue_wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
                  metavar="SECONDS", help="Median wait of each job in the scheduler's queue before it may "
                  "take a worker (lognormal; 0: none), as on a busy cluster.")
    @click.option("--queue-wait-sigma", type=click.FloatRange(min=0), default=1.0, show_default=True,
                  help="Shape of the queue wait's lognormal distribution (0: every job waits the median).")
    def simulate_command(config_path, objective, workers, seed, name, root, as_json, stragglers,
                         straggler_factor, failures, preemptions, queue_wait, queue_wait_sigma) -> None:
        """Run a search on a simulated cluster: the real driver and store, a virtual clock.

        Trials are calls of the objective; nothing is submitted. The experiment folder (config.yaml,
        experiment.db) is created under --root and `hpo-slurm status` reads it.

        \b
        Example:
          hpo-slurm simulate benchmarks/configs/hartmann6.yaml \\
              --objective hpo_slurm.benchmarks.hartmann:good --workers 16 --json
        """
        import json

        from hpo_slurm.engine.simulation import simulate
        from hpo_slurm.executors.simulated_world import Faults

        if failures + preemptions > 1:
            raise UserError("--failures plus --preemptions must not exceed 1")
        result = simulate(config_path, objective, resolve_root(root), name=name,
                          workers=workers, seed=seed,
                          faults=Faults(stragglers, straggler_factor, failures, preemptions, queue_wait,
                                        queue_wait_sigma))
        if as_json:
            click.echo(json.dumps(result))
            return
        best = result["best"]
        click.echo(f"experiment {result['experiment']}: {result['state']} in {result['dir']}")
        click.echo(f"trials {result['trials']}, runs {result['runs']}, events {result['events']}, "
                   f"restarts {result['restarts']}, preemptions {result['preemptions']}")
        utilization = "-" if result["utilization"] is None else f"{result['utilization']:.3f}"
        click.echo(f"compute {result['compute_seconds'] / 3600:.2f} worker-hours, makespan "
                   f"{result['makespan_seconds'] / 3600:.2f} h on {result['workers']} workers, "
                   f"utilization {utilization}; simulated in {result['wall_seconds']:.2f} s")
        waits = result["queue_wait"]
        if waits["median_s"] > 0:
            click.echo(f"queue wait: median {waits['median_s']:g} s asked, {waits['jobs']} jobs waited "
                       f"{waits['total_s'] / 3600:.2f} h in all")
        if best:
            click.echo(f"best at full length: trial {best['trial_id']}, {best['metric']:.6g}, "
                       f"{json.dumps(best['hparams'], sort_keys=True)}")
        else:
            click.echo("no trial reached full length")
