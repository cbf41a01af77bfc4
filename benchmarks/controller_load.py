"""Benchmark 9: what one driver poll costs the Slurm controller and the accounting database, at scale.

On the real local Slurm cluster (switched to one node of ``--running`` + 8 CPUs for the measurement and
back to the default cluster afterwards, also after a failure or Ctrl-C): one held array of ``--queued``
tasks (``sbatch --hold``) and one array of ``--running`` tasks that run (``sleep``). The driver's poll of
all those jobs, ``SlurmExecutor.poll`` (what every driver tick calls, once, for every live run), runs
``--polls`` times a second apart, each measured by

* the Slurm commands it ran, counted by a PATH shim (``benchmarks/slurm_shim.py``): sacct, squeue, ...;
* the controller's RPCs it caused, from ``sdiag``'s counts by message type (reset with ``sdiag -r``
  before each poll; sdiag's own request, REQUEST_STATS_INFO, is left out);
* its wall time, and whether it saw every job in its true state (``--queued`` PENDING, ``--running``
  RUNNING).

Twice: as on a cluster with accounting (one sacct call for every job, then squeue only for the jobs
sacct does not list), and as on one without (``accounting`` off: squeue alone; the path a cluster with
``AccountingStorageType=none`` takes, tested for real in tests/test_slurm_no_accounting.py).

    python benchmarks/controller_load.py                      # 1,000 queued, 200 running, 10 polls
    python benchmarks/controller_load.py --queued 1000 --running 200 --polls 10
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median, save, table  # noqa: E402
from slurm_shim import LOG_ENV, REPO, cluster, install_shims, read_shim_log, slurm_text, wait_idle  # noqa: E402

RPC_LINE = re.compile(r"^\s+(\w+)\s+\(\s*\d+\)\s+count:(\d+)")
OWN_RPC = "REQUEST_STATS_INFO"  # sdiag's own request


def controller_rpcs() -> Counter:
    """sdiag's RPC counts by message type since its last reset (sdiag's own request left out)."""
    counts: Counter = Counter()
    section = False
    for line in slurm_text("sdiag").splitlines():
        if line.startswith("Remote Procedure Call statistics by message type"):
            section = True
            continue
        if section and line.startswith("Remote Procedure Call statistics by user"):
            break
        match = RPC_LINE.match(line) if section else None
        if match and match.group(1) != OWN_RPC:
            counts[match.group(1)] += int(match.group(2))
    return counts


def submit_arrays(queued: int, running: int, arrays: List[str]) -> Dict[str, List[str]]:
    """The held array and the running one (their ids appended to ``arrays`` as soon as they exist);
    returns their task ids by the state they are in once every task of the second one runs."""
    common = ["--mem=10M", "-c", "1", "-o", "/dev/null", "-p", "debug"]
    held = slurm_text("sbatch", "--parsable", "--hold", f"--array=0-{queued - 1}", "-J", "bench-held", *common,
                      "--wrap", "sleep 600").strip()
    arrays.append(held)
    busy = slurm_text("sbatch", "--parsable", f"--array=0-{running - 1}", "-J", "bench-running", *common,
                      "--wrap", "sleep 900").strip()
    arrays.append(busy)
    deadline = time.monotonic() + 600
    while slurm_text("squeue", "-h", "-r", "-t", "RUNNING", "-n", "bench-running", "-o", "%i").count("\n") < running:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{running} tasks did not all start:\n" + slurm_text("squeue", "-t", "PD", "-n", "bench-running"))
        time.sleep(2)
    return {"PENDING": [f"{held}_{i}" for i in range(queued)], "RUNNING": [f"{busy}_{i}" for i in range(running)]}


def measure(executor: Any, jobs: Dict[str, List[str]], polls: int, log: Path) -> Dict[str, Any]:
    """``polls`` polls of every job by ``executor``: per poll, the commands run, the controller RPCs and
    the wall time; and whether every job came back in its true state."""
    job_ids = [j for ids in jobs.values() for j in ids]
    records = []
    for _ in range(polls):
        log.unlink(missing_ok=True)
        slurm_text("sdiag", "-r")
        started = time.perf_counter()
        statuses = executor.poll(job_ids)
        wall = time.perf_counter() - started
        rpcs = controller_rpcs()
        commands = Counter(call["command"] for call in read_shim_log(log))
        right = all(statuses[j].state.value == state for state, ids in jobs.items() for j in ids)
        records.append({"wall_s": wall, "commands": dict(commands), "rpcs": dict(rpcs),
                        "rpc_total": sum(rpcs.values()), "all_states_right": right})
        time.sleep(1)
    return {
        "polls": records,
        "median_wall_s": median(r["wall_s"] for r in records),
        "median_rpcs": median(r["rpc_total"] for r in records),
        "max_sacct_calls": max(r["commands"].get("sacct", 0) for r in records),
        "max_squeue_calls": max(r["commands"].get("squeue", 0) for r in records),
        "all_states_right": all(r["all_states_right"] for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--running", type=int, default=200)
    parser.add_argument("--polls", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("controller_load.py: run as root (it reconfigures the local Slurm cluster)")
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.executors.slurm.executor import SlurmExecutor

    folder = Path(tempfile.mkdtemp(prefix="hpo-controller-load-"))
    log = folder / "slurm-commands.log"
    os.environ["PATH"] = f"{install_shims(folder / 'shim')}:{os.environ.get('PATH', '/usr/bin')}"
    os.environ[LOG_ENV] = str(log)
    results: Dict[str, Any] = {"queued": args.queued, "running": args.running}
    arrays: List[str] = []
    try:
        wait_idle()
        cluster("--cpus", str(args.running + 8), "--mem", str(max(16000, 20 * args.running)))
        jobs = submit_arrays(args.queued, args.running, arrays)
        executor = SlurmExecutor(load_config(str(REPO / "examples" / "quadratic" / "random.yaml")), folder / "exp")
        assert executor.accounting, "the cluster keeps accounting: sacct answers"
        results["with_accounting"] = measure(executor, jobs, args.polls, log)
        executor.accounting = False
        results["without_accounting"] = measure(executor, jobs, args.polls, log)
    finally:
        if arrays:
            subprocess.run(["scancel", *arrays], capture_output=True)
        wait_idle(timeout=300)
        cluster()
    rows = []
    for mode in ("with_accounting", "without_accounting"):
        found = results[mode]
        rpcs: Counter = Counter()
        for record in found["polls"]:
            rpcs.update(record["rpcs"])
        rows.append([mode.replace("_", " "), f"{args.queued + args.running:,}", found["max_sacct_calls"],
                     found["max_squeue_calls"], f"{found['median_rpcs']:.0f}",
                     ", ".join(f"{name} {count / args.polls:g}" for name, count in rpcs.most_common()),
                     f"{found['median_wall_s'] * 1000:.0f}", found["all_states_right"]])
    print(table(["cluster", "jobs polled", "sacct calls/poll (max)", "squeue calls/poll (max)",
                 "controller RPCs/poll (median)", "RPCs by type (mean/poll)", "poll ms (median)",
                 "every state right"], rows))
    print(f"saved {save('controller-load', results)}")


if __name__ == "__main__":
    main()
