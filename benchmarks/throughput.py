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

Optuna runs whole searches up to 10k trials. Above that (a 100k-trial search would take days here) its
rate is measured at that size: a SQLite study is filled with as many trials shaped like its own search's
(``prefilled_trials``: uniform draws, pruned by its SuccessiveHalvingPruner's rule), then
``--optuna-probe`` trials are timed on it.

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
OPTUNA_LIMIT = 10_000  # larger Optuna runs take too long on this machine: a prefilled study is measured instead


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
        for mark in (tenth, trials - tenth, trials):
            if created >= mark and mark not in created_at:
                created_at[mark] = moment
    by_creation = (log[-1][0] - created_at[trials - tenth]) / (created_at[tenth] - wall0)
    return {
        "system": "hpo-slurm", "sampler": sampler, "trials": result["trials"], "workers": workers, "wall_s": wall, "cpu_s": cpu,
        "events": result["events"], "trials_per_s": result["trials"] / wall,
        "cpu_s_per_1k_events": cpu / result["events"] * 1000, "last_first_ratio": last / first,
        "last_first_ratio_by_creation": by_creation, "ticks": simulation.ticks,
        # the rate at the search's size: trials created per second while the last tenth were created
        "trials_per_s_last_tenth": tenth / max(created_at[trials] - created_at[trials - tenth], 1e-9),
    }


def _optuna_study(path: Path, sampler: str, fast_writes: bool = False):
    """The benchmark's Optuna study on the SQLite file ``path`` (made or loaded): the sampler named, SHA
    pruner. ``fast_writes``: SQLite without syncs, for filling a study before a measurement only."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    if fast_writes:
        from sqlalchemy import event

        storage.engine.dispose()  # connections made from here on get the pragmas

        @event.listens_for(storage.engine, "connect")
        def _no_sync(connection, _record) -> None:
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute("PRAGMA journal_mode=MEMORY")

    return optuna.create_study(
        storage=storage, direction="minimize", study_name="throughput", load_if_exists=True,
        sampler=(optuna.samplers.TPESampler(seed=1, multivariate=True, constant_liar=True) if sampler == "tpe"
                 else optuna.samplers.RandomSampler(seed=1)),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4),
    )


def _optuna_space() -> dict:
    from optuna.distributions import FloatDistribution

    return {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(4)}


def _optuna_trial(study, space: dict) -> int:
    """One trial as the benchmark runs it: ask, report at every rung length, ask ``should_prune()``
    below the last, tell. Returns the reports made."""
    from optuna.trial import TrialState

    from hpo_slurm.benchmarks.zero import objective

    trial = study.ask(space)
    hparams = dict(trial.params)
    value, reports = None, 0
    for length in RUNG_LENGTHS:
        value = objective(hparams, length)["loss"]
        trial.report(value, length)
        reports += 1
        if length < RUNG_LENGTHS[-1] and trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return reports
    study.tell(trial, value)
    return reports


def run_optuna(trials: int, sampler: str = "random") -> dict:
    import optuna

    folder = Path(tempfile.mkdtemp(prefix="optuna-throughput-"))
    study = _optuna_study(folder / "optuna.db", sampler)
    space = _optuna_space()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    marks = {}
    reports = 0
    for index in range(trials):
        reports += _optuna_trial(study, space)
        if index + 1 in (trials // 10, trials - trials // 10):
            marks[index + 1] = time.perf_counter()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    shutil.rmtree(folder, ignore_errors=True)
    first = marks[trials // 10] - wall0
    last = wall0 + wall - marks[trials - trials // 10]
    return {"system": "optuna-sqlite", "sampler": sampler, "trials": trials, "wall_s": wall, "cpu_s": cpu, "reports": reports,
            "trials_per_s": trials / wall, "last_first_ratio": last / first, "optuna": optuna.__version__}


def prefilled_trials(size: int, seed: int = 1) -> list:
    """``size`` finished trials shaped like those of the benchmark's own Optuna search: uniform
    hyperparameters (with either sampler: the model's cost depends on how many trials there are, not on
    where they lie), reports at the rung lengths, pruned by the rule of Optuna's SuccessiveHalvingPruner
    (min_resource 1, reduction factor 4: a trial goes on from a rung while its value is within the best
    quarter of the values reported there so far), with the pruner's ``completed_rung_<r>`` records."""
    import heapq
    import random

    from optuna.trial import TrialState, create_trial

    from hpo_slurm.benchmarks.zero import objective

    space = _optuna_space()
    rng = random.Random(seed)
    low: list = [[] for _ in RUNG_LENGTHS]   # per rung: max-heap (negated) of the best quarter's values
    high: list = [[] for _ in RUNG_LENGTHS]  # per rung: min-heap of the others
    counts = [0] * len(RUNG_LENGTHS)
    trials = []
    for _ in range(size):
        hparams = {name: rng.random() for name in space}
        reports, attrs, pruned = {}, {}, False
        for rung, length in enumerate(RUNG_LENGTHS):
            value = objective(hparams, length)["loss"]
            reports[length] = value
            if length == RUNG_LENGTHS[-1]:
                break
            attrs[f"completed_rung_{rung}"] = value
            counts[rung] += 1
            if low[rung] and value < -low[rung][0]:
                heapq.heappush(low[rung], -value)
            else:
                heapq.heappush(high[rung], value)
            keep = max(1, counts[rung] // 4)
            while len(low[rung]) > keep:
                heapq.heappush(high[rung], -heapq.heappop(low[rung]))
            while len(low[rung]) < keep and high[rung]:
                heapq.heappush(low[rung], -heapq.heappop(high[rung]))
            if value > -low[rung][0]:
                pruned = True
                break
        trials.append(create_trial(
            params=hparams, distributions=space, intermediate_values=reports, system_attrs=attrs,
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            value=None if pruned else reports[RUNG_LENGTHS[-1]]))
    return trials


def run_optuna_prefilled(size: int, sampler: str, probe: int) -> dict:
    """Optuna's rate at a study size it takes hours to reach here: a SQLite study is filled with
    ``size`` trials (``prefilled_trials``; written without syncs, not measured), reopened as the
    benchmark opens it, one trial run to warm Optuna's cache of finished trials (a search that had
    grown to ``size`` would have it warm), then ``probe`` trials timed."""
    import optuna

    folder = Path(tempfile.mkdtemp(prefix="optuna-throughput-"))
    fill0 = time.perf_counter()
    _optuna_study(folder / "optuna.db", sampler, fast_writes=True).add_trials(prefilled_trials(size))
    fill = time.perf_counter() - fill0
    study = _optuna_study(folder / "optuna.db", sampler)
    space = _optuna_space()
    _optuna_trial(study, space)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    reports = sum(_optuna_trial(study, space) for _ in range(probe))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    shutil.rmtree(folder, ignore_errors=True)
    return {"system": "optuna-sqlite", "sampler": sampler, "trials": size, "prefilled": size, "measured_trials": probe,
            "fill_s": fill, "wall_s": wall, "cpu_s": cpu, "reports": reports, "trials_per_s": probe / wall,
            "optuna": optuna.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--optuna-repeats", type=int, default=None, help="default: --repeats below 10k, 1 at 10k")
    parser.add_argument("--sampler", choices=("random", "tpe"), default="random",
                        help="hpo-slurm's searcher.sampler; Optuna runs RandomSampler or TPESampler (multivariate, "
                             "constant_liar) to match")
    parser.add_argument("--optuna-probe", type=int, default=100,
                        help="above 10k trials Optuna runs on a study prefilled to the size: this many trials timed "
                             "(0: its largest measured rate stands in, labelled extrapolated)")
    parser.add_argument("--tag", default=None,
                        help="name of the JSON file under benchmarks/results (default: throughput, or throughput-tpe)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, trials = args.child[0], int(args.child[1])
        if kind == "ours":
            print(json.dumps(run_ours(trials, int(args.child[2]), args.child[3])))
        elif kind == "optuna-prefilled":
            print(json.dumps(run_optuna_prefilled(trials, args.child[2], int(args.child[3]))))
        else:
            print(json.dumps(run_optuna(trials, args.child[2])))
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
            elif size > OPTUNA_LIMIT and args.optuna_probe > 0 and repeat == 0:
                theirs = run_child(script, "--child", "optuna-prefilled", str(size), args.sampler,
                                   str(args.optuna_probe), timeout=6 * 3600)
            else:
                continue
            runs.append(theirs)
            print(f"optuna    {size:>7} trials run {repeat + 1}: {theirs['trials_per_s']:,.1f} trials/s"
                  + (f" (prefilled, {theirs['measured_trials']} trials timed)" if "prefilled" in theirs else ""),
                  flush=True)

    rows, summary = [], []
    optuna_rates = {}
    for size in args.sizes:
        mine = [r for r in runs if r["system"] == "hpo-slurm" and r["trials"] == size]
        theirs = [r for r in runs if r["system"] == "optuna-sqlite" and r["trials"] == size]
        rate = median(r["trials_per_s"] for r in mine)
        last_rate = median(r["trials_per_s_last_tenth"] for r in mine)
        prefilled = bool(theirs) and "prefilled" in theirs[0]
        if theirs:
            optuna_rate = median(r["trials_per_s"] for r in theirs)
            label = (f"measured: {theirs[0]['measured_trials']} trials on a study prefilled to {size:,}; speedup "
                     f"from hpo-slurm's rate over its last 10%" if prefilled else "measured")
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
            "trials_per_s_last_tenth": last_rate,
            # Optuna on a prefilled study is its rate at that size: compared with hpo-slurm's at the same size
            "speedup_vs_optuna": (last_rate if prefilled else rate) / optuna_rate if optuna_rate == optuna_rate else None,
        }
        summary.append(entry)
        rows.append([f"{size:,}", rate, last_rate, entry["cpu_s_per_1k_events"], entry["last_first_ratio"],
                     entry["last_first_ratio_by_creation"], optuna_rate, label, entry["speedup_vs_optuna"] or float("nan")])
    print()
    print(table(["trials", "hpo-slurm trials/s", "last 10%", "CPU s/1k events", "last/first (per trial)",
                 "last/first (by creation)", "Optuna trials/s", "Optuna", "speedup"], rows))
    path = save(args.tag or ("throughput" if args.sampler == "random" else f"throughput-{args.sampler}"),
                {"workers": args.workers, "sampler": args.sampler, "summary": summary, "runs": runs,
                               "spread": {str(s["trials"]): (min(s["trials_per_s_all"]), max(s["trials_per_s_all"]))
                                          for s in summary if s["trials_per_s_all"]}})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
