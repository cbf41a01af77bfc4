"""Peers of the efficiency benchmark that run in another interpreter: Syne Tune and DEHB.

DEHB 0.1.2 requires numpy < 2 (hpo-slurm's own environment has numpy 2), so these peers run in a child
process of an interpreter that has them (``--peers-python``; the main one when it has them), within the
same benchmark run, on the same objectives (``hpo_slurm.benchmarks``, imported by the child from this
checkout) and the same simulated workers as the Optuna peer.

Parent side: ``space_spec`` turns a hyperparameter space into JSON (the same ranges, scales and choices
as ``optuna_distributions`` in efficiency.py), ``PeerProcess`` starts the child once and sends it one
request per run. Child side (``python benchmarks/peers.py --serve``): one JSON request per line on
stdin, one JSON answer per line on the original stdout (the peers' own logging goes to stderr).
``Ledger`` is the accounting every simulated peer shares, Optuna's included. This module imports only
the standard library, so either interpreter can load it.

A request: ``{"method", "objective": "module:function", "space": space_spec(...), "max_length",
"seed", "workers", "target", "budget", "cap"}``. The answer: ``{"ok": true, "result": {
"compute_seconds", "incumbent_trace", "best", "trials"}}`` or ``{"ok": false, "error": traceback}``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, Hashable, List, Optional

HERE = Path(__file__).resolve().parent
SYNETUNE = ("synetune-asha", "synetune-bohb")
DEHB = ("dehb",)
PEERS = (*SYNETUNE, *DEHB)


class Ledger:
    """Compute and incumbent of one simulated search on asynchronous workers.

    Compute is busy worker-seconds: every finished segment of training, plus the running segments up to
    now. ``full_length(value, now)`` records a result at max_length; the trace gets
    ``[compute now, value]`` whenever the best improves, the format of ``simulate``'s
    ``incumbent_trace``. ``over(now)``: the target is reached and at least ``budget`` is spent (so both
    the compute to the target and the best found within the budget are known), or ``cap`` is spent (a
    compute limit, as Syne Tune's ``max_wallclock_time`` or DEHB's ``total_cost``; results after it
    do not count).
    """

    def __init__(self, target: float = -math.inf, budget: float = 0.0, cap: float = math.inf):
        self.target, self.budget, self.cap = target, budget, cap
        self.done_seconds = 0.0
        self.running: Dict[Hashable, float] = {}  # key -> start of its current segment
        self.best = math.inf
        self.trace: List[List[float]] = []

    def start(self, key: Hashable, now: float) -> None:
        self.running[key] = now

    def finish(self, key: Hashable, now: float) -> None:
        self.done_seconds += now - self.running.pop(key)

    def spent(self, now: float) -> float:
        return self.done_seconds + sum(now - began for began in self.running.values())

    def full_length(self, value: float, now: float) -> None:
        spent = self.spent(now)
        if value < self.best and spent <= self.cap:
            self.best = value
            self.trace.append([spent, value])

    def over(self, now: float) -> bool:
        spent = self.spent(now)
        return (self.best <= self.target and spent >= self.budget) or spent >= self.cap

    def result(self, now: float, trials: int) -> Dict[str, Any]:
        return {"compute_seconds": self.spent(now), "incumbent_trace": self.trace, "best": self.best,
                "trials": trials}


def space_spec(space: Any) -> List[Dict[str, Any]]:
    """A flat hyperparameter space as JSON: per leaf ``{"name": dotted path, "type": "float" | "int" |
    "categorical" | "const", ...}`` with ``low``/``high``/``log``, ``choices`` or ``value``."""
    from hpo_slurm.config.space import Categorical, Const, Double, Int, Log

    out: List[Dict[str, Any]] = []
    for path, param in space.leaves():
        name = ".".join(path)
        if isinstance(param, Double):
            out.append({"name": name, "type": "float", "low": param.minval, "high": param.maxval, "log": False})
        elif isinstance(param, Log):
            out.append({"name": name, "type": "float", "low": param.base ** param.minval,
                        "high": param.base ** param.maxval, "log": True})
        elif isinstance(param, Int):
            out.append({"name": name, "type": "int", "low": param.minval, "high": param.maxval})
        elif isinstance(param, Categorical):
            out.append({"name": name, "type": "categorical", "choices": list(param.vals)})
        elif isinstance(param, Const):
            out.append({"name": name, "type": "const", "value": param.val})
        else:
            raise TypeError(f"{name}: no peer distribution for {param!r}")
    return out


def load_objective(spec: str):
    """``module:function`` -> the function (without hpo-slurm's config machinery, so the child needs
    nothing but ``hpo_slurm.benchmarks``)."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def run_request(request: Dict[str, Any]) -> Dict[str, Any]:
    """Run one peer search (child side)."""
    args = dict(request)
    method = args.pop("method")
    args["objective"] = load_objective(args["objective"])
    if method in SYNETUNE:
        import peers_synetune

        return peers_synetune.run(method, **args)
    if method in DEHB:
        import peers_dehb

        return peers_dehb.run(method, **args)
    raise ValueError(f"unknown peer {method!r}")


def serve() -> None:
    """The child's loop: requests on stdin, answers on the original stdout, everything else to stderr."""
    import warnings

    warnings.filterwarnings("ignore")
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # a library that prints (DEHB's loguru sink is sys.stdout) cannot corrupt the answers
    sys.stdout = sys.stderr
    # benchmarks/ goes last: its distributed.py would shadow Dask's ``distributed``, which DEHB imports
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE] + [str(HERE)]
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"ok": True, "result": run_request(json.loads(line))}
        except Exception:  # reported to the parent, which raises it
            answer = {"ok": False, "error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


class PeerProcess:
    """The child interpreter, started on first use and kept for the whole benchmark run."""

    def __init__(self, python: Optional[str] = None):
        self.python = python or sys.executable
        self.child: Optional[subprocess.Popen] = None

    def check(self) -> None:
        """Fail early, with the fix, when the interpreter lacks the peers."""
        done = subprocess.run([self.python, "-c", "import syne_tune, dehb, ConfigSpace"], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"{self.python} cannot import syne_tune, dehb and ConfigSpace "
                             f"(pip install syne-tune==0.16.0 dehb==0.1.2 in a venv of its own: DEHB "
                             f"needs numpy < 2), then pass --peers-python VENV/bin/python, or leave them out with --methods:"
                             f"\n{done.stderr[-800:]}")

    def run(self, **request: Any) -> Dict[str, Any]:
        if self.child is None:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent),
                                                                          os.environ.get("PYTHONPATH")])))
            self.child = subprocess.Popen([self.python, "-u", str(Path(__file__).resolve()), "--serve"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          cwd=str(HERE.parent), env=env)
        self.child.stdin.write(json.dumps(request) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"the peers' process ({self.python}) ended: exit status {self.child.wait()}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"{request['method']} failed in the peers' process:\n{answer['error']}")
        return answer["result"]

    def close(self) -> None:
        if self.child is not None:
            self.child.stdin.close()
            self.child.wait(timeout=60)
            self.child = None


if __name__ == "__main__":
    if sys.argv[1:] != ["--serve"]:
        raise SystemExit("usage: python benchmarks/peers.py --serve (started by benchmarks/efficiency.py)")
    serve()
