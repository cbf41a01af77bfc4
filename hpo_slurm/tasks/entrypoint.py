"""Run a trial's entrypoint once in this process's context and say how it ended. Imports nothing heavy.

Two entrypoint forms:
- a shell command (``python3 train.py --fast``), run by ``/bin/sh`` in the experiment's context folder
  with ``HPO_SLURM_SPEC`` set; stop signals are forwarded to its whole process group;
- ``module:function``, imported from the context folder and called in this process with the
  ``TrialContext``; when the attribute is a class (Determined's legacy ``model_def:MyTrial``, a
  ``PyTorchTrial``), ``hpo_slurm.compat.pytorch.harness.run_trial_class`` runs it instead.
Either way the folder ``hpo_slurm.compat.package_choice`` chooses (hpo-slurm's ``determined``, a guard
that says to choose, or none) goes first on the trial's module path: the shell command's
``PYTHONPATH``, this process's ``sys.path`` after the context folder. A choice that is not one
(``HPO_SLURM_DETERMINED``) fails the run before anything starts.
A job runs it once for a trial of one process (``tasks.job``), each rank once for a trial of several
(``tasks.rank``).
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from hpo_slurm.compat.package_choice import PackageChoiceError, site_path, trial_search_path
from hpo_slurm.core.fsio import read_json
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import RunResult, RunSpec, RunStatus, StopReason
from hpo_slurm.trial import (SPEC_ENV, STOP_SIGNALS, InvalidHP, TrialContext, install_stop_handlers,
                             stop_requested)

MODULE_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_module_entrypoint(entrypoint: str) -> bool:
    return bool(MODULE_ENTRYPOINT.match(entrypoint.strip()))


def run_entrypoint(spec: RunSpec, spec_path: str, on_start: Optional[Callable[[int], None]] = None) -> RunResult:
    """Run ``spec``'s entrypoint to its end (the spec is read from ``spec_path`` by the trial) and
    return how it ended; a search that was stopped before it began runs nothing. ``on_start`` is
    told the process group of a shell command's trial once it exists (a launcher that must be able
    to kill it)."""
    entrypoint = spec.entrypoint.strip()
    if search_stopped(spec):  # cancelled before it started (a requeued job, or one the driver gave up on)
        return outcome(0, StopReason.SEARCH_STOPPED, "")
    if is_module_entrypoint(entrypoint):
        return _run_function(entrypoint, spec, spec_path)
    return _run_command(entrypoint, spec, spec_path, on_start)


def _choice_failed(error: PackageChoiceError) -> RunResult:
    print(f"hpo-slurm: {error}", file=sys.stderr, flush=True)
    return RunResult(RunStatus.FAILED, 2, message=str(error))


class StopSignals:
    """The stop signals this process receives while it waits for the processes it started: each is
    passed to ``forward(signum)``, and the first one's reason (``trial.install_stop_handlers``) is kept in
    ``reason``. ``ignore()`` once they have ended: a late signal must not kill this process before it
    writes how they ended."""

    def __init__(self, spec: RunSpec, forward: Callable[[int], None]):
        self.reason: Optional[str] = None

        def keep_first(reason: str) -> None:
            if self.reason is None:
                self.reason = reason

        install_stop_handlers(keep_first, spec, forward)

    def ignore(self) -> None:
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def _run_command(entrypoint: str, spec: RunSpec, spec_path: str,
                 on_start: Optional[Callable[[int], None]] = None) -> RunResult:
    env = dict(os.environ)
    env[SPEC_ENV] = str(spec_path)
    # `python3 train.py` must find the interpreter hpo-slurm runs in, as an activated venv would.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    try:
        determined = site_path(trial_search_path(spec.context_dir, env), env)
    except PackageChoiceError as exc:
        return _choice_failed(exc)
    if determined is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (determined, env.get("PYTHONPATH", "")) if p)
    # The shell traps the stop signals (a trapped signal is reset to its default in the trial), so it
    # waits for the trial to checkpoint and passes on its exit status instead of dying first.
    child = subprocess.Popen(
        ["/bin/sh", "-c", f"trap : {' '.join(n[3:] for n in STOP_SIGNALS)}\n{entrypoint}"],
        cwd=spec.context_dir, env=env, start_new_session=True,
    )
    if on_start is not None:
        on_start(child.pid)

    signals = StopSignals(spec, lambda signum: kill_group(child.pid, signum))
    code = child.wait()
    _wait_for_group(child.pid)
    signals.ignore()
    stop_reason = signals.reason
    if search_stopped(spec):
        stop_reason = StopReason.SEARCH_STOPPED
    return outcome(code, stop_reason, f"`{entrypoint}` exited with status {code}")


def _run_function(entrypoint: str, spec: RunSpec, spec_path: str) -> RunResult:
    module_name, function_name = entrypoint.split(":")
    os.environ[SPEC_ENV] = str(spec_path)
    try:
        determined = site_path(trial_search_path(spec.context_dir, os.environ))
    except PackageChoiceError as exc:
        return _choice_failed(exc)
    os.chdir(spec.context_dir)
    if determined is not None:
        sys.path.insert(0, determined)
    sys.path.insert(0, spec.context_dir)
    ctx = TrialContext(read_json(Path(spec_path)))  # ctx.spec is the file's object, as trial.init() gives
    install_stop_handlers(ctx.request_stop, spec)
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        if isinstance(function, type):  # a Determined Trial class
            importlib.import_module("hpo_slurm.compat.pytorch.harness").run_trial_class(function)
        else:
            function(ctx)
    except InvalidHP as exc:
        return RunResult(RunStatus.INVALID_HP, 0, message=str(exc))
    except SystemExit as exc:  # sys.exit() in the trial ends the trial, not the job wrapper
        # sys.exit(True) is status 1, sys.exit("message") too, sys.exit() and sys.exit(None) are 0
        code = int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return outcome(code, ctx.stop_reason, f"`{entrypoint}` called sys.exit({exc.code!r})")
    except Exception:  # the trial's own error: recorded, then the job fails
        traceback.print_exc()
        message = traceback.format_exc(limit=-1).strip().splitlines()[-1]
        return outcome(1, ctx.stop_reason, f"`{entrypoint}` raised {message}")
    ctx.should_stop()  # picks up a stop request that arrived while returning
    return outcome(0, ctx.stop_reason, "")


def search_stopped(spec: RunSpec) -> bool:
    return stop_requested(ExperimentLayout(Path(spec.experiment_dir)), spec.run_id)


def kill_group(group: int, signum: int) -> None:
    """``signum`` to process group ``group``, which may be gone already."""
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_for_group(pgid: int, limit_s: float = 60.0) -> None:
    """Wait (bounded) until every process of the trial's group has exited: a trial's helper
    processes may still be writing its checkpoint."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def outcome(code: int, stop_reason: Optional[str], failure: str) -> RunResult:
    """``stopped``: it ended because it was asked to (preemption, time limit, the search);
    ``exited``: the script returned 0 (the driver checks it reached its target); ``failed``: anything
    else, with ``failure`` as its message."""
    if stop_reason is not None:
        return RunResult(RunStatus.STOPPED, code, stop_reason=stop_reason)
    if code == 0:
        return RunResult(RunStatus.EXITED, 0)
    return RunResult(RunStatus.FAILED, code, message=failure)
