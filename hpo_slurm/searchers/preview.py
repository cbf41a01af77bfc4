"""``preview``: what a search will train, found by running the real searcher against a synthetic metric.

Trials "train" instantly; events are handled in FIFO order. They report a constant metric, on which
promotion-based successive halving, PBT and the others plan exactly as Determined's preview does. A
searcher that keeps a trial only while it ranks in the top fraction of its rung (``stop_once``) would
keep every trial of a constant metric (ties rank first), so for it trials report a metric drawn
uniformly at random instead, as Determined's preview does (its RandomValidation), from a generator
seeded with the experiment's seed: the same config always previews the same plan, and how many
trials stop where is what the searcher does with results that differ. Because the plan comes from
``make_searcher``, it cannot drift from what ``launch`` does.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List, Optional

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.types import Action, Close, Create, Shutdown, Train
from hpo_slurm.searchers import Searcher, make_searcher
from hpo_slurm.searchers.drain import drain

Metric = Callable[[int, int], Any]  # (trial_id, length) -> raw metric


def simulate(searcher: Searcher, metric: Metric = lambda trial_id, length: 1.0) -> Dict[str, Any]:
    """Run ``searcher`` to Shutdown with instant trials. Returns per-trial ``final`` length, ``start``
    length (a PBT child starts at its parent's length), ``parent`` links and the ``shutdown`` action."""
    final: Dict[int, int] = {}
    start: Dict[int, int] = {}
    parent: Dict[int, Optional[int]] = {}
    trains: Deque[Train] = deque()
    shutdown: List[Shutdown] = []

    def handle(action: Action) -> Optional[List[Action]]:
        if isinstance(action, Create):
            tid = action.trial_id
            parent[tid] = action.parent
            start[tid] = final[action.parent] if action.parent is not None else 0
            final[tid] = start[tid]
            return searcher.on_created(tid)
        if isinstance(action, Train):
            trains.append(action)
        elif isinstance(action, Close):
            return searcher.on_closed(action.trial_id)
        elif isinstance(action, Shutdown):
            shutdown.append(action)
        return None

    drain(searcher.initial(), handle)
    while not shutdown:
        if not trains:
            raise RuntimeError(f"{searcher.name}: the search stalled with no work outstanding")
        train = trains.popleft()
        final[train.trial_id] = train.length
        drain(searcher.on_validation(train.trial_id, train.length, metric(train.trial_id, train.length)), handle)
    return {"final": final, "start": start, "parent": parent, "shutdown": shutdown[0]}


def build_plan(
    config: ExperimentConfig, seconds_per_unit: Optional[float] = None, gpus: Optional[int] = None
) -> Dict[str, Any]:
    """The search's plan: brackets (successive halving only), how many trials end at each length and the
    length they trained to get there (less than length times trials when PBT children start from their
    parents' checkpoints; the rows' ``trained`` add up to ``total_length``), totals,
    and, when ``seconds_per_unit`` (a trial's wall seconds per unit of length) is given, the compute:
    ``gpus_per_trial`` (``gpus``, default ``config.slots_per_trial``), ``job_hours`` (the trials' wall
    hours) and ``gpu_hours`` (job hours times GPUs per trial: a trial of N ranks holds N GPUs; 0 when
    trials use no GPU).

    ``total_length`` is the training actually done: the sum over trials of the final length reached,
    minus, for PBT children, the length inherited from the parent's checkpoint.

    A search without max_length (``SearcherConfig.open_ended``) has no lengths to plan: its plan says
    ``"open_ended": true``, has one row whose ``length``, ``trained`` and ``total_length`` are None
    (each trial trains until its code stops) and no compute estimate, whatever ``seconds_per_unit``.
    """
    searcher = make_searcher(config)
    if config.searcher.stop_once:
        draws = random.Random(config.seed)
        run = simulate(searcher, lambda trial_id, length: draws.random())
    else:
        run = simulate(searcher)
    ends = Counter(run["final"].values())
    trained: Counter = Counter()
    for trial_id, final in run["final"].items():
        trained[final] += final - run["start"][trial_id]
    plan: Dict[str, Any] = {"searcher": config.searcher.name}
    brackets = searcher.brackets()
    if brackets is not None:
        plan["brackets"] = brackets
    plan["plan"] = [{"length": length, "trials": ends[length], "trained": trained[length]} for length in sorted(ends)]
    plan["total_trials"] = len(run["final"])
    plan["total_length"] = sum(run["final"][t] - run["start"][t] for t in run["final"])
    plan["unit"] = config.searcher.unit
    if config.searcher.open_ended:
        plan["open_ended"] = True
        plan["plan"] = [{"length": None, "trials": plan["total_trials"], "trained": None}]
        plan["total_length"] = None
        return plan
    if seconds_per_unit is not None:
        gpus_per_trial = gpus if gpus is not None else config.slots_per_trial
        plan["gpus_per_trial"] = gpus_per_trial
        plan["job_hours"] = plan["total_length"] * seconds_per_unit / 3600
        plan["gpu_hours"] = plan["job_hours"] * gpus_per_trial
    return plan
