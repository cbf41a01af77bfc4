"""Running a driver for an experiment folder: lock, log file, restore, loop until done."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator, Optional, Tuple

from hpo_slurm.config.schema import load_config
from hpo_slurm.engine.driver import Driver
from hpo_slurm.engine.searcher_log import load_searcher
from hpo_slurm.executors import make_executor
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.experiment.lock import DriverLock
from hpo_slurm.experiment.store import Store

LOCAL_TICK_S = 0.25


@contextlib.contextmanager
def driver_session(layout: ExperimentLayout, log_to_terminal: bool = True) -> Iterator[Tuple[DriverLock, Store]]:
    """The experiment's driver lock (UserError when another driver holds it), its log file and its
    database, for as long as the block runs. With ``log_to_terminal`` False, warnings go to
    driver.log only."""
    lock = DriverLock(layout.lock)
    lock.acquire()
    handler = logging.FileHandler(layout.driver_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("hpo_slurm")
    previous = package_logger.level, package_logger.propagate
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = log_to_terminal
    store = Store.open(layout.database)
    try:
        yield lock, store
    finally:
        store.close()
        lock.release()
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous[0])
        package_logger.propagate = previous[1]
        handler.close()


def run_driver(
    layout: ExperimentLayout,
    on_tick: Optional[Callable[[Driver], None]] = None,
    max_ticks: Optional[int] = None,
) -> Driver:
    """Drive the experiment until its search is over (or ``max_ticks``). Raises UserError when another
    driver holds the experiment. The caller may interrupt with KeyboardInterrupt: jobs keep running
    and ``resume`` picks them up."""
    with driver_session(layout) as (lock, store):
        config = load_config(str(layout.config))
        experiment = store.experiment()
        if experiment["executor"] == "array":  # a sweep's searcher runs uncapped (ExperimentConfig.uncapped)
            searcher, fresh = load_searcher(config.uncapped(), store)
        else:
            searcher, fresh = load_searcher(config, store)
        executor = make_executor(experiment["executor"], config, layout)
        interval = LOCAL_TICK_S if executor.name == "local" else config.slurm.poll_interval_s
        driver = Driver(layout, config, store, executor, searcher, poll_interval_s=interval)
        driver.start(fresh=fresh)
        ticks = 0
        try:
            while not driver.done and (max_ticks is None or ticks < max_ticks):
                time.sleep(LOCAL_TICK_S if executor.name == "local" else min(1.0, interval))
                driver.tick()
                lock.heartbeat()
                ticks += 1
                if on_tick:
                    on_tick(driver)
        finally:
            driver.checkpoint_searcher()
        return driver
