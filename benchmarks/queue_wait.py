"""Benchmark 10: what the wait in a busy cluster's queue costs a search that submits one job per run.

Simulated (``hpo-slurm simulate``'s engine): adaptive_asha on multi-fidelity Hartmann-6
(``benchmarks/configs/hartmann6.yaml``: 256 trials, rungs up to 100 units of 36 s, so a full trial is
an hour; 32 concurrent trials on 32 workers), with every job waiting in the scheduler's queue for a
lognormal time of median ``--median`` minutes (sigma 1) before it may take a worker, against the same
search with no wait, over ``--seeds`` seeds. Every trial's first run and every rung continuation is
a job of its own, so the search pays the wait again at each promotion. Printed: the makespan (hours),
the GPU-hours spent (waiting costs none), and how much longer the search takes.

    python benchmarks/queue_wait.py                     # 20-minute median wait, 5 seeds
    python benchmarks/queue_wait.py --median 60 --seeds 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median, save, table, write_config  # noqa: E402

from hpo_slurm.engine.simulation import simulate  # noqa: E402
from hpo_slurm.executors.simulated_world import Faults  # noqa: E402

OBJECTIVE = "hpo_slurm.benchmarks.hartmann:good"
WORKERS = 32


def spread(values: List[float]) -> str:
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--median", type=float, default=20.0, help="median queue wait, minutes")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hpo-queue-wait-"))
    runs: List[Dict[str, Any]] = []
    try:
        for seed in range(1, args.seeds + 1):
            config = write_config("hartmann6.yaml", folder / f"seed-{seed}.yaml", seed=seed)
            for wait_min in (0.0, args.median):
                result = simulate(config, OBJECTIVE, folder / "runs", name=f"s{seed}-w{wait_min:g}", workers=WORKERS,
                                  seed=seed, faults=Faults(queue_wait_median_s=60 * wait_min))
                runs.append({"seed": seed, "queue_wait_min": wait_min, "makespan_h": result["makespan_seconds"] / 3600,
                             "gpu_hours": result["compute_seconds"] / 3600, "runs": result["runs"],
                             "waited_h": result["queue_wait"]["total_s"] / 3600,
                             "best": result["best"]["metric"] if result["best"] else None})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for wait_min in (0.0, args.median):
        mine = [r for r in runs if r["queue_wait_min"] == wait_min]
        rows.append([f"{wait_min:g} min", spread([r["makespan_h"] for r in mine]), spread([r["gpu_hours"] for r in mine]),
                     f"{median(r['runs'] for r in mine):.0f}", spread([r["waited_h"] for r in mine])])
    slower = [w["makespan_h"] / n["makespan_h"] for n, w in zip(runs[0::2], runs[1::2])]
    print(table(["median queue wait", "makespan h: median (min-max)", "GPU-hours", "jobs", "hours jobs waited"], rows))
    print(f"with a {args.median:g}-minute wait the search takes {spread(slower)} times as long")
    print(f"saved {save('queue-wait', {'median_min': args.median, 'seeds': args.seeds, 'runs': runs})}")


if __name__ == "__main__":
    main()
