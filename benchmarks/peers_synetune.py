"""Syne Tune's ASHA and BOHB (syne-tune 0.16.0) on simulated asynchronous workers.

Driven through Syne Tune's scheduler API exactly as its ``Tuner`` drives it (syne_tune/tuner.py): a free
worker asks ``scheduler.suggest()``, makes a ``Trial`` and calls ``on_trial_add``; the trial reports after
every unit of length (``{"epoch": l, "loss": ...}``, Syne Tune's usual per-epoch reporting) through
``on_trial_result``; on ``STOP`` (also ASHA's own at ``max_t``) the worker calls ``on_trial_remove`` and
takes the next suggestion. (The Tuner calls ``on_trial_complete`` only for a trial that ends without the
scheduler's stop, which never happens here, and ``on_trial_error`` for failures, which simulated trials
do not have.) Training from length ``l`` to ``l + 1`` costs ``seconds(l + 1) - seconds(l)`` of the
objective, on ``workers`` workers, the accounting of the Optuna peer (``peers.Ledger``).

Settings: Syne Tune's recommended defaults (``syne_tune.optimizer.baselines``) with the other methods'
grace period and reduction factor:

* ``synetune-asha``: ``ASHA(grace_period=1, reduction_factor=4, brackets=1, max_t=max_length)`` with
  random search. In 0.16.0 this is the stopping variant of asynchronous successive halving (a trial
  reaching a rung continues if it is in the top 1/4 of the results recorded there so far, else stops);
  the promotion variant, ``HyperbandScheduler`` and MOBSTER are no longer in the package.
* ``synetune-bohb``: ``BOHB`` with the same scheduler and its KDE searcher at its defaults (top 15%,
  64 candidates, a third of the configurations drawn at random, refitted before every suggestion on
  the last reported value of every trial, whatever its length).
"""

from __future__ import annotations

import datetime
import heapq
import logging
import math
from typing import Any, Callable, Dict, List

from peers import Ledger

CREATED = datetime.datetime(2024, 1, 1)  # a Trial needs a creation time; nothing here reads it


def config_space(space: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Syne Tune's config space for ``peers.space_spec``'s JSON: the same ranges, scales and choices."""
    from syne_tune.config_space import choice, loguniform, randint, uniform

    out: Dict[str, Any] = {}
    for leaf in space:
        kind = leaf["type"]
        if kind == "float":
            out[leaf["name"]] = (loguniform if leaf["log"] else uniform)(leaf["low"], leaf["high"])
        elif kind == "int":
            out[leaf["name"]] = randint(leaf["low"], leaf["high"])  # both ends included
        elif kind == "categorical":
            out[leaf["name"]] = choice(list(leaf["choices"]))
        else:
            out[leaf["name"]] = leaf["value"]  # a constant: Syne Tune passes plain values through
    return out


def make_scheduler(method: str, space: Dict[str, Any], max_length: int, seed: int):
    from syne_tune.optimizer.baselines import ASHA, BOHB

    kind = {"synetune-asha": ASHA, "synetune-bohb": BOHB}[method]
    return kind(space, metric="loss", time_attr="epoch", max_t=max_length, do_minimize=True, random_seed=seed,
                grace_period=1, reduction_factor=4, brackets=1)


def run(method: str, objective: Callable[[Dict[str, Any], int], Dict[str, float]], space: List[Dict[str, Any]],
        max_length: int, seed: int, workers: int, target: float = -math.inf, budget: float = 0.0,
        cap: float = math.inf) -> Dict[str, Any]:
    """One search of ``method`` on ``workers`` simulated workers, stopped by compute as a Syne Tune user
    stops the Tuner (``StoppingCriterion(max_wallclock_time=...)``), not by a number of trials: it ends
    once the target is reached and ``budget`` is spent, or at ``cap`` (``Ledger.over``). Returns
    ``Ledger.result``: compute, the incumbent trace ``[[compute, best loss at max_length], ...]``, the
    best, and the trials started."""
    import numpy as np
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer.scheduler import SchedulerDecision

    logging.getLogger("syne_tune").setLevel(logging.ERROR)
    np.random.seed(seed)  # ASHA's bracket choice and the KDE searcher's random draws use numpy's global state
    scheduler = make_scheduler(method, config_space(space), max_length, seed)
    ledger = Ledger(target, budget, cap)
    events: List[Any] = []  # (end time, trial id, length, objective's result at that length)
    running: Dict[int, Any] = {}
    started = 0

    def train(now: float, trial: Any, length: int, seconds_before: float) -> None:
        result = objective(trial.config, length)
        ledger.start(trial.trial_id, now)
        heapq.heappush(events, (now + result["seconds"] - seconds_before, trial.trial_id, length, result))

    def start(now: float) -> None:
        nonlocal started
        suggestion = scheduler.suggest()
        if suggestion is None:
            return
        trial = Trial(trial_id=started, config=suggestion.config, creation_time=CREATED)
        started += 1
        scheduler.on_trial_add(trial)
        running[trial.trial_id] = trial
        train(now, trial, 1, 0.0)

    now = 0.0
    for _ in range(workers):
        start(now)
    while events:
        now, trial_id, length, result = heapq.heappop(events)
        ledger.finish(trial_id, now)
        trial = running[trial_id]
        decision = scheduler.on_trial_result(trial, {"epoch": length, "loss": result["loss"]})
        if length >= max_length:
            ledger.full_length(result["loss"], now)
        if decision == SchedulerDecision.CONTINUE and length < max_length:
            train(now, trial, length + 1, result["seconds"])
        else:  # STOP (PAUSE is never resumed by these schedulers): what the Tuner does, then the next trial
            scheduler.on_trial_remove(trial)
            del running[trial_id]
            if not ledger.over(now):
                start(now)
        if ledger.over(now):
            break
    return ledger.result(now, started)
