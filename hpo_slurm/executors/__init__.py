"""Where runs execute: ``local`` processes (the embedded default) or ``slurm`` jobs."""

from __future__ import annotations

import shutil

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.executors.base import Executor

EXECUTOR_CHOICES = ("auto", "local", "slurm")


def resolve_executor_name(choice: str) -> str:
    """``auto`` means slurm when ``sbatch`` is on PATH, else local processes."""
    if choice != "auto":
        return choice
    return "slurm" if shutil.which("sbatch") else "local"


def make_executor(name: str, config: ExperimentConfig, layout: ExperimentLayout, job_prefix: str) -> Executor:
    """The executor ``name`` for the experiment in ``layout``; with ``slurm.pool`` in the config, a pool
    of worker jobs in front of it (``executors.pool``), whose job names start with ``job_prefix`` (the
    experiment's own, unique on the cluster: its workers are looked up by name after a crash)."""
    host = _executor(name, config, layout)
    if name in ("local", "slurm") and config.slurm.pool is not None:
        from hpo_slurm.executors.pool.executor import PoolExecutor

        return PoolExecutor(host, config, layout, job_prefix)
    return host


def _executor(name: str, config: ExperimentConfig, layout: ExperimentLayout) -> Executor:
    if name == "local":
        from hpo_slurm.executors.local import LocalExecutor

        return LocalExecutor(signal_delay_s=config.slurm.signal_delay_s)
    if name == "slurm":
        from hpo_slurm.executors.slurm.executor import SlurmExecutor

        return SlurmExecutor(config, layout.dir)
    if name == "array":  # a sweep's (hpo-slurm sweep); resume and stop drive it like any other
        from hpo_slurm.executors.array.executor import ArrayExecutor

        return ArrayExecutor(config, layout.dir)
    raise UserError(f"unknown executor {name!r}: expected one of {', '.join(EXECUTOR_CHOICES)}")

