"""Access to the real local Slurm cluster started by scripts/local-slurm.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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
