"""What runs inside each job: start the trial's entrypoint with its spec, forward stop signals, and
record how the attempt ended in ``runs/<run>/result.json``. Imports nothing heavy.

Two entrypoint forms:
- a shell command (``python3 train.py --fast``), run by ``/bin/sh`` in the experiment's context folder
  with ``HPO_SLURM_SPEC`` set; stop signals are forwarded to its whole process group;
- ``module:function``, imported from the context folder and called in this process with the
  ``TrialContext``.
Hyperparameters reach the trial only through the spec file, never through a command line. Jobs of
executors that deliver specs in a batch manifest write their spec file first (``write_spec_file``).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from hpo_slurm.core.fsio import append_line, read_json, write_json_atomic
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import RunResult, RunSpec, RunStatus, StopReason
from hpo_slurm.trial import (
    INVALID_HP_FILE, SPEC_ENV, STOP_SIGNALS, InvalidHP, TrialContext, install_stop_handlers, stop_reason_for,
)

MODULE_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class TrialFailed(RuntimeError):
    """The trial's script failed; raised so the job itself ends as failed."""


def is_module_entrypoint(entrypoint: str) -> bool:
    return bool(MODULE_ENTRYPOINT.match(entrypoint.strip()))


def write_spec_file(spec: RunSpec) -> str:
    """Create ``runs/<run>/spec.json`` (and the run's and trial's folders) from ``spec`` unless the
    file exists (an earlier attempt of the same job wrote it); returns its path."""
    layout = ExperimentLayout(Path(spec.experiment_dir))
    path = layout.spec_file(spec.run_id)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        layout.trial_dir(spec.trial_id).mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, spec.to_json(), durable=False)
    return str(path)


def run_job(spec_path: str) -> RunResult:
    """Run one attempt of the run whose ``spec.json`` is ``spec_path``. Returns the result it also
    writes to ``result.json``; raises ``TrialFailed`` when the trial failed so the scheduler records
    the job as failed, and ``protocol.ProtocolError`` for a spec it cannot read (before the attempt
    is recorded)."""
    spec_path = os.path.abspath(spec_path)
    spec = RunSpec.read(Path(spec_path))
    layout = ExperimentLayout(Path(spec.experiment_dir))
    run_id = spec.run_id
    run_dir = layout.run_dir(run_id)
    layout.result_file(run_id).unlink(missing_ok=True)
    (run_dir / INVALID_HP_FILE).unlink(missing_ok=True)
    attempt = _record_attempt(layout, run_id)

    entrypoint = spec.entrypoint.strip()
    if _search_stopped(spec):  # cancelled before it started (a requeued job, or one the driver gave up on)
        result = _outcome(0, StopReason.SEARCH_STOPPED, "")
    elif is_module_entrypoint(entrypoint):
        result = _run_function(entrypoint, spec, spec_path)
    else:
        result = _run_command(entrypoint, spec, spec_path)
    if (run_dir / INVALID_HP_FILE).exists():
        message = read_json(run_dir / INVALID_HP_FILE).get("message", "")
        result = replace(result, status=RunStatus.INVALID_HP, message=message)
    result = replace(result, attempt=attempt, ended=time.time())
    write_json_atomic(layout.result_file(run_id), result.to_json())
    if result.status is RunStatus.FAILED:
        raise TrialFailed(f"run {run_id}: {'failed' if result.message is None else result.message}")
    return result


def _record_attempt(layout: ExperimentLayout, run_id: str) -> int:
    path = layout.attempts_file(run_id)
    previous = sum(1 for _ in open(path, encoding="utf-8")) if path.exists() else 0
    line = {
        "attempt": previous + 1,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "time": time.time(),
    }
    append_line(path, json.dumps(line))
    return previous + 1


def _run_command(entrypoint: str, spec: RunSpec, spec_path: str) -> RunResult:
    env = dict(os.environ)
    env[SPEC_ENV] = str(spec_path)
    # `python3 train.py` must find the interpreter hpo-slurm runs in, as an activated venv would.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    # The shell traps the stop signals (a trapped signal is reset to its default in the trial), so it
    # waits for the trial to checkpoint and passes on its exit status instead of dying first.
    child = subprocess.Popen(
        ["/bin/sh", "-c", f"trap : {' '.join(n[3:] for n in STOP_SIGNALS)}\n{entrypoint}"],
        cwd=spec.context_dir, env=env, start_new_session=True,
    )
    stop_reason: Optional[str] = None
    started = time.monotonic()

    def forward(signum: int, frame: Any) -> None:
        nonlocal stop_reason
        if stop_reason is None:
            stop_reason = stop_reason_for(signum, spec, time.monotonic() - started)
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), forward)
    code = child.wait()
    _wait_for_group(child.pid)
    for name in STOP_SIGNALS:  # the trial is over: a late signal must not kill us before the result is written
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if _search_stopped(spec):
        stop_reason = StopReason.SEARCH_STOPPED
    return _outcome(code, stop_reason, f"`{entrypoint}` exited with status {code}")


def _run_function(entrypoint: str, spec: RunSpec, spec_path: str) -> RunResult:
    module_name, function_name = entrypoint.split(":")
    os.environ[SPEC_ENV] = str(spec_path)
    os.chdir(spec.context_dir)
    sys.path.insert(0, spec.context_dir)
    ctx = TrialContext(read_json(Path(spec_path)))  # ctx.spec is the file's object, as trial.init() gives
    install_stop_handlers(ctx.request_stop, spec)
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        function(ctx)
    except InvalidHP as exc:
        return RunResult(RunStatus.INVALID_HP, 0, message=str(exc))
    except SystemExit as exc:  # sys.exit() in the trial ends the trial, not the job wrapper
        # sys.exit(True) is status 1, sys.exit("message") too, sys.exit() and sys.exit(None) are 0
        code = int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return _outcome(code, ctx.stop_reason, f"`{entrypoint}` called sys.exit({exc.code!r})")
    except Exception:  # the trial's own error: recorded, then the job fails
        traceback.print_exc()
        message = traceback.format_exc(limit=-1).strip().splitlines()[-1]
        return _outcome(1, ctx.stop_reason, f"`{entrypoint}` raised {message}")
    ctx.should_stop()  # picks up a stop request that arrived while returning
    return _outcome(0, ctx.stop_reason, "")


def _search_stopped(spec: RunSpec) -> bool:
    layout = ExperimentLayout(Path(spec.experiment_dir))
    return layout.stop_request.exists() or layout.run_stop_file(spec.run_id).exists()


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


def _outcome(code: int, stop_reason: Optional[str], failure: str) -> RunResult:
    """``stopped``: it ended because it was asked to (preemption, time limit, the search);
    ``exited``: the script returned 0 (the driver checks it reached its target); ``failed``: anything
    else, with ``failure`` as its message."""
    if stop_reason is not None:
        return RunResult(RunStatus.STOPPED, code, stop_reason=stop_reason)
    if code == 0:
        return RunResult(RunStatus.EXITED, 0)
    return RunResult(RunStatus.FAILED, code, message=failure)
