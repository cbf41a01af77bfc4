"""``hpo-slurm simulate``: a whole search on a simulated cluster, through the real driver and store.

    result = simulate("search.yaml", "hpo_slurm.benchmarks.hartmann:good", root="sims", workers=16)

The experiment folder holds config.yaml and experiment.db like any other (``hpo-slurm status`` reads
it); the jobs exist only in memory (``executors.simulated``). The loop: move the virtual clock to the
next event, let the runs that end then "write" their validation, ``driver.tick()``; until the driver is
done. The driver is exactly ``launch``'s, with ``poll_interval_s=0``: ``Simulation.crash()`` drops it
mid-search and ``Simulation.open_driver()`` resumes it from experiment.db, as ``hpo-slurm resume`` does,
while the simulated cluster keeps its jobs.
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import click

from hpo_slurm.core.errors import UserError

ObjectiveSpec = Union[str, Callable[[Dict[str, Any], int], Dict[str, Any]]]


def load_objective(spec: ObjectiveSpec) -> Callable[[Dict[str, Any], int], Dict[str, Any]]:
    """``module:function`` (or a callable) -> the function."""
    if callable(spec):
        return spec
    module_name, _, function_name = str(spec).partition(":")
    if not module_name or not function_name:
        raise UserError(f"--objective {spec!r}: expected MODULE:FUNCTION, e.g. hpo_slurm.benchmarks.hartmann:good")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"--objective {spec!r}: cannot import {module_name!r} ({exc})") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserError(f"--objective {spec!r}: {module_name} has no function {function_name!r}")
    return function


class _CheckedObjective:
    """Checks the first answer of the objective: a dict with numeric ``seconds`` and the metric."""

    def __init__(self, function: Callable[[Dict[str, Any], int], Dict[str, Any]], metric: str):
        self.function = function
        self.metric = metric
        self.checked = False

    def __call__(self, hparams: Dict[str, Any], length: int) -> Dict[str, Any]:
        result = self.function(hparams, length)
        if not self.checked:
            if not isinstance(result, dict) or not isinstance(result.get("seconds"), (int, float)):
                raise UserError(f"the objective must return a dict with numeric 'seconds', got {result!r}")
            if self.metric not in result:
                keys = ", ".join(sorted(k for k in result if k != "seconds"))
                raise UserError(f"the objective returns {keys or 'no metric'}, but searcher.metric is {self.metric!r}")
            self.checked = True
        return result


def create_experiment(config_path: Path, root: Path, name: Optional[str] = None, seed: Optional[int] = None,
                      origin: Optional[float] = None):
    """A simulated experiment's folder: config.yaml (with ``seed`` as reproducibility.experiment_seed
    when given) and a new experiment.db; published by rename like ``experiment.create``, without a
    context copy. Returns (layout, config)."""
    import yaml

    from hpo_slurm.config.schema import check_name, load_config, parse_config
    from hpo_slurm.experiment.folder import make_root
    from hpo_slurm.core.layout import ExperimentLayout
    from hpo_slurm.experiment.store import Store

    config_path = Path(config_path)
    config = load_config(str(config_path))
    text = config_path.read_text()
    if seed is not None:
        data = yaml.safe_load(text)
        data.setdefault("reproducibility", {})
        data["reproducibility"] = dict(data["reproducibility"] or {}, experiment_seed=seed)
        text = yaml.safe_dump(data, sort_keys=False)
        config = parse_config(data, str(config_path), base_dir=str(config_path.resolve().parent))
    name = check_name(name or config.name, "--name", "")
    root = Path(root)
    final = root / name
    if final.exists():
        raise UserError(f"experiment {name!r} already exists in {root}: use another --name")
    make_root(root)
    staging = Path(tempfile.mkdtemp(prefix=f".hpo-{name}-", dir=root))
    try:
        layout = ExperimentLayout(staging)
        layout.config.write_text(text)
        store = Store.open(layout.database)
        store.create_experiment(
            name=name, uid=uuid.uuid4().hex, state="RUNNING", searcher=config.searcher.name, executor="simulated",
            config=text, created_at=time.time() if origin is None else origin, ended_at=None, message=None,
        )
        store.close()
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExperimentLayout(final), config


class Simulation:
    """One experiment on a simulated cluster. ``run()`` to the end, or ``step()`` one event at a time;
    ``crash()`` and ``open_driver()`` to kill and resume the driver mid-search."""

    def __init__(self, layout, objective: ObjectiveSpec, workers: int = 16, seed: int = 0, faults=None,
                 searcher=None):
        from hpo_slurm.config.schema import load_config
        from hpo_slurm.executors.simulated import Faults, SimulatedExecutor, SimulatedWorkspace, VirtualClock
        from hpo_slurm.experiment.store import Store

        self.layout = layout
        self.config = load_config(str(layout.config))
        store = Store.open(layout.database, readonly=True)
        try:
            origin = float(int(store.experiment()["created_at"]))
        finally:
            store.close()
        self.clock = VirtualClock(origin)
        self.workspace = SimulatedWorkspace()
        self.searcher_override = searcher  # a Searcher not made from the config (benchmark baselines)
        searcher_config = self.config.searcher
        self.metric = searcher_config.metric
        self.max_length = searcher_config.max_length
        self.smaller_is_better = searcher_config.smaller_is_better
        self.executor = SimulatedExecutor(
            self.workspace, _CheckedObjective(load_objective(objective), self.metric), self.clock, workers,
            seed=seed, faults=faults or Faults(), on_validation=self._on_validation,
        )
        self.workers = workers
        self.seed = seed
        self.trace: List[List[float]] = []  # [compute seconds, best metric at max_length]
        self.best: Optional[Tuple[int, float]] = None
        self.driver = None
        self.store = None
        self.ticks = 0
        self._idle_ticks = 0
        self.restarts_of_driver = 0
        self.wall_seconds = 0.0
        # if set to a list: (perf_counter, trials created, last event seq) after each tick
        self.tick_log: Optional[List[Tuple[float, int, int]]] = None

    # ---- the driver ---------------------------------------------------------------------------------
    def open_driver(self) -> None:
        """Start the driver, or resume it from experiment.db after ``crash()``."""
        from hpo_slurm.engine.driver import Driver, load_searcher
        from hpo_slurm.experiment.store import Store

        self.store = Store.open(self.layout.database)
        if self.searcher_override is not None and self.driver is None and self.restarts_of_driver == 0:
            searcher, fresh = self.searcher_override, True
        else:
            searcher, fresh = load_searcher(self.config, self.store)
        self.driver = Driver(self.layout, self.config, self.store, self.executor, searcher, clock=self.clock,
                             poll_interval_s=0.0, workspace=self.workspace)
        self.driver.start(fresh=fresh)

    def crash(self) -> None:
        """The driver dies (no searcher checkpoint, nothing flushed); the cluster keeps running."""
        if self.store is not None:
            self.store.close()
        self.driver, self.store = None, None
        self.restarts_of_driver += 1

    def close(self) -> None:
        if self.driver is not None:
            self.driver.checkpoint_searcher()
        if self.store is not None:
            self.store.close()
        self.store = None

    # ---- the loop -----------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.driver is not None and self.driver.done

    def step(self) -> bool:
        """Advance to the next event and tick the driver. False once the search is over."""
        if self.driver is None:
            self.open_driver()
        if self.driver.done:
            return False
        when = self.executor.next_event_time()
        if when is not None:
            self._idle_ticks = 0
            self.clock.t = max(self.clock.t, when)
            self.executor.advance(self.clock.t)
        elif self.executor.idle:
            self._idle_ticks += 1
            if self._idle_ticks > 3:
                raise RuntimeError("the simulation stalled: no job runs and the search is not over")
        self.driver.tick()
        self.ticks += 1
        if self.tick_log is not None:
            last_event = self.store.conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
            self.tick_log.append((time.perf_counter(), len(self.driver.trials), last_event))
        return not self.driver.done

    def run(self, max_ticks: Optional[int] = None) -> Dict[str, Any]:
        started = time.perf_counter()
        try:
            if self.driver is None:
                self.open_driver()
            ticks = 0
            while self.step():
                ticks += 1
                if max_ticks is not None and ticks >= max_ticks:
                    return {}
        finally:
            self.wall_seconds += time.perf_counter() - started
        self.close()
        return self.result()

    # ---- results ------------------------------------------------------------------------------------
    def _on_validation(self, trial_id: int, length: int, metrics: Dict[str, Any], compute: float) -> None:
        if length < self.max_length:
            return
        value = metrics.get(self.metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if self.best is None or (value < self.best[1] if self.smaller_is_better else value > self.best[1]):
            self.best = (trial_id, float(value))
            self.trace.append([compute, float(value)])

    def result(self) -> Dict[str, Any]:
        import json

        from hpo_slurm.experiment.store import Store

        store = Store.open(self.layout.database, readonly=True)
        try:
            experiment = store.experiment()
            trials = store.conn.execute("SELECT COUNT(*), SUM(restarts), SUM(preemptions) FROM trials").fetchone()
            events = store.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            searcher_events = store.last_searcher_event()
            best = None
            if self.best is not None:
                row = store.conn.execute("SELECT hparams FROM trials WHERE id = ?", [self.best[0]]).fetchone()
                best = {"trial_id": self.best[0], "metric": self.best[1], "length": self.max_length,
                        "hparams": json.loads(row[0])}
        finally:
            store.close()
        executor = self.executor
        makespan = executor.last_end
        compute = executor.busy_seconds
        return {
            "experiment": self.layout.name,
            "dir": str(self.layout.dir),
            "state": experiment["state"],
            "best": best,
            "trials": trials[0],
            "events": events,
            "searcher_events": searcher_events,
            "runs": executor.counts["submitted"],
            "compute_seconds": compute,
            "makespan_seconds": makespan,
            "utilization": compute / (self.workers * makespan) if makespan > 0 else None,
            "wall_seconds": self.wall_seconds,
            "workers": self.workers,
            "seed": self.seed,
            "restarts": trials[1] or 0,
            "preemptions": trials[2] or 0,
            "injected": {key: executor.counts[key] for key in ("stragglers", "failed", "preempted")},
            "driver_restarts": self.restarts_of_driver,
            "incumbent_trace": self.trace,
        }


def simulate(config_path: Union[str, Path], objective: ObjectiveSpec, root: Union[str, Path],
             name: Optional[str] = None, workers: int = 16, seed: Optional[int] = None, faults=None,
             searcher=None) -> Dict[str, Any]:
    """Create a simulated experiment under ``root`` and run it to the end; the result as a dict.
    ``seed`` replaces the config's experiment_seed and seeds the injected faults."""
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.core.rng import Rng

    function = load_objective(objective)
    checked = load_config(str(config_path))  # the objective is tried before anything is created
    try:
        _CheckedObjective(function, checked.searcher.metric)(checked.hyperparameters.sample(Rng(0)), 1)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"the objective failed on a sample configuration: {type(exc).__name__}: {exc}") from exc
    layout, config = create_experiment(Path(config_path), Path(root), name, seed)
    simulation = Simulation(layout, function, workers=workers, seed=config.seed if seed is None else seed,
                            faults=faults, searcher=searcher(config) if callable(searcher) else searcher)
    return simulation.run()


def _probability(name: str):
    return click.option(f"--{name}", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                        help=f"Probability that a run attempt is hit by {name} (see the README).")


def register(cli: click.Group) -> None:
    @cli.command("simulate")
    @click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, exists=True))
    @click.option("--objective", required=True, metavar="MODULE:FUNCTION",
                  help="f(hparams, length) -> {metric: value, 'seconds': cumulative training seconds}.")
    @click.option("--workers", type=click.IntRange(min=1), default=16, show_default=True,
                  help="Simulated workers (GPUs) running trials at once; more runs wait in a FIFO queue.")
    @click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
                  help="Replaces reproducibility.experiment_seed and seeds the injected faults.")
    @click.option("--name", default=None, help="Experiment name (default: the config's name).")
    @click.option("--root", type=click.Path(file_okay=False), default=None,
                  help="Folder holding experiments (default: $HPO_SLURM_ROOT, else ./hpo-runs).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @_probability("stragglers")
    @click.option("--straggler-factor", type=click.FloatRange(min=1), default=4.0, show_default=True,
                  help="How many times slower a straggler runs.")
    @_probability("failures")
    @_probability("preemptions")
    def simulate_command(config_path, objective, workers, seed, name, root, as_json, stragglers,
                         straggler_factor, failures, preemptions) -> None:
        """Run a search on a simulated cluster: the real driver and store, a virtual clock.

        Trials are calls of the objective; nothing is submitted. The experiment folder (config.yaml,
        experiment.db) is created under --root and `hpo-slurm status` reads it.

        \b
        Example:
          hpo-slurm simulate benchmarks/configs/hartmann6.yaml \\
              --objective hpo_slurm.benchmarks.hartmann:good --workers 16 --json
        """
        import json

        from hpo_slurm.executors.simulated import Faults
        from hpo_slurm.experiment.folder import resolve_root

        if failures + preemptions > 1:
            raise UserError("--failures plus --preemptions must not exceed 1")
        result = simulate(config_path, objective, resolve_root(root), name=name,
                          workers=workers, seed=seed,
                          faults=Faults(stragglers, straggler_factor, failures, preemptions))
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
        if best:
            click.echo(f"best at full length: trial {best['trial_id']}, {best['metric']:.6g}, "
                       f"{json.dumps(best['hparams'], sort_keys=True)}")
        else:
            click.echo("no trial reached full length")
