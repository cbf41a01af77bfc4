"""Access to the real local Slurm cluster started by scripts/local-slurm.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "local-slurm.sh"


def cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and bool(done.stdout.strip())


def require_cluster() -> None:
    """Skip without a cluster, unless HPO_SLURM_REQUIRE_CLUSTER=1 (CI), where it is a failure."""
    if cluster_up():
        return
    message = "no local Slurm cluster: run `scripts/local-slurm.sh up` as root"
    if os.environ.get("HPO_SLURM_REQUIRE_CLUSTER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def slurm(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def reconfigure(*options: str) -> None:
    """Bring the cluster up with other settings (and wait until it answers)."""
    subprocess.run(["bash", str(SCRIPT), "up", *options], check=True, capture_output=True, timeout=300)


def node_names() -> List[str]:
    """The node names, as ``sinfo -N`` lists them: ``["node1", "node2"]`` or ``[hostname]``."""
    names: List[str] = []
    for name in slurm("sinfo", "-h", "-N", "-o", "%N").split():
        if name not in names:  # one row per node and partition
            names.append(name)
    return names


@contextmanager
def multi_node_cluster(nodes: int = 2, gpus: int = 2) -> Iterator[List[str]]:
    """Run the body on a ``nodes``-node cluster, ``gpus`` fake GPUs per node; yields the node names.

    All nodes run on this machine (one slurmd each) at 127.0.0.1: their names (node1..nodeK) do not
    resolve, so jobs must use 127.0.0.1 or ``hostname`` as a node's address. On exit, even after a
    failure, the default one-node cluster is restored; jobs still on the multi-node cluster then are
    requeued or fail (their processes are killed), so the body should wait for its jobs to end.
    """
    reconfigure("--nodes", str(nodes), "--gpus", str(gpus))
    try:
        yield node_names()
    finally:
        reconfigure()


def sacct_rows(name_prefix: str) -> List[List[str]]:
    """JobID, JobName, State of every allocation whose name starts with ``name_prefix``."""
    text = slurm("sacct", "-n", "-P", "-X", "-S", "now-1days", "-o", "JobID,JobName,State")
    return [row.split("|") for row in text.splitlines() if row.split("|")[1].startswith(name_prefix)]


def wait_until_idle(timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not slurm("squeue", "-h").strip():
            return
        time.sleep(1)
    raise AssertionError("the cluster still has jobs: " + slurm("squeue"))


def stop_daemon(name: str) -> None:
    """Stop one daemon of the cluster (``munged``, ``slurmdbd``, ``slurmctld``, ``slurmd-nodeN``); the
    others stay up. ``reconfigure`` (with the cluster's options) starts it again."""
    subprocess.run(["bash", str(SCRIPT), "stop", name], check=True, capture_output=True, timeout=120)


def crash_node(node: str) -> None:
    """The node dies as if it lost power: its slurmd and its jobs' processes are SIGKILLed."""
    subprocess.run(["bash", str(SCRIPT), "crash-node", node], check=True, capture_output=True, timeout=120)


def node_state(node: str) -> str:
    """scontrol's state of ``node``, lowercase: ``idle``, ``mixed+not_responding``,
    ``down+completing+not_responding``, ... (sinfo shows a DOWN node that still holds its jobs'
    remains as ``mixed*``)."""
    fields = slurm("scontrol", "show", "node", node, "-o").split()
    return next(f.split("=", 1)[1] for f in fields if f.startswith("State=")).lower()
