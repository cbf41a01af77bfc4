"""Benchmark 1: driver throughput on the zero-cost objective, beside Optuna on SQLite.

hpo-slurm: adaptive_asha (standard mode, divisor 4, 256 units: rungs at 1, 4, 16, 64, 256) through the
full driver and store (experiment.db in WAL mode) on the simulated cluster, ``--workers`` workers and
``max_concurrent_trials`` equal to it. Optuna: the same search space and rung lengths, ``RandomSampler``
(the cheapest sampler, so Optuna is not slowed by TPE), ``SuccessiveHalvingPruner(min_resource=1,
reduction_factor=4)``, ``RDBStorage`` on a SQLite file, driven by ask/tell in one process: each trial
reports at every rung length and asks ``should_prune()``.

Measured per run, each in a fresh interpreter:
* trials per second (wall clock, from the driver's start to the end of the search);
* driver CPU seconds per 1,000 events (events = rows of the experiment's event log);
* last/first: each tick's wall time is shared among the events it logged, each event's share goes to
  its trial; the summed cost of the last 10% of trials (by id, i.e. creation order) over that of the
  first 10%. Also shown: the same ratio by creation time (time from the creation of trial 0.9n to the
  end, over the time to create the first 0.1n), which also counts the close-out of every paused trial
  that adaptive_asha does at the end.

    python benchmarks/throughput.py                       # 1k, 10k, 100k; 3 runs each
    python benchmarks/throughput.py --sizes 1000 --repeats 1
    python benchmarks/throughput.py --sampler tpe         # model-based sampling, beside Optuna's TPESampler
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median, run_child, save, table, write_config  # noqa: E402

RUNG_LENGTHS = (1, 4, 16, 64, 256)
OPTUNA_LIMIT = 10_000  # larger Optuna runs take too long on this machine: extrapolated instead


def run_ours(trials: int, workers: int, sampler: str = "random") -> dict:
    from hpo_slurm.engine.simulation import Simulation, create_experiment

    folder = Path(tempfile.mkdtemp(prefix="hpo-throughput-"))
    config = write_config("zero.yaml", folder / "zero.yaml", max_trials=trials, max_concurrent_trials=workers,
                          sampler=sampler)
    layout, _ = create_experiment(config, folder / "runs")
    simulation = Simulation(layout, "hpo_slurm.benchmarks.zero:objective", workers=workers)
    simulation.tick_log = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = simulation.run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    log = simulation.tick_log
    conn = sqlite3.connect(str(layout.database))
    trial_of = dict(conn.execute("SELECT seq, trial_id FROM events"))
    conn.close()
    shutil.rmtree(folder, ignore_errors=True)
    cost = {}
    previous_time, previous_event = wall0, 0
    for moment, _, last_event in log:
        if last_event > previous_event:
            share = (moment - previous_time) / (last_event - previous_event)
            for seq in range(previous_event + 1, last_event + 1):
                trial = trial_of.get(seq)
                if trial is not None:
                    cost[trial] = cost.get(trial, 0.0) + share
            previous_time, previous_event = moment, last_event
    tenth = trials // 10
    first = sum(cost.get(t, 0.0) for t in range(1, tenth + 1))
    last = sum(cost.get(t, 0.0) for t in range(trials - tenth + 1, trials + 1))
    created_at = {}
    for moment, created, _ in log:
        for mark in (tenth, trials - tenth):
            if created >= mark and mark not in created_at:
                created_at[mark] = moment
    by_creation = (log[-1][0] - created_at[trials - tenth]) / (created_at[tenth] - wall0)
    return {
        "system": "hpo-slurm", "sampler": sampler, "trials": result["trials"], "workers": workers, "wall_s": wall, "cpu_s": cpu,
        "events": result["events"], "trials_per_s": result["trials"] / wall,
        "cpu_s_per_1k_events": cpu / result["events"] * 1000, "last_first_ratio": last / first,
        "last_first_ratio_by_creation": by_creation, "ticks": simulation.ticks,
    }


def run_optuna(trials: int, sampler: str = "random") -> dict:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from hpo_slurm.benchmarks.zero import objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="optuna-throughput-"))
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}")
    study = optuna.create_study(
        storage=storage, direction="minimize",
        sampler=(optuna.samplers.TPESampler(seed=1, multivariate=True, constant_liar=True) if sampler == "tpe"
                 else optuna.samplers.RandomSampler(seed=1)),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4),
    )
    space = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(4)}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    marks = {}
    reports = 0
    for index in range(trials):
        trial = study.ask(space)
        hparams = dict(trial.params)
        value, pruned = None, False
        for length in RUNG_LENGTHS:
            value = objective(hparams, length)["loss"]
            trial.report(value, length)
            reports += 1
            if length < RUNG_LENGTHS[-1] and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
        if index + 1 in (trials // 10, trials - trials // 10):
            marks[index + 1] = time.perf_counter()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    shutil.rmtree(folder, ignore_errors=True)
    first = marks[trials // 10] - wall0
    last = wall0 + wall - marks[trials - trials // 10]
    return {"system": "optuna-sqlite", "sampler": sampler, "trials": trials, "wall_s": wall, "cpu_s": cpu, "reports": reports,
            "trials_per_s": trials / wall, "last_first_ratio": last / first, "optuna": optuna.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--optuna-repeats", type=int, default=None, help="default: --repeats below 10k, 1 at 10k")
    parser.add_argument("--sampler", choices=("random", "tpe"), default="random",
                        help="hpo-slurm's searcher.sampler; Optuna runs RandomSampler or TPESampler (multivariate, "
                             "constant_liar) to match")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, trials = args.child[0], int(args.child[1])
        print(json.dumps(run_ours(trials, int(args.child[2]), args.child[3]) if kind == "ours"
                         else run_optuna(trials, args.child[2])))
        return

    script = Path(__file__).resolve()
    runs = []
    for size in args.sizes:
        for repeat in range(args.repeats):  # interleaved: a noisy minute hits both systems alike
            ours = run_child(script, "--child", "ours", str(size), str(args.workers), args.sampler)
            runs.append(ours)
            print(f"hpo-slurm {size:>7} trials run {repeat + 1}: {ours['trials_per_s']:,.0f} trials/s, "
                  f"{ours['cpu_s_per_1k_events']:.3f} CPU s/1k events, last/first {ours['last_first_ratio']:.2f}",
                  flush=True)
            optuna_repeats = args.optuna_repeats or (args.repeats if size < OPTUNA_LIMIT else 1)
            if size <= OPTUNA_LIMIT and repeat < optuna_repeats:
                theirs = run_child(script, "--child", "optuna", str(size), args.sampler, timeout=6 * 3600)
                runs.append(theirs)
                print(f"optuna    {size:>7} trials run {repeat + 1}: {theirs['trials_per_s']:,.1f} trials/s",
                      flush=True)

    rows, summary = [], []
    optuna_rates = {}
    for size in args.sizes:
        mine = [r for r in runs if r["system"] == "hpo-slurm" and r["trials"] == size]
        theirs = [r for r in runs if r["system"] == "optuna-sqlite" and r["trials"] == size]
        rate = median(r["trials_per_s"] for r in mine)
        if theirs:
            optuna_rate, label = median(r["trials_per_s"] for r in theirs), "measured"
            optuna_rates[size] = optuna_rate
        else:
            known = max(optuna_rates) if optuna_rates else None
            optuna_rate = optuna_rates[known] if known else float("nan")
            label = f"extrapolated: its {known:,}-trial rate" if known else "not run"
        entry = {
            "trials": size, "runs": len(mine), "trials_per_s": rate,
            "trials_per_s_all": [r["trials_per_s"] for r in mine],
            "cpu_s_per_1k_events": median(r["cpu_s_per_1k_events"] for r in mine),
            "last_first_ratio": median(r["last_first_ratio"] for r in mine),
            "last_first_ratio_by_creation": median(r["last_first_ratio_by_creation"] for r in mine),
            "optuna_trials_per_s": optuna_rate, "optuna": label, "optuna_runs": len(theirs),
            "speedup_vs_optuna": rate / optuna_rate if optuna_rate == optuna_rate else None,
        }
        summary.append(entry)
        rows.append([f"{size:,}", rate, entry["cpu_s_per_1k_events"], entry["last_first_ratio"],
                     entry["last_first_ratio_by_creation"], optuna_rate, label, entry["speedup_vs_optuna"] or float("nan")])
    print()
    print(table(["trials", "hpo-slurm trials/s", "CPU s/1k events", "last/first (per trial)",
                 "last/first (by creation)", "Optuna trials/s", "Optuna", "speedup"], rows))
    path = save("throughput" if args.sampler == "random" else f"throughput-{args.sampler}",
                {"workers": args.workers, "sampler": args.sampler, "summary": summary, "runs": runs,
                               "spread": {str(s["trials"]): (min(s["trials_per_s_all"]), max(s["trials_per_s_all"]))
                                          for s in summary if s["trials_per_s_all"]}})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
