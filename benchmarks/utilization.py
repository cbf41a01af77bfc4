"""Benchmark 3: worker utilization with stragglers, ASHA versus synchronous successive halving.

16 simulated workers; the learning-curve objective (per-unit cost lognormal per configuration,
sigma 0.5) plus injected stragglers (5% of runs 4x slower). Utilization = busy worker-seconds /
(workers x makespan). Compared, over ``--seeds`` seeds, same objective, same trials, same rungs
(1, 4, 16, 64, 256 units, divisor 4):

* async_halving: one ASHA bracket, max_concurrent_trials 32 (runs queue FIFO when workers are busy);
* adaptive_asha: standard mode (brackets of 5, 4, 3 rungs), max_concurrent_trials 32;
* sync-SH: synchronous successive halving written here (``SyncHalving``): all trials of a rung must
  report before the best 1/4 are promoted; the same driver, store and simulated cluster run it.

    python benchmarks/utilization.py                 # 1024 trials, 5 seeds
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median, save, table, write_config  # noqa: E402

from hpo_slurm.searchers.asha import rung_lengths  # noqa: E402
from hpo_slurm.searchers.base import WORST, Context, SearchMethod, signed_metric  # noqa: E402
from hpo_slurm.core.types import Action, Close, Create, ExitReason, Train  # noqa: E402

OBJECTIVE = "hpo_slurm.benchmarks.curves:high"


class SyncHalving(SearchMethod):
    """Synchronous successive halving: ``trials`` start at rung 0; when every trial of a rung has
    reported, the best ``max(len // divisor, 1)`` train to the next rung and the others are closed."""

    def __init__(self, config, space, ctx: Context, state: Optional[Dict[str, Any]] = None):
        self.space, self.ctx = space, ctx
        self.divisor = config.searcher.divisor
        self.smaller_is_better = config.searcher.smaller_is_better
        self.trials = config.searcher.max_trials
        self.lengths = rung_lengths(config.searcher.max_length, self.divisor, config.searcher.num_rungs)
        self.state = copy.deepcopy(state) if state else {"rung": 0, "members": [], "results": {}, "closed": 0}

    def initial(self) -> List[Action]:
        actions: List[Action] = []
        for _ in range(self.trials):
            trial_id = self.ctx.new_trial_id()
            self.state["members"].append(trial_id)
            actions += [Create(trial_id, self.space.sample(self.ctx.rng)), Train(trial_id, self.lengths[0])]
        return actions

    def on_validation(self, trial_id: int, length: int, metric: float) -> List[Action]:
        return self._report(trial_id, signed_metric(metric, self.smaller_is_better))

    def on_early_exit(self, trial_id: int, reason: ExitReason) -> List[Action]:
        return self._report(trial_id, WORST, exited=True)

    def on_closed(self, trial_id: int) -> List[Action]:
        self.state["closed"] += 1
        return []

    def _report(self, trial_id: int, metric: float, exited: bool = False) -> List[Action]:
        state = self.state
        state["results"][str(trial_id)] = [metric, exited]
        if len(state["results"]) < len(state["members"]):
            return []  # the barrier: wait for the whole rung
        ranked = sorted(state["members"], key=lambda t: state["results"][str(t)][0])
        last = state["rung"] == len(self.lengths) - 1
        keep = [] if last else ranked[: max(len(ranked) // int(self.divisor), 1)]
        actions: List[Action] = [Close(t) for t in ranked if t not in keep and not state["results"][str(t)][1]]
        state["rung"] += 1
        state["members"], state["results"] = keep, {}
        actions += [Train(t, self.lengths[state["rung"]]) for t in keep]
        return actions

    def progress(self) -> float:
        return self.state["closed"] / self.trials

    def snapshot(self) -> Dict[str, Any]:
        return copy.deepcopy(self.state)

    def trial_budget(self) -> int:
        return self.trials

    def concurrency_cap(self) -> int:
        return self.trials


def busy_before_tail(timeline, workers: int):
    """Utilization over [0, T], T the last moment the cluster had work for every worker (after it, the
    search's tail: fewer runnable runs than workers), and T itself."""
    end = None
    for t, running, queued in timeline:
        if running + queued >= workers:
            end = t
    for t, running, queued in timeline:  # T: the first change after the last full moment
        if end is not None and t > end:
            end = t
            break
    if not end:
        return None, 0.0
    busy, last_t, last_running = 0.0, 0.0, 0
    for t, running, _ in timeline:
        if t > end:
            break
        busy += (t - last_t) * last_running
        last_t, last_running = t, running
    busy += (end - last_t) * last_running
    return busy / (workers * end), end


def sync_searcher(config):
    from hpo_slurm.searchers import Searcher

    ctx = Context.from_seed(config.seed)
    return Searcher("async_halving", SyncHalving(config, config.hyperparameters, ctx), ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1024)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--stragglers", type=float, default=0.05)
    parser.add_argument("--straggler-factor", type=float, default=4.0)
    parser.add_argument("--tag", default="utilization", help="name of the JSON file under benchmarks/results")
    args = parser.parse_args()

    from hpo_slurm.executors.simulated_world import Faults
    from hpo_slurm.engine.simulation import Simulation, create_experiment

    faults = Faults(stragglers=args.stragglers, straggler_factor=args.straggler_factor)
    root = Path(tempfile.mkdtemp(prefix="hpo-utilization-"))
    methods = {
        "async_halving": dict(name="async_halving", num_rungs=5, divisor=4, max_concurrent_trials=32),
        "adaptive_asha": dict(max_concurrent_trials=32),
        "sync-SH": dict(name="async_halving", num_rungs=5, divisor=4, max_concurrent_trials=0),
    }
    runs: List[Dict[str, Any]] = []
    for seed in range(1, args.seeds + 1):
        for method, fields in methods.items():
            path = write_config("curves.yaml", root / f"{method}-{seed}.yaml", seed=seed, max_trials=args.trials,
                                **fields)
            layout, config = create_experiment(path, root / "runs", name=f"{method}-{seed}")
            simulation = Simulation(layout, OBJECTIVE, workers=args.workers, seed=seed, faults=faults,
                                    searcher=sync_searcher(config) if method == "sync-SH" else None)
            simulation.executor.timeline = []
            result = simulation.run()
            before_tail, tail_start = busy_before_tail(simulation.executor.timeline, args.workers)
            runs.append({"method": method, "seed": seed, "utilization": result["utilization"],
                         "utilization_before_tail": before_tail,
                         "tail_fraction": 1 - tail_start / result["makespan_seconds"],
                         "makespan_h": result["makespan_seconds"] / 3600, "compute_h": result["compute_seconds"] / 3600,
                         "best": result["best"]["metric"] if result["best"] else None,
                         "trials": result["trials"], "stragglers": result["injected"]["stragglers"]})
            print(f"seed {seed} {method:>13}: utilization {result['utilization']:.3f} "
                  f"(before the tail {before_tail or float('nan'):.3f}), makespan "
                  f"{result['makespan_seconds'] / 3600:.1f} h, compute {result['compute_seconds'] / 3600:.0f} h",
                  flush=True)
    shutil.rmtree(root, ignore_errors=True)
    rows, summary = [], {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        summary[method] = {key: median(r[key] for r in mine)
                           for key in ("utilization", "utilization_before_tail", "tail_fraction", "makespan_h",
                                       "compute_h", "best")}
        summary[method]["utilization_min"] = min(r["utilization"] for r in mine)
        rows.append([method, summary[method]["utilization"], summary[method]["utilization_min"],
                     summary[method]["utilization_before_tail"], summary[method]["tail_fraction"],
                     summary[method]["makespan_h"], summary[method]["compute_h"], summary[method]["best"]])
    print()
    print(f"{args.trials} trials, {args.workers} workers, stragglers {args.stragglers:g} x{args.straggler_factor:g} "
          f"plus lognormal per-configuration cost; medians over {args.seeds} seeds")
    print(table(["method", "utilization", "min", "before tail", "tail share", "makespan h", "compute h",
                 "best loss"], rows))
    ratio = summary["async_halving"]["utilization"] / summary["sync-SH"]["utilization"]
    print(f"\nASHA / sync-SH utilization: {ratio:.2f}x")
    path = save(args.tag, {"trials": args.trials, "workers": args.workers, "stragglers": args.stragglers,
                                "straggler_factor": args.straggler_factor, "summary": summary, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
