"""The local Slurm cluster for the benchmarks that run on it: switching its shape, waiting for it, and
counting the Slurm commands a process runs through a PATH shim.

The shim (``install_shims``) stands in for ``sbatch``, ``sacct``, ``squeue``, ``sinfo``, ``scontrol`` and
``scancel``: each runs the real command from /usr/bin, then logs its name, exit status and CPU (its own
shell's included) to ``$HPO_BENCH_SLURM_LOG``; inside a job, or with no log set, it only execs the
real command. ``read_shim_log`` reads that log back.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO / "scripts" / "local-slurm.sh"
SHIMMED = ("sbatch", "sacct", "squeue", "sinfo", "scontrol", "scancel")
LOG_ENV = "HPO_BENCH_SLURM_LOG"

SHIM = '''#!/bin/bash
# benchmarks/slurm_shim.py: run a Slurm command of the driver, then log its name, exit status and CPU
# (`times`: this shell's user and system time, then its children's, i.e. the real command's)
name=${0##*/}
real=/usr/bin/$name
if [ -n "${SLURM_JOB_ID:-}" ] || [ -z "${HPO_BENCH_SLURM_LOG:-}" ]; then exec "$real" "$@"; fi
"$real" "$@"
rc=$?
times > "$HPO_BENCH_SLURM_LOG.times.$$"  # a builtin: no process of its own
{ read -r su ss; read -r cu cs; } < "$HPO_BENCH_SLURM_LOG.times.$$"
rm -f "$HPO_BENCH_SLURM_LOG.times.$$"
echo "$name $rc $su $ss $cu $cs ${1:-}" >> "$HPO_BENCH_SLURM_LOG"
exit $rc
'''


def cluster(*options: str) -> None:
    subprocess.run(["bash", str(CLUSTER_SCRIPT), "up", *options], check=True, capture_output=True, timeout=600)


def slurm_text(*args: str) -> str:
    """The output of Slurm command ``args``; RuntimeError with its error text when it fails."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def wait_idle(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while slurm_text("squeue", "-h").strip():
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster still has jobs:\n" + slurm_text("squeue"))
        time.sleep(1)


def install_shims(folder: Path) -> Path:
    """Write the shim under every name in SHIMMED into ``folder`` (made); returns it, to go first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHIMMED:
        (folder / name).write_text(SHIM)
        (folder / name).chmod(0o755)
    return folder


def read_shim_log(path: Path) -> List[Dict[str, Any]]:
    def seconds(text: str) -> float:  # bash `times`: 0m0.006s
        minutes, rest = text.rstrip("s").split("m")
        return 60 * float(minutes) + float(rest)

    calls = []
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split(" ", 6)
        try:
            cpu = sum(seconds(x) for x in parts[2:6])
        except (ValueError, IndexError):
            continue
        calls.append({"command": parts[0], "rc": int(parts[1]), "cpu_s": cpu,
                      "arg": parts[6] if len(parts) > 6 else ""})
    return calls
