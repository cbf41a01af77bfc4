"""DEHB (dehb 0.1.2, differential evolution with Hyperband) on simulated asynchronous workers.

Driven through DEHB's ask/tell interface: a free worker calls ``ask()``, which returns a configuration
and a fidelity; it trains that configuration from scratch to ``round(fidelity)`` units (at least 1) and
pays ``seconds(length)`` for it (DEHB's ask/tell hands out an evaluation at a fidelity, with no
checkpoint to continue from: a configuration promoted to a higher fidelity trains again from the start),
then calls ``tell(job, {"fitness": loss, "cost": seconds})`` and asks again. DEHB is built with
``n_workers=1`` so that it starts no Dask cluster; asking again before the earlier jobs are told is how
DEHB runs asynchronously (a new bracket starts whenever the running ones wait for results), and the
simulated workers are the Optuna peer's (``peers.Ledger``).

Settings: DEHB's defaults (``mutation_factor=0.5``, ``crossover_prob=0.5``, ``strategy="rand1_bin"``,
``eta=3``: its recommended value, not the others' 4) with ``min_fidelity=1``, ``max_fidelity=max_length``.
Its fidelities are ``max_length / 3**k``: 1.2, 3.7, 11.1, 33.3, 100 on Hartmann (trained 1, 4, 11, 33 and
100 units), 1.05 ... 85.3, 256 on the curves, 1.1, 3.3, 10, 30 epochs on digits.
"""

from __future__ import annotations

import heapq
import math
import tempfile
from typing import Any, Callable, Dict, List, Tuple

from peers import Ledger


def configspace(space: List[Dict[str, Any]], seed: int) -> Tuple[Any, Dict[str, Any]]:
    """ConfigSpace's space for ``peers.space_spec``'s JSON (the same ranges, scales and choices), and
    the constants, which stay out of DEHB's vectors."""
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace(seed=seed)
    constants: Dict[str, Any] = {}
    for leaf in space:
        kind, name = leaf["type"], leaf["name"]
        if kind == "float":
            cs.add(CS.UniformFloatHyperparameter(name, leaf["low"], leaf["high"], log=leaf["log"]))
        elif kind == "int":
            cs.add(CS.UniformIntegerHyperparameter(name, leaf["low"], leaf["high"]))
        elif kind == "categorical":
            cs.add(CS.CategoricalHyperparameter(name, list(leaf["choices"])))
        else:
            constants[name] = leaf["value"]
    return cs, constants


def run(method: str, objective: Callable[[Dict[str, Any], int], Dict[str, float]], space: List[Dict[str, Any]],
        max_length: int, seed: int, workers: int, target: float = -math.inf, budget: float = 0.0,
        cap: float = math.inf, eta: int = 3) -> Dict[str, Any]:
    """One DEHB search on ``workers`` simulated workers, stopped by compute as DEHB's ``run(total_cost=...)``
    stops: it ends once the target is reached and ``budget`` is spent, or at ``cap`` (``Ledger.over``).
    Returns ``Ledger.result``: compute, the incumbent trace ``[[compute, best loss at max_length], ...]``,
    the best, and the distinct configurations evaluated."""
    from dehb import DEHB

    cs, constants = configspace(space, seed)
    ledger = Ledger(target, budget, cap)
    events: List[Any] = []  # (end time, job number, job, length, objective's result)
    seen: set = set()
    jobs = 0
    now = 0.0
    with tempfile.TemporaryDirectory(prefix="dehb-") as folder:
        optimizer = DEHB(cs=cs, dimensions=len(list(cs.values())), min_fidelity=1, max_fidelity=max_length,
                         eta=eta, n_workers=1, seed=seed, output_path=folder, save_freq="end",
                         log_level="ERROR")

        def start(now: float) -> None:
            nonlocal jobs
            job = optimizer.ask()
            seen.add(int(job["config_id"]))
            length = max(1, min(max_length, round(float(job["fidelity"]))))
            result = objective({**constants, **dict(job["config"])}, length)
            jobs += 1
            ledger.start(jobs, now)
            heapq.heappush(events, (now + result["seconds"], jobs, job, length, result))

        for _ in range(workers):
            start(now)
        while events:
            now, key, job, length, result = heapq.heappop(events)
            ledger.finish(key, now)
            optimizer.tell(job, {"fitness": float(result["loss"]), "cost": float(result["seconds"])})
            if length >= max_length:
                ledger.full_length(result["loss"], now)
            if ledger.over(now):
                break
            start(now)
    return ledger.result(now, len(seen))
