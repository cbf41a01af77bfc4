"""Benchmark 5: recovery and status latency.

* resume: a zero-cost adaptive_asha search (64 workers, 20k trials planned) is killed when it has
  10k trials (no searcher checkpoint: the events since the last snapshot must be replayed). Measured:
  from ``Store.open`` + ``load_searcher`` + ``Driver(...)`` + ``start(fresh=False)`` to the first new
  searcher decision (the first tick that feeds the searcher an event). The jobs keep running meanwhile,
  as Slurm's would. Shown beside it: Python start-up plus the imports ``hpo-slurm resume`` needs, which a
  real resume pays once more.
* status: as subprocesses (interpreter start included, output to a pipe) on a finished 100k-trial
  experiment: ``hpo-slurm status NAME --json`` (the summary, the default), ``status NAME --json
  --trials all`` (every trial with its runs) and ``status --json`` (the experiment list); beside them,
  Python start-up alone and a plain ``sqlite3`` fetch of every trials and runs row as floors. The
  load average is recorded before and after these timings (the machine may be shared).

    python benchmarks/recovery.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median, save, table, write_config  # noqa: E402

OBJECTIVE = "hpo_slurm.benchmarks.zero:objective"


def resume_once(trials: int, workers: int) -> dict:
    from hpo_slurm.engine.simulation import Simulation, create_experiment

    folder = Path(tempfile.mkdtemp(prefix="hpo-recovery-"))
    config = write_config("zero.yaml", folder / "zero.yaml", max_trials=2 * trials, max_concurrent_trials=workers)
    layout, _ = create_experiment(config, folder / "runs")
    simulation = Simulation(layout, OBJECTIVE, workers=workers)
    simulation.open_driver()
    while len(simulation.driver.trials) < trials:
        simulation.step()
    behind = simulation.driver._searcher_log.seq - simulation.driver._searcher_log.snapshot_seq
    seen = simulation.driver._searcher_log.seq
    simulation.crash()
    started = time.perf_counter()
    simulation.open_driver()  # Store.open, load_searcher (snapshot + replay), Driver(...), start(fresh=False)
    opened = time.perf_counter()
    while simulation.driver._event_seq == seen:
        simulation.step()
    decided = time.perf_counter()
    simulation.close()
    shutil.rmtree(folder, ignore_errors=True)
    return {"trials": len(simulation.driver.trials), "replayed_events": behind, "open_s": opened - started,
            "to_first_decision_s": decided - started}


def timed(command, repeats: int, sizes: Optional[list] = None) -> list:
    """Wall seconds of ``repeats`` runs of ``command``; the byte size of each stdout is appended to
    ``sizes`` when given."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:].decode(errors="replace"))
        if sizes is not None:
            sizes.append(len(done.stdout))
    return times


def build_finished(trials: int, workers: int, root: Path) -> Path:
    from hpo_slurm.engine.simulation import simulate

    config = write_config("zero.yaml", root / "zero.yaml", max_trials=trials, max_concurrent_trials=workers)
    result = simulate(config, OBJECTIVE, root / "runs", name="big", workers=workers)
    return Path(result["dir"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume-trials", type=int, default=10_000)
    parser.add_argument("--status-trials", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    resumes = []
    for repeat in range(args.repeats):
        resumes.append(resume_once(args.resume_trials, args.workers))
        print(f"resume {repeat + 1}: {resumes[-1]}", flush=True)
    imports = timed([sys.executable, "-c", "import hpo_slurm.cli, hpo_slurm.engine.session, hpo_slurm.engine.driver"], args.repeats)

    root = Path(tempfile.mkdtemp(prefix="hpo-status-"))
    started = time.perf_counter()
    experiment = build_finished(args.status_trials, args.workers, root)
    print(f"built a {args.status_trials:,}-trial experiment in {time.perf_counter() - started:.1f} s", flush=True)
    load_before = os.getloadavg()
    status_command = [sys.executable, "-m", "hpo_slurm.cli", "status", experiment.name, "--root", str(experiment.parent),
                      "--json"]
    summary_bytes, all_bytes = [], []
    status = timed(status_command, args.repeats, summary_bytes)
    status_all = timed(status_command + ["--trials", "all"], args.repeats, all_bytes)
    summary_only = timed([sys.executable, "-m", "hpo_slurm.cli", "status", "--root", str(experiment.parent),
                          "--json"], args.repeats)
    python_alone = timed([sys.executable, "-c", "pass"], args.repeats)
    floor = timed([sys.executable, "-c", f"import sqlite3; c = sqlite3.connect({str(experiment / 'experiment.db')!r}); "
                   "c.execute('SELECT * FROM trials').fetchall(); c.execute('SELECT * FROM runs').fetchall()"],
                  args.repeats)
    load_after = os.getloadavg()
    size = (experiment / "experiment.db").stat().st_size
    shutil.rmtree(root, ignore_errors=True)
    results = {
        "resume": {"runs": resumes, "to_first_decision_s": median(r["to_first_decision_s"] for r in resumes),
                   "open_s": median(r["open_s"] for r in resumes),
                   "replayed_events": median(r["replayed_events"] for r in resumes),
                   "python_and_imports_s": median(imports)},
        "status": {"trials": args.status_trials, "db_bytes": size, "status_name_json_s": median(status),
                   "status_name_json_runs": status, "status_name_json_bytes": summary_bytes[0],
                   "status_name_json_trials_all_s": median(status_all), "status_name_json_trials_all_runs": status_all,
                   "status_name_json_trials_all_bytes": all_bytes[0],
                   "status_list_json_s": median(summary_only), "status_list_json_runs": summary_only,
                   "python_start_s": median(python_alone), "raw_sqlite_read_s": median(floor),
                   "load_before": list(load_before), "load_after": list(load_after)},
    }
    print()
    print(table(["measure", "median s", "target s"], [
        [f"resume {args.resume_trials:,} trials -> first decision (in process)",
         results["resume"]["to_first_decision_s"], 2.0],
        ["  + python start and imports of hpo-slurm resume", results["resume"]["python_and_imports_s"], float("nan")],
        [f"hpo-slurm status NAME --json (summary), {args.status_trials:,} trials",
         results["status"]["status_name_json_s"], 0.5],
        [f"hpo-slurm status NAME --json --trials all, {args.status_trials:,} trials",
         results["status"]["status_name_json_trials_all_s"], float("nan")],
        [f"hpo-slurm status --json (list), {args.status_trials:,} trials", results["status"]["status_list_json_s"],
         0.5],
        ["python start alone", results["status"]["python_start_s"], float("nan")],
        ["python + plain sqlite3 read of all trials and runs", results["status"]["raw_sqlite_read_s"], float("nan")],
    ]))
    path = save("recovery", results)
    print(f"\nstatus JSON: {summary_bytes[0]:,} bytes (summary), {all_bytes[0]:,} bytes (--trials all); "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after the status timings")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
