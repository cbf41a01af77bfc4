"""A sweep has no resident driver: ``sweep``, ``status`` and ``sweep --resubmit`` each run one for a
tick or two (``driving``), under the experiment's driver lock."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator

from hpo_slurm.core.layout import ExperimentLayout

if TYPE_CHECKING:  # pragma: no cover
    from hpo_slurm.executors.array.executor import ArrayExecutor
    from hpo_slurm.experiment.store import Store


@contextlib.contextmanager
def driving(layout: ExperimentLayout, executor: ArrayExecutor, submit: bool) -> Iterator[Any]:
    """A driver for one or two ticks: the experiment's lock (UserError when held), its log file (not
    the terminal of `status`), the searcher as the last driver left it (with the sweep's uncapped
    config). ``submit``: whether its ticks submit runs waiting for a job. The searcher's state is
    saved when the block ends without an exception."""
    from hpo_slurm.engine.driver import Driver
    from hpo_slurm.engine.searcher_log import load_searcher
    from hpo_slurm.engine.session import driver_session

    with driver_session(layout, log_to_terminal=False) as (_, store):
        config = executor.config
        bind_placeholders(store, executor)
        searcher, _ = load_searcher(config.uncapped(), store)
        driver = Driver(layout, config, store, executor, searcher, poll_interval_s=0.0, submit=submit)
        yield driver
        driver.checkpoint_searcher()


def bind_placeholders(store: Store, executor: ArrayExecutor) -> None:
    """Runs of a wave were bound to ``array-<n>_<task>`` before their array went out; once it has,
    record the real job id (the caller holds the driver lock: it is the only writer)."""
    from hpo_slurm.executors.array.waves import parse_placeholder

    changes: Dict[str, str] = {}
    for run in store.runs():
        if run["job_id"] and parse_placeholder(run["job_id"]) is not None:
            real = executor.resolve(run["job_id"])
            if real:
                changes[run["id"]] = real
    if changes:
        with store.transaction():
            for run_id, job_id in changes.items():
                store.update_run(run_id, job_id=job_id, submitted_at=time.time())  # its array just went out
