"""``hpo-slurm simulate``: a whole search on a simulated cluster, through the real driver and store.

    result = simulate("search.yaml", "hpo_slurm.benchmarks.hartmann:good", root="sims", workers=16)

The experiment folder holds config.yaml and experiment.db like any other (``hpo-slurm status`` reads
it); the jobs exist only in memory (``executors.simulated``). The loop: move the virtual clock to the
next event, let the runs that end then "write" their validation, ``driver.tick()``; until the driver is
done. The driver is exactly ``launch``'s, with ``poll_interval_s=0``: ``Simulation.crash()`` drops it
mid-search and ``Simulation.open_driver()`` resumes it from experiment.db, as ``hpo-slurm resume`` does,
while the simulated cluster keeps its jobs.

With ``slurm.pool`` in the config the simulated cluster runs the runs on the pool's worker jobs (each
waits in the queue once; ``executors.simulated_pool``); once the driver is done it ends them. The
result then has a ``pool`` entry, ``compute_seconds`` counts the workers' lifetimes (idle included) and
``queue_wait`` the worker jobs' waits.

A simulated trial is the objective at a length, so a search without ``searcher.max_length`` (whose
trials train until their own code stops) cannot be simulated: it is refused (``require_length``).
"""

from __future__ import annotations

import importlib
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

import yaml

from hpo_slurm.config.pool_section import worker_time_minutes
from hpo_slurm.config.yaml12 import yaml_load
from hpo_slurm.core.errors import ConfigError, UserError

if TYPE_CHECKING:  # the config module is imported by the functions that read a config
    from hpo_slurm.config.schema import ExperimentConfig

MAX_TICKS_AT_ONCE = 8  # with a pool, at most this many driver ticks in a row at one time (see Simulation.step)
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


def require_length(config: ExperimentConfig) -> None:
    """A ConfigError naming ``searcher.max_length`` when ``config`` has none."""
    if config.searcher.open_ended:
        raise ConfigError(config.source, "searcher.max_length", "simulate needs a training length: a simulated "
                          "trial is the objective at a length, so set max_length (e.g. max_length: {batches: 100})")


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
    """A simulated experiment's folder, made by ``experiment.folder.create`` without a model folder copy:
    config.yaml (with ``seed`` as reproducibility.experiment_seed when given) and a new experiment.db
    created at ``origin`` (default: now). Returns (layout, config)."""
    from hpo_slurm.config.schema import load_config, parse_config
    from hpo_slurm.experiment import folder

    config_path = Path(config_path)
    config = load_config(str(config_path))
    text = config_path.read_text()
    if seed is not None:
        data = _with_seed(yaml_load(text, str(config_path)), seed)
        text = dump_config(data)
        config = parse_config(data, str(config_path), base_dir=str(config_path.resolve().parent))
    root = Path(root)
    display, name = folder.name_and_folder(root, name, config)
    if (root / name).exists():
        raise UserError(f"experiment {display!r} already exists in {root}: use another --name")
    layout = folder.create(config, config_path, root, name, "simulated", config_text=text, copy_model=False,
                           created_at=origin, display=display)
    return layout, config


def _with_seed(data: Dict[str, Any], seed: int) -> Dict[str, Any]:
    """The config data with ``seed`` as reproducibility.experiment_seed (the other keys kept in order)."""
    data.setdefault("reproducibility", {})
    data["reproducibility"] = dict(data["reproducibility"] or {}, experiment_seed=seed)
    return data


class _ConfigDumper(yaml.SafeDumper):
    """Writes YAML that the config loader (YAML 1.2 core schema) reads back as the same data."""


# Strings YAML 1.2 reads back as strings when written plain: a letter or _ first (numbers, .inf and .nan
# start otherwise), then no character with a meaning in YAML; minus the words for booleans and null.
_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_NOT_STRINGS = {"true", "True", "TRUE", "false", "False", "FALSE", "null", "Null", "NULL"}


def _represent_string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """A string is written plain only when YAML 1.2 cannot read it as anything else (YAML 1.1, which
    PyYAML's dumper follows, would write ``1e-3`` or ``0o17`` plain), else in double quotes."""
    plain = _PLAIN_STRING.fullmatch(value) and value not in _NOT_STRINGS
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else '"')


_ConfigDumper.add_representer(str, _represent_string)


def dump_config(data: Dict[str, Any]) -> str:
    """Config data as YAML text, keys in their order, that ``load_config`` reads back as ``data``."""
    return yaml.dump(data, Dumper=_ConfigDumper, sort_keys=False)


class Simulation:
    """One experiment on a simulated cluster. ``run()`` to the end, or ``step()`` one event at a time;
    ``crash()`` and ``open_driver()`` to kill and resume the driver mid-search."""

    def __init__(self, layout, objective: ObjectiveSpec, workers: int = 16, seed: int = 0, faults=None,
                 searcher=None):
        from hpo_slurm.config.schema import load_config
        from hpo_slurm.executors.simulated import SimulatedExecutor
        from hpo_slurm.executors.simulated_world import Faults, SimulatedWorkspace, VirtualClock
        from hpo_slurm.experiment.store import Store

        self.layout = layout
        self.config = load_config(str(layout.config))
        require_length(self.config)
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
        pool = self.config.slurm.pool
        limit_minutes = None if pool is None else worker_time_minutes(pool, self.config.slurm.time_minutes)
        self.executor = SimulatedExecutor(
            self.workspace, _CheckedObjective(load_objective(objective), self.metric), self.clock, workers,
            seed=seed, faults=faults or Faults(), on_validation=self._on_validation,
            pool=pool, pool_time_limit_s=None if limit_minutes is None else 60.0 * limit_minutes,
        )
        self.workers = workers
        self.seed = seed
        self.trace: List[List[float]] = []  # [compute seconds, best metric at max_length]
        self.best: Optional[Tuple[int, float]] = None
        self.driver = None
        self.store = None
        self.ticks = 0
        self._idle_ticks = 0
        self._tick_again = False  # with a pool: tick once more before the clock moves (see step)
        self._again_ticks = 0
        self._last_event_seq = -1
        self.restarts_of_driver = 0
        self.wall_seconds = 0.0
        # if set to a list: (perf_counter, trials created, last event seq) after each tick
        self.tick_log: Optional[List[Tuple[float, int, int]]] = None

    # ---- the driver ---------------------------------------------------------------------------------
    def open_driver(self) -> None:
        """Start the driver, or resume it from experiment.db after ``crash()``."""
        from hpo_slurm.engine.driver import Driver
        from hpo_slurm.engine.searcher_log import load_searcher
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
        """Advance to the next event and tick the driver. False once the search is over.

        With a pool, a tick that changed the search (it logged events) is followed by another at the
        same time before the clock moves on: the real driver polls again within seconds (its poll
        interval), long before a worker's idle timeout or time limit, which the next event may be."""
        if self.driver is None:
            self.open_driver()
        if self.driver.done:
            self.executor.finish()
            return False
        when = self.executor.next_event_time()
        if self._tick_again and (when is None or when > self.clock.t):
            self._again_ticks += 1
        elif when is not None:
            self._idle_ticks = 0
            self.clock.t = max(self.clock.t, when)
            self.executor.advance(self.clock.t)
        elif self.executor.idle:
            self._idle_ticks += 1
            if self._idle_ticks > 3:
                raise RuntimeError("the simulation stalled: no job runs and the search is not over")
        self.driver.tick()
        if self.driver.done:
            self.executor.finish()  # with a pool, the driver ends its workers
        elif self.executor.pool is not None:
            seq = self.store.last_event_seq()
            self._tick_again = seq != self._last_event_seq and self._again_ticks < MAX_TICKS_AT_ONCE
            self._last_event_seq = seq
            if not self._tick_again:
                self._again_ticks = 0
        self.ticks += 1
        if self.tick_log is not None:
            self.tick_log.append((time.perf_counter(), len(self.driver.trials), self.store.last_event_seq()))
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
            with store.snapshot_read():
                experiment = store.experiment()
                trials = store.trial_totals()
                events = store.event_count()
                searcher_events = store.last_searcher_event()
                best_trial = store.trial(self.best[0]) if self.best is not None else None
            best = None
            if self.best is not None:
                best = {"trial_id": self.best[0], "metric": self.best[1], "length": self.max_length,
                        "hparams": json.loads(best_trial["hparams"])}
        finally:
            store.close()
        executor = self.executor
        makespan = executor.last_end
        pool = executor.pool_summary()
        compute = executor.busy_seconds if pool is None else executor.compute_seconds()
        result = {
            "experiment": self.layout.name,
            "dir": str(self.layout.dir),
            "state": experiment["state"],
            "best": best,
            "trials": trials.count,
            "events": events,
            "searcher_events": searcher_events,
            "runs": executor.counts["submitted"],
            "compute_seconds": compute,
            "makespan_seconds": makespan,
            "utilization": compute / (self.workers * makespan) if makespan > 0 else None,
            "wall_seconds": self.wall_seconds,
            "workers": self.workers,
            "seed": self.seed,
            "restarts": trials.restarts,
            "preemptions": trials.preemptions,
            "time_limits": trials.time_limits,
            "injected": {key: executor.counts[key] for key in ("stragglers", "failed", "preempted")},
            "queue_wait": {"median_s": executor.faults.queue_wait_median_s, "sigma": executor.faults.queue_wait_sigma,
                           "jobs": len(executor.queue_waits), "total_s": sum(executor.queue_waits)},
            "driver_restarts": self.restarts_of_driver,
            "incumbent_trace": self.trace,
        }
        if pool is not None:
            result["pool"] = pool
        return result


def simulate(config_path: Union[str, Path], objective: ObjectiveSpec, root: Union[str, Path],
             name: Optional[str] = None, workers: int = 16, seed: Optional[int] = None, faults=None,
             searcher=None) -> Dict[str, Any]:
    """Create a simulated experiment under ``root`` and run it to the end; the result as a dict.
    ``seed`` replaces the config's experiment_seed and seeds the injected faults."""
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.core.rng import Rng

    function = load_objective(objective)
    checked = load_config(str(config_path))  # the objective is tried before anything is created
    require_length(checked)
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
