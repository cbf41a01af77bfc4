"""Benchmark 2: search efficiency, compute to reach random search's result.

Per objective and seed: random search with N trials trained to max_length sets the target (its final
best) and the budget (its total compute). Then, for each method, the compute spent when its best metric
AT max_length first reaches the target, as a fraction of that budget (inf when it never does):

* adaptive_asha in each of its modes: standard (Determined's default: brackets of 5, 4 and 3 rungs on
  256 units), aggressive (one bracket of 5 rungs) and conservative (brackets of 5 to 1 rungs); and
  async_halving (one bracket with as many rungs as adaptive_asha's biggest: the same search as
  adaptive_asha in aggressive mode), divisor 4, max_concurrent_trials = workers, on the simulated
  cluster, with ``MANY`` x N trials, about enough to spend random search's budget;
* random-2x: random search with 2N trials (another seed);
* adaptive_asha with ``sampler: tpe`` (BOHB-style model-based sampling, BOHB's defaults) in each mode
  (asha-tpe, asha-aggressive-tpe, asha-conservative-tpe);
* Optuna's SuccessiveHalvingPruner and HyperbandPruner (min_resource 1, reduction factor 4, as many
  trials) with RandomSampler, so that only the early stopping differs; and what an Optuna user runs,
  TPESampler (multivariate, constant_liar) with HyperbandPruner (optuna-tpe-hyperband), ask/tell on the same number of
  simulated workers: a trial trains from one report length to the next (powers of 4 and max_length,
  every length where a pruner can decide), reports, asks ``should_prune()``; a pruned or finished trial
  frees its worker. Compute is the sum of busy worker-seconds, the running trials' included;
* Syne Tune 0.16.0's ASHA and BOHB (synetune-asha, synetune-bohb: ``benchmarks/peers_synetune.py``)
  through its scheduler API, and DEHB 0.1.2 (dehb: ``benchmarks/peers_dehb.py``) through its ask/tell
  interface, each at its recommended settings, on the same simulated workers with the same accounting
  (``peers.Ledger``), in a child process of ``--peers-python`` (DEHB needs numpy < 2; ``benchmarks/peers.py``).
  They are stopped by compute, as their users stop them (Syne Tune's ``max_wallclock_time``, DEHB's
  ``total_cost``), not by a number of trials: at ``--peer-cap`` x the budget (default 2).

Optuna and the peers stop once the target is reached and random search's budget is spent, so that both
measures below are known. Also shown per method: the best loss at max_length found within 0.25, 0.5 and
1 x the budget (median over seeds), the quartiles of the compute to the target, and the compute at the
method's first result at max_length. No method reaches the target before that result; where every
configuration costs the same per unit (Hartmann) and every worker stays busy until then, it comes at
no less than workers x one full-length trial's seconds, i.e. workers / N of the budget.

Objectives: multi-fidelity Hartmann-6 (mfpbench presets good, moderate, bad, terrible), the
learning-curve benchmark with early/final rank correlation 0.9, 0.5 and 0.1, and digits-mlp: real
learning curves of an MLP on scikit-learn's digits looked up in a table (576 configurations x 30
epochs, ``benchmarks/make_digits_table.py``; Optuna searches the same ranges, scales and choices). The table also shows the
measured Spearman correlation between the bottom rung (length 1) and max_length, and between a
middle rung and max_length, over 2,000 random configurations.

    python benchmarks/efficiency.py                  # 10 seeds, N = 32, 16 workers, every method
    python benchmarks/efficiency.py --seeds 3 --objectives curves-0.9
    python benchmarks/efficiency.py --methods adaptive_asha optuna-tpe-hyperband dehb --peers-python VENV/bin/python
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median, save, table, write_config  # noqa: E402
from peers import PEERS, Ledger, PeerProcess, space_spec  # noqa: E402
from hpo_slurm.benchmarks.ranks import spearman  # noqa: E402

OBJECTIVES = {
    "hartmann-good": ("hartmann6.yaml", "hpo_slurm.benchmarks.hartmann:good"),
    "hartmann-moderate": ("hartmann6.yaml", "hpo_slurm.benchmarks.hartmann:moderate"),
    "hartmann-bad": ("hartmann6.yaml", "hpo_slurm.benchmarks.hartmann:bad"),
    "hartmann-terrible": ("hartmann6.yaml", "hpo_slurm.benchmarks.hartmann:terrible"),
    "curves-0.9": ("curves.yaml", "hpo_slurm.benchmarks.curves:high"),
    "curves-0.5": ("curves.yaml", "hpo_slurm.benchmarks.curves:medium"),
    "curves-0.1": ("curves.yaml", "hpo_slurm.benchmarks.curves:low"),
    "digits-mlp": ("digits.yaml", "hpo_slurm.benchmarks.digits:objective"),
}
# Trials of the early-stopping methods, in multiples of N: "enough to spend about that budget".
# 8N does that on Hartmann (100 units, adaptive_asha's trials cost ~1/8 of a full one on average) but
# spends only ~0.3 of it on the curves (256 units, ~1/30), so those get 32N.
# digits (30 epochs, rungs 1, 7, 30): 4N spends ~1.0 of it in standard mode (measured, 10 seeds).
MANY = {"hartmann6.yaml": 8, "curves.yaml": 32, "digits.yaml": 4}
ASHA_MODES = {"adaptive_asha": "standard", "asha-aggressive": "aggressive", "asha-conservative": "conservative"}
TPE_MODES = {"asha-tpe": "standard", "asha-aggressive-tpe": "aggressive",  # adaptive_asha, sampler: tpe
             "asha-conservative-tpe": "conservative"}
SIMULATED = (*ASHA_MODES, *TPE_MODES, "async_halving", "random-2x")  # run by hpo-slurm on the simulated cluster
OPTUNA = ("optuna-sha", "optuna-hyperband", "optuna-tpe-hyperband")
METHODS = (*SIMULATED, *OPTUNA, *PEERS)
FRACTIONS = (0.25, 0.5, 1.0)  # of random search's budget: the best found within each


def best_within(trace: List[List[float]], compute: float) -> float:
    """The best loss at max_length found with at most ``compute`` spent (inf if none yet)."""
    return min((best for spent, best in trace if spent <= compute), default=math.inf)


def quartiles(values: List[float]) -> List[float]:
    """First and third quartile, nearest rank (inf-safe: a seed that never reached counts as inf)."""
    ordered = sorted(values)
    return [ordered[round(q * (len(ordered) - 1))] for q in (0.25, 0.75)]


def compute_to_target(trace: List[List[float]], target: float) -> float:
    for compute, best in trace:
        if best <= target:
            return compute
    return math.inf


def measured_correlations(objective: Callable, space: Any, max_length: int) -> Dict[str, float]:
    """Spearman correlation of the loss at length 1, and at a middle length (max_length / 16, at least
    2), with the loss at max_length, over 2,000 configurations drawn uniformly from ``space``."""
    from hpo_slurm.core.rng import Rng

    rng = Rng(0)
    configs = [space.sample(rng) for _ in range(2000)]
    final = [objective(c, max_length)["loss"] for c in configs]
    middle = max(max_length // 16, 2)
    return {"rho_1": spearman([objective(c, 1)["loss"] for c in configs], final),
            "rho_mid": spearman([objective(c, middle)["loss"] for c in configs], final), "mid_length": middle}


def optuna_distributions(space: Any) -> Dict[str, Any]:
    """Optuna's distributions for a flat hyperparameter space: the same ranges, scales and choices."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hpo_slurm.config.space import Categorical, Const, Double, Int, Log

    out: Dict[str, Any] = {}
    for path, param in space.leaves():
        name = ".".join(path)
        if isinstance(param, Double):
            out[name] = FloatDistribution(param.minval, param.maxval)
        elif isinstance(param, Log):
            out[name] = FloatDistribution(param.base ** param.minval, param.base ** param.maxval, log=True)
        elif isinstance(param, Int):
            out[name] = IntDistribution(param.minval, param.maxval)
        elif isinstance(param, Categorical):
            out[name] = CategoricalDistribution(list(param.vals))
        elif not isinstance(param, Const):
            raise TypeError(f"{name}: no Optuna distribution for {param!r}")
    return out


def run_optuna(objective: Callable, space: Any, max_length: int, trials: int, seed: int, pruner: str,
               target: float, workers: int, budget: float = 0.0) -> Dict[str, Any]:
    """Optuna ask/tell on ``workers`` simulated workers: a trial trains from one report length to the
    next (``seconds(b) - seconds(a)``), reports, and asks ``should_prune()``; a pruned or finished trial
    frees its worker for the next ``ask``. Ends when ``trials`` have ended, or once the target is
    reached and ``budget`` is spent (``Ledger.over``)."""
    import heapq

    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if pruner == "optuna-sha":
        chosen = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4)
    else:
        chosen = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_length, reduction_factor=4)
    # HyperbandPruner assigns brackets by a hash of the study name: a fixed name keeps runs repeatable
    if pruner == "optuna-tpe-hyperband":  # what an Optuna user runs: TPE (multivariate, constant liar for workers)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(study_name=f"{pruner}-{seed}", direction="minimize", sampler=sampler, pruner=chosen)
    distributions = optuna_distributions(space)
    steps = sorted({4 ** k for k in range(20) if 4 ** k < max_length} | {max_length})
    events: List[Any] = []  # (end time, sequence, trial, hparams, step index, result)
    ledger = Ledger(target, budget)
    asked, sequence, now = 0, 0, 0.0

    def schedule(now: float, trial, hparams, index: int, seconds_before: float) -> None:
        nonlocal sequence
        result = objective(hparams, steps[index])
        sequence += 1
        ledger.start(trial.number, now)
        heapq.heappush(events, (now + result["seconds"] - seconds_before, sequence, trial, hparams, index, result))

    def start(now: float) -> None:
        nonlocal asked
        if asked < trials:
            asked += 1
            trial = study.ask(distributions)
            schedule(now, trial, dict(trial.params), 0, 0.0)

    for _ in range(workers):
        start(0.0)
    while events:
        now, _, trial, hparams, index, result = heapq.heappop(events)
        ledger.finish(trial.number, now)
        value = result["loss"]
        trial.report(value, steps[index])
        if steps[index] == max_length:
            study.tell(trial, value)
            ledger.full_length(value, now)
            if ledger.over(now):
                break  # the compute to the target and the best within the budget are known
            start(now)
        elif trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            if ledger.over(now):
                break
            start(now)
        else:
            schedule(now, trial, hparams, index + 1, result["seconds"])
    return ledger.result(now, asked)


def one_seed(name: str, seed: int, n: int, workers: int, root: Path, many: Optional[int] = None,
             stop_once: bool = False, methods: Sequence[str] = METHODS, peers: Optional[PeerProcess] = None,
             peer_cap: float = 2.0) -> Dict[str, Any]:
    """One seed of one objective: random search sets the target and the budget, then every method in
    ``methods`` runs; per method the compute to the target / budget, the best at max_length, the best
    within ``FRACTIONS`` of the budget (``<method>_at``), the compute spent when it ended / budget and the
    compute at its first full-length result / budget (``<method>_first``)."""
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.searchers.adaptive_asha import bracket_rungs
    from hpo_slurm.engine.simulation import load_objective, simulate

    base, spec = OBJECTIVES[name]
    objective = load_objective(spec)
    many = many or MANY[base]
    folder = root / f"{name}-{seed}"
    adaptive = {method: write_config(base, folder / f"{method}.yaml", seed=seed, max_trials=many * n,
                                     max_concurrent_trials=workers, mode=mode, stop_once=stop_once)
                for method, mode in ASHA_MODES.items() if method in methods}
    adaptive.update({method: write_config(base, folder / f"{method}.yaml", seed=seed, max_trials=many * n,
                                          max_concurrent_trials=workers, mode=mode, stop_once=stop_once, sampler="tpe")
                     for method, mode in TPE_MODES.items() if method in methods})
    config = load_config(str(write_config(base, folder / "base.yaml", seed=seed, max_trials=many * n,
                                          max_concurrent_trials=workers, mode="standard")))
    max_length = config.searcher.max_length
    rungs = max(bracket_rungs(config.searcher))
    configs = {
        "random": write_config(base, folder / "random.yaml", seed=seed, name="random", max_trials=n,
                               max_concurrent_trials=n),
        "random-2x": write_config(base, folder / "random2.yaml", seed=seed + 1000, name="random",
                                  max_trials=2 * n, max_concurrent_trials=2 * n),
        **adaptive,
        "async_halving": write_config(base, folder / "async.yaml", seed=seed, name="async_halving",
                                      max_trials=many * n, num_rungs=rungs, divisor=4,
                                      max_concurrent_trials=workers, stop_once=stop_once),
    }
    runs: Dict[str, Any] = {}
    for method, path in configs.items():
        if method == "random" or method in methods:  # simulate's seed replaces the config's: random-2x's own
            runs[method] = simulate(path, objective, folder / "runs", name=method, workers=workers,
                                    seed=seed + 1000 if method == "random-2x" else seed)
    target, budget = runs["random"]["best"]["metric"], runs["random"]["compute_seconds"]
    for method in OPTUNA:
        if method in methods:
            runs[method] = run_optuna(objective, config.hyperparameters, max_length, many * n, seed, method, target,
                                      workers, budget=budget)
    for method in PEERS:
        if method in methods:
            runs[method] = peers.run(method=method, objective=spec, space=space_spec(config.hyperparameters),
                                     max_length=max_length, seed=seed, workers=workers, target=target,
                                     budget=budget, cap=peer_cap * budget)
    row: Dict[str, Any] = {"objective": name, "seed": seed, "target": target, "budget_seconds": budget}
    for method, run in runs.items():
        best = run["best"]
        row[method] = compute_to_target(run["incumbent_trace"], target) / budget
        row[f"{method}_total"] = run["compute_seconds"] / budget
        row[f"{method}_best"] = best.get("metric") if isinstance(best, dict) else best
        row[f"{method}_at"] = [best_within(run["incumbent_trace"], f * budget) for f in FRACTIONS]
        row[f"{method}_trials"] = run["trials"]
        trace = run["incumbent_trace"]
        row[f"{method}_first"] = trace[0][0] / budget if trace else math.inf  # its first full-length result
    shutil.rmtree(folder, ignore_errors=True)
    return row


def show(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "inf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n", type=int, default=32, help="random search's trials (the others get 2N or 8N)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="the methods to run (random search, which sets the target, always runs)")
    parser.add_argument("--many", type=int, default=None,
                        help="trials of the early-stopping methods in multiples of N (default: MANY by config)")
    parser.add_argument("--stop-once", action="store_true",
                        help="adaptive_asha and async_halving in Determined's stop_once (stopping) variant")
    parser.add_argument("--peers-python", default=os.environ.get("HPO_BENCH_PEERS_PYTHON", sys.executable),
                        help="an interpreter with syne-tune 0.16.0 and dehb 0.1.2 (default: this one, or "
                             "$HPO_BENCH_PEERS_PYTHON)")
    parser.add_argument("--peer-cap", type=float, default=2.0,
                        help="Syne Tune's and DEHB's compute limit, in multiples of random search's budget")
    parser.add_argument("--tag", default="efficiency", help="name of the JSON file under benchmarks/results")
    args = parser.parse_args()
    methods = [m for m in METHODS if m in args.methods]
    if "random" in methods:
        methods.remove("random")

    from hpo_slurm.config.schema import load_config
    from hpo_slurm.engine.simulation import load_objective

    peers = PeerProcess(args.peers_python)
    if any(m in PEERS for m in methods):
        peers.check()
    root = Path(tempfile.mkdtemp(prefix="hpo-efficiency-"))
    rows, summary, details = [], [], []
    started = time.perf_counter()
    try:
        for name in args.objectives:
            base, spec = OBJECTIVES[name]
            config = load_config(str(Path(__file__).resolve().parent / "configs" / base))
            correlations = measured_correlations(load_objective(spec), config.hyperparameters,
                                                 config.searcher.max_length)
            per_seed = []
            for seed in range(1, args.seeds + 1):
                per_seed.append(one_seed(name, seed, args.n, args.workers, root, args.many, args.stop_once,
                                         methods, peers, args.peer_cap))
                print(f"{name} seed {seed}: " + ", ".join(f"{m} {per_seed[-1][m]:.2f}" for m in methods), flush=True)
            entry = {"objective": name, **correlations, "seeds": per_seed}
            for m in ("random", *methods):
                to_target = [r[m] for r in per_seed]
                entry[m] = median(to_target)
                entry[f"{m}_quartiles"] = quartiles(to_target)
                entry[f"{m}_reached"] = sum(math.isfinite(v) for v in to_target)
                entry[f"{m}_at"] = [median(r[f"{m}_at"][i] for r in per_seed) for i in range(len(FRACTIONS))]
                entry[f"{m}_total"] = median(r[f"{m}_total"] for r in per_seed)
                entry[f"{m}_first"] = median(r[f"{m}_first"] for r in per_seed)
                details.append([name, m, f"{show(entry[m])} [{show(entry[m + '_quartiles'][0])}-"
                                f"{show(entry[m + '_quartiles'][1])}] ({entry[m + '_reached']}/{args.seeds})",
                                *entry[f"{m}_at"], entry[f"{m}_total"], entry[f"{m}_first"]])
            summary.append(entry)
            rows.append([name, correlations["rho_1"], correlations["rho_mid"],
                         *[f"{show(entry[m])} ({entry[m + '_reached']}/{args.seeds})" for m in methods],
                         entry.get("adaptive_asha_total", math.nan)])
    finally:
        peers.close()
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"compute to reach random search's best (N={args.n}, {args.workers} workers, early stopping with "
          f"{args.many or MANY} x N trials, Syne Tune and DEHB up to {args.peer_cap:g} x the budget), as a "
          f"fraction of its compute; median over {args.seeds} seeds (seeds that reached it; inf: the method "
          f"ended before reaching it)")
    print(table(["objective", "rho(1)", "rho(mid)", *methods, "asha total"], rows))
    print("\nper method: compute to the target, median [quartiles] (seeds that reached it); median best loss at "
          "max_length found within 0.25, 0.5 and 1 x the budget; median compute spent when the run ended; median "
          "compute at its first full-length result")
    print(table(["objective", "method", "to target", *[f"best @{f:g}x" for f in FRACTIONS], "spent",
                 "first full-length"], details))
    path = save(args.tag, {"n": args.n, "many": args.many or MANY, "workers": args.workers, "seeds": args.seeds,
                           "stop_once": args.stop_once, "methods": methods, "peer_cap": args.peer_cap,
                           "summary": summary, "seconds": time.perf_counter() - started})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
