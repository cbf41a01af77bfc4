"""Running a driver for an experiment folder: lock, log file, restore, loop until done, and a full disk
waited out (``engine.disk_space``)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator, Optional, Tuple

from hpo_slurm.config.schema import ExperimentConfig, load_config
from hpo_slurm.engine.disk_space import DiskOutage, is_disk_full, wait_from_environment
from hpo_slurm.engine.driver import Driver
from hpo_slurm.engine.searcher_log import load_searcher
from hpo_slurm.executors import make_executor
from hpo_slurm.executors.base import Executor
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.experiment.lock import DriverLock
from hpo_slurm.experiment.store import Store

LOCAL_TICK_S = 0.25


class _DriverLogHandler(logging.FileHandler):
    """driver.log. A line that cannot be written because the disk is full stays in the file's buffer
    and goes out with the next line that can (nothing is lost, no traceback on the terminal); any
    other failure to write is reported as logging reports it."""

    def handleError(self, record: logging.LogRecord) -> None:
        if is_disk_full(sys.exc_info()[1] or Exception()):
            return
        super().handleError(record)


@contextlib.contextmanager
def _locked_and_logged(layout: ExperimentLayout, log_to_terminal: bool = True) -> Iterator[DriverLock]:
    """The experiment's driver lock (UserError when another driver holds it) and its log file."""
    lock = DriverLock(layout.lock)
    lock.acquire()
    handler = _DriverLogHandler(layout.driver_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("hpo_slurm")
    previous = package_logger.level, package_logger.propagate
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = log_to_terminal
    try:
        yield lock
    finally:
        lock.release()
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous[0])
        package_logger.propagate = previous[1]
        handler.close()


@contextlib.contextmanager
def driver_session(layout: ExperimentLayout, log_to_terminal: bool = True) -> Iterator[Tuple[DriverLock, Store]]:
    """The experiment's driver lock (UserError when another driver holds it), its log file and its
    database, for as long as the block runs. With ``log_to_terminal`` False, warnings go to
    driver.log only."""
    with _locked_and_logged(layout, log_to_terminal) as lock:
        store = Store.open(layout.database)
        try:
            yield lock, store
        finally:
            store.close()


class _TickBudget:
    """Ticks left to a driver (``max_ticks``), across the drivers one ``run_driver`` builds."""

    def __init__(self, most: Optional[int]):
        self.most = most
        self.done = 0

    def left(self) -> bool:
        return self.most is None or self.done < self.most


def run_driver(
    layout: ExperimentLayout,
    on_tick: Optional[Callable[[Driver], None]] = None,
    max_ticks: Optional[int] = None,
    disk_full_wait_s: Optional[float] = None,
) -> Driver:
    """Drive the experiment until its search is over (or ``max_ticks``). Raises UserError when another
    driver holds the experiment. The caller may interrupt with KeyboardInterrupt: jobs keep running
    and ``resume`` picks them up.

    When the disk under the experiment is full, the driver's unsaved decisions are dropped (its
    database rolls back to its last tick), it waits up to ``disk_full_wait_s`` seconds (default:
    ``disk_space.wait_from_environment()``) for room, saying so once in driver.log, and a new driver
    carries on from the database as ``resume`` would; ``disk_space.DiskFullError`` when no room came back."""
    wait_s = wait_from_environment() if disk_full_wait_s is None else disk_full_wait_s
    outage = DiskOutage(layout.dir, wait_s)
    budget = _TickBudget(max_ticks)
    with _locked_and_logged(layout) as lock:
        config = load_config(str(layout.config))
        executor: Optional[Executor] = None
        while True:
            try:
                store = Store.open(layout.database)
                try:
                    driver, executor = _start(layout, config, store, executor)
                    _drive(driver, lock, on_tick, budget)
                    return driver
                finally:
                    store.close()
            except Exception as exc:
                if not is_disk_full(exc, layout.dir):
                    raise
                outage.wait(exc)


def _start(layout: ExperimentLayout, config: ExperimentConfig, store: Store,
           executor: Optional[Executor]) -> Tuple[Driver, Executor]:
    """A driver restored from ``store`` and started (a new search, or reconciled with the jobs an earlier
    driver left), on ``executor`` when one was already made (it knows the jobs this process started)."""
    experiment = store.experiment()
    if experiment["executor"] == "array":  # a sweep's searcher runs uncapped (ExperimentConfig.uncapped)
        searcher, fresh = load_searcher(config.uncapped(), store)
    else:
        searcher, fresh = load_searcher(config, store)
    if executor is None:
        executor = make_executor(experiment["executor"], config, layout, f"hpo.{experiment['uid'][:8]}.")
    interval = LOCAL_TICK_S if executor.name == "local" else config.slurm.poll_interval_s
    driver = Driver(layout, config, store, executor, searcher, poll_interval_s=interval)
    driver.start(fresh=fresh)
    return driver, executor


def _drive(driver: Driver, lock: DriverLock, on_tick: Optional[Callable[[Driver], None]],
           budget: _TickBudget) -> None:
    """Tick ``driver`` until its search is over or the budget is spent, then snapshot its searcher;
    also when interrupted, unless by a full disk (the snapshot could not be written)."""
    local = driver.executor.name == "local"
    try:
        while not driver.done and budget.left():
            time.sleep(LOCAL_TICK_S if local else min(1.0, driver.poll_interval_s))
            driver.tick()
            lock.heartbeat(driver.executor.waiting_on())
            budget.done += 1
            if on_tick:
                on_tick(driver)
    except BaseException as exc:
        if not is_disk_full(exc, driver.layout.dir):
            driver.checkpoint_searcher()
        raise
    driver.checkpoint_searcher()
    if driver.done:
        driver.executor.finish()
