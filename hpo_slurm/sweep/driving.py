"""A sweep has no resident driver: ``sweep``, ``status`` and ``sweep --resubmit`` each run one for a
tick or two (``driving``), under the experiment's driver lock."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Iterator

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
    runs = [run for run in store.runs() if run["job_id"]]
    resolved = executor.resolve_all(run["job_id"] for run in runs)
    now = time.time()  # its array just went out
    changes = [(run["id"], {"job_id": resolved[run["job_id"]], "submitted_at": now})
               for run in runs if resolved.get(run["job_id"])]
    if changes:
        with store.transaction():
            store.update_runs(changes)
