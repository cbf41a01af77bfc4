"""Benchmark 12: a pool of worker jobs (``slurm.pool``) against one job per run, on a busy cluster's queue.

Simulated (``hpo-slurm simulate``'s engine): adaptive_asha on multi-fidelity Hartmann-6
(``benchmarks/configs/hartmann6.yaml``: 256 trials, a full trial an hour, 32 concurrent trials on 32
workers), every job waiting in the scheduler's queue for a lognormal time of median ``--median``
minutes (sigma 1), over ``--seeds`` seeds. One job per run pays that wait at every trial's first run
and every rung continuation; the pool's workers (32, each sized for one trial) pay it once each when
they are submitted and then run the ready runs one after another. A worker idle for the idle timeout
ends; one at its time limit stops its run, which resumes on another worker. GPU-hours: one job per
run, the runs' time; the pool, every worker's life from start to end, idle time included.

Printed: makespan hours and GPU-hours, medians (min-max) over seeds, and the pool/one-job-per-run
ratios seed by seed; the targets (makespan <= 0.5x, GPU-hours <= 1.1x) as PASS/FAIL; then where a
pool loses: no queue wait, a 1-minute queue, a small search (16 trials on 4 workers); and how the
GPU-hours depend on the idle timeout.

    python benchmarks/pool.py                   # 5 seeds, 20-minute median wait (about a minute)
    python benchmarks/pool.py --seeds 10 --median 60
    python benchmarks/pool.py --quick           # a smoke run: 2 seeds, 64 trials
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median, save, table, write_config  # noqa: E402

from hpo_slurm.config.pool_section import DEFAULT_IDLE_TIMEOUT_S  # noqa: E402
from hpo_slurm.engine.simulation import simulate  # noqa: E402
from hpo_slurm.executors.simulated_world import Faults  # noqa: E402

OBJECTIVE = "hpo_slurm.benchmarks.hartmann:good"
SIGMA = 1.0
MAKESPAN_TARGET = 0.5
GPU_TARGET = 1.1


def spread(values: List[float]) -> str:
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def config(folder: Path, name: str, seed: int, pool: Optional[Dict[str, Any]], **searcher: Any) -> Path:
    """hartmann6.yaml with ``searcher`` fields replaced and ``slurm.pool: pool`` (None: no pool)."""
    path = write_config("hartmann6.yaml", folder / f"{name}.yaml", seed=seed, **searcher)
    if pool is not None:
        data = yaml.safe_load(path.read_text())
        data["slurm"] = {"pool": pool}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one(folder: Path, scenario: str, seed: int, mode: str, workers: int, wait_min: float,
        pool: Optional[Dict[str, Any]], searcher: Dict[str, Any]) -> Dict[str, Any]:
    """One simulated search; the figures the tables need."""
    name = f"{scenario}-s{seed}-{mode}"
    path = config(folder, name, seed, pool, **searcher)
    result = simulate(path, OBJECTIVE, folder / "runs", name=name, workers=workers, seed=seed,
                      faults=Faults(queue_wait_median_s=60 * wait_min, queue_wait_sigma=SIGMA))
    if result["state"] != "COMPLETED":
        raise RuntimeError(f"{name}: the search ended {result['state']}")
    row = {"scenario": scenario, "seed": seed, "mode": mode, "queue_wait_min": wait_min,
           "makespan_h": result["makespan_seconds"] / 3600, "gpu_hours": result["compute_seconds"] / 3600,
           "runs": result["runs"], "jobs_waited": result["queue_wait"]["jobs"],
           "waited_h": result["queue_wait"]["total_s"] / 3600, "time_limits": result["time_limits"],
           "best": result["best"]["metric"] if result["best"] else None}
    if "pool" in result:
        figures = result["pool"]
        row.update(idle_hours=figures["idle_seconds"] / 3600, busy_hours=figures["busy_seconds"] / 3600,
                   workers_started=figures["workers_started"], ended_by=figures["ended_by"])
    return row


def compare(folder: Path, scenario: str, seeds: List[int], workers: int, wait_min: float, pool: Dict[str, Any],
            searcher: Dict[str, Any], runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One job per run and the pool on the same seeds; appends every search to ``runs``; the ratios."""
    per_run = [one(folder, scenario, s, "per-run", workers, wait_min, None, searcher) for s in seeds]
    pooled = [one(folder, scenario, s, "pool", workers, wait_min, pool, searcher) for s in seeds]
    runs.extend(per_run + pooled)
    return {"scenario": scenario, "per_run": per_run, "pool": pooled,
            "makespan_ratio": [p["makespan_h"] / r["makespan_h"] for r, p in zip(per_run, pooled)],
            "gpu_ratio": [p["gpu_hours"] / r["gpu_hours"] for r, p in zip(per_run, pooled)]}


def rows_of(label: str, done: Dict[str, Any]) -> List[List[str]]:
    per_run, pooled = done["per_run"], done["pool"]
    return [[label, "one job per run", spread([r["makespan_h"] for r in per_run]),
             spread([r["gpu_hours"] for r in per_run]), "-", f"{median(r['jobs_waited'] for r in per_run):.0f}",
             "", ""],
            [label, "pool", spread([r["makespan_h"] for r in pooled]), spread([r["gpu_hours"] for r in pooled]),
             spread([r["idle_hours"] for r in pooled]), f"{median(r['jobs_waited'] for r in pooled):.0f}",
             spread(done["makespan_ratio"]), spread(done["gpu_ratio"])]]


HEADERS = ["search", "jobs", "makespan h", "GPU-hours", "idle GPU-hours", "jobs waited", "makespan pool/per-run",
           "GPU-hours pool/per-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--median", type=float, default=20.0, help="median queue wait, minutes (sigma 1)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=32, help="the cluster's and the pool's workers")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S / 60,
                        help="the pool's idle timeout, minutes (default: slurm.pool's)")
    parser.add_argument("--time", type=float, default=4.0, help="each worker job's time limit, hours")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds, 64 trials")
    args = parser.parse_args()
    seeds = list(range(1, (2 if args.quick else args.seeds) + 1))
    trials = 64 if args.quick else 256
    main_search = {"max_trials": trials, "max_concurrent_trials": args.workers}
    small_search = {"max_trials": 16, "max_concurrent_trials": 4}

    def pool_of(workers: int, idle_min: float = args.idle_timeout) -> Dict[str, Any]:
        return {"workers": workers, "idle_timeout": f"{idle_min:g}m", "time": int(round(args.time * 60))}

    print(f"adaptive_asha on Hartmann-6, {trials} trials, {args.workers} at once on {args.workers} workers; "
          f"queue wait lognormal, median {args.median:g} min, sigma {SIGMA:g}; seeds {seeds[0]}-{seeds[-1]}")
    print(f"pool: {args.workers} workers, idle_timeout {args.idle_timeout:g} min, time limit {args.time:g} h "
          f"(each worker waits in the queue once; its whole life counts as GPU time)")
    folder = Path(tempfile.mkdtemp(prefix="hpo-pool-"))
    runs: List[Dict[str, Any]] = []
    try:
        main_done = compare(folder, "main", seeds, args.workers, args.median, pool_of(args.workers), main_search, runs)
        losses = [
            ("no queue wait", compare(folder, "no-wait", seeds, args.workers, 0.0, pool_of(args.workers),
                                      main_search, runs)),
            ("1-min queue", compare(folder, "short-queue", seeds, args.workers, 1.0, pool_of(args.workers),
                                    main_search, runs)),
            (f"16 trials, 4 workers, {args.median:g}-min queue",
             compare(folder, "small", seeds, 4, args.median, pool_of(4), small_search, runs)),
        ]
        sweep = []
        for idle_min in ([10.0] if args.quick else [10.0, 5.0, 1.0]):
            pooled = [one(folder, f"idle-{idle_min:g}", s, "pool", args.workers, args.median,
                          pool_of(args.workers, idle_min), main_search) for s in seeds]
            runs.extend(pooled)
            sweep.append((idle_min, pooled))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    makespan_ratio, gpu_ratio = median(main_done["makespan_ratio"]), median(main_done["gpu_ratio"])
    print()
    print(table(HEADERS, rows_of(f"{args.median:g}-min queue", main_done)))
    verdicts = {"makespan": makespan_ratio <= MAKESPAN_TARGET, "gpu_hours": gpu_ratio <= GPU_TARGET}
    print(f"target makespan <= {MAKESPAN_TARGET}x one job per run: {makespan_ratio:.2f}x "
          f"{'PASS' if verdicts['makespan'] else 'FAIL'}")
    print(f"target GPU-hours <= {GPU_TARGET}x one job per run:  {gpu_ratio:.2f}x "
          f"{'PASS' if verdicts['gpu_hours'] else 'FAIL'}")
    pooled = main_done["pool"]
    idle_timeouts = [r["ended_by"]["idle_timeout"] for r in pooled]
    print(f"the pool's idle time: {spread([r['idle_hours'] for r in pooled])} GPU-hours, of which "
          f"{median(idle_timeouts) * args.idle_timeout / 60:.2f} are the {median(idle_timeouts):.0f} workers "
          f"(median) that each idled the full {args.idle_timeout:g} minutes before ending, once the search's "
          "tail left fewer runs than workers")

    print("\nwhere a pool loses (same pool settings):")
    print(table(HEADERS, [row for label, done in losses for row in rows_of(label, done)]))

    print(f"\nthe idle timeout's price ({args.median:g}-min queue; GPU-hours against the same one-job-per-run "
          "searches):")
    per_run = main_done["per_run"]
    sweep_rows = [[f"{args.idle_timeout:g} min", spread([r["makespan_h"] for r in pooled]),
                   spread([r["idle_hours"] for r in pooled]), spread(main_done["gpu_ratio"])]]
    for idle_min, rows in sweep:
        sweep_rows.append([f"{idle_min:g} min", spread([r["makespan_h"] for r in rows]),
                           spread([r["idle_hours"] for r in rows]),
                           spread([p["gpu_hours"] / r["gpu_hours"] for r, p in zip(per_run, rows)])])
    print(table(["idle timeout", "makespan h", "idle GPU-hours", "GPU-hours pool/per-run"], sweep_rows))

    if args.quick:
        print("(--quick: results not saved)")
        return
    summary = {"makespan_ratio": main_done["makespan_ratio"], "gpu_ratio": main_done["gpu_ratio"],
               "verdicts": verdicts,
               "losses": {label: {"makespan_ratio": done["makespan_ratio"], "gpu_ratio": done["gpu_ratio"]}
                          for label, done in losses}}
    saved = save("pool", {"command": " ".join(["python", "benchmarks/pool.py", *sys.argv[1:]]),
                          "median_min": args.median, "sigma": SIGMA, "seeds": seeds, "trials": trials,
                          "workers": args.workers, "idle_timeout_min": args.idle_timeout, "time_h": args.time,
                          "summary": summary, "runs": runs})
    print(f"saved {saved}")


if __name__ == "__main__":
    main()
