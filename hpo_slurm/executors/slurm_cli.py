"""Running Slurm's client commands (sbatch, squeue, sacct, scancel, scontrol, sacctmgr) with a time limit.

Arguments go to the command as a list, never through a shell."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, Optional, Sequence

from .base import SchedulerError
from .slurm_parse import parse_scontrol_config

COMMAND_TIMEOUT_S = 60


def run_slurm(args: Sequence[str], cwd: Optional[Path] = None) -> str:
    """Run a Slurm client command; its stdout. Raises OSError (no such command), CalledProcessError
    (non-zero exit, with stderr) or TimeoutExpired (the controller did not answer in time)."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                          cwd=str(cwd) if cwd else None)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, list(args), done.stdout, done.stderr)
    return done.stdout


def query_slurm(args: Sequence[str]) -> str:
    """``run_slurm`` for a query whose failure means "cannot tell": raises SchedulerError instead."""
    try:
        return run_slurm(args)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SchedulerError(f"{args[0]} failed: {_describe(exc)}") from exc


def cluster_config() -> Dict[str, str]:
    """``scontrol show config`` as key -> value; SchedulerError when the controller does not answer."""
    return parse_scontrol_config(query_slurm(["scontrol", "show", "config"]))


def has_accounting(cluster: Dict[str, str]) -> bool:
    """Whether sacct can answer for ended jobs on this cluster."""
    return cluster.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"


def scancel(job_ids: Sequence[str]) -> None:
    """One scancel for all the jobs (Slurm sends SIGTERM, then SIGKILL after KillWait). A non-zero exit
    means some jobs had already ended, and scancel still cancelled the others; a command that could not
    run or reach the controller raises SchedulerError, so the caller can try again."""
    if not job_ids:
        return
    try:
        run_slurm(["scancel", *job_ids])
    except subprocess.CalledProcessError:
        pass
    except (OSError, subprocess.SubprocessError) as exc:
        raise SchedulerError(f"scancel failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    stderr = getattr(exc, "stderr", None)
    return stderr.strip().splitlines()[-1] if isinstance(stderr, str) and stderr.strip() else str(exc)
