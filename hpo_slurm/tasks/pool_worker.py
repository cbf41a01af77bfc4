"""What a pool's worker job runs (``slurm.pool``): take the search's queued runs one after another and
run each in a process of its own, until nothing comes for ``idle_timeout`` seconds, the search is
over, or a stop signal says the job's allocation ends. Imports nothing heavy.

The hand-over (``core.pool_files``): a worker claims the oldest queued run by renaming its queue file
into its own ``claimed/`` folder, which only one worker can do, runs it as
``python -m hpo_slurm.tasks.pool_run SPEC`` (``tasks.job.run_job``, as a job of its own would), and then
writes ``ended/<run>.json`` with the process's exit status. The run writes its result, metrics and
checkpoints where every run does, and its output to ``runs/<run>/<worker>_log.out`` and ``.err``.

Stop signals the worker receives (a preemption's SIGTERM, the time limit's warning) go on to the run's
process group (the trial checkpoints as in a job of its own; Slurm signals the ranks of a distributed
run's step itself) and the worker takes no more work: it ends once the run has. Nor does it take a run
once the time-limit warning is due (``signal_delay`` before its job's end), which also covers a worker
in the batch step, where that warning does not reach. A run whose stop file the driver
writes (the search no longer needs it) gets SIGTERM the same way, and a run's process gets SIGTERM when
its worker dies.
When Slurm requeues the worker's job (a preemption, a node failure), its next start first marks the run
the killed start held as abandoned, so the driver resumes that run from its checkpoint elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.core.interruption import ALLOCATION_END_ENV
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import ProtocolError, RunSpec
from hpo_slurm.core.pool_files import HEARTBEAT_S, PoolPaths, list_names, read_optional, run_of_key
from hpo_slurm.tasks.job import POOLED_RUN_ENV
from hpo_slurm.tasks.slurm_task import task_index
from hpo_slurm.trial import STOP_SIGNALS

POLL_S = 0.5  # how often an idle worker looks at the queue, and a busy one at its run's stop file
PR_SET_PDEATHSIG = 1  # prctl(2)


def serve(experiment_dir: str, names: Sequence[str], idle_timeout_s: float,
          time_limit_s: Optional[float] = None, signal_delay_s: float = 0.0) -> int:
    """The entry of a worker job (one of ``names``, picked by its array task index): serve the pool of
    the experiment in ``experiment_dir``; returns how many runs it ran. ``time_limit_s``: the job's
    time limit, from which a run's process learns when the allocation ends when Slurm cannot say;
    within ``signal_delay_s`` of that end the worker takes no more runs, also when the warning reaches
    only the job's steps (a worker in the batch step)."""
    name = names[task_index(len(names))]
    return Worker(PoolPaths(Path(experiment_dir)), name, idle_timeout_s, time_limit_s, signal_delay_s).serve()


class Worker:
    """One start of one worker job. ``serve()`` is its whole life."""

    def __init__(self, paths: PoolPaths, name: str, idle_timeout_s: float, time_limit_s: Optional[float] = None,
                 signal_delay_s: float = 0.0):
        self.paths = paths
        self.name = name
        self.idle_timeout_s = idle_timeout_s
        self.layout = ExperimentLayout(paths.experiment_dir)
        self.started = time.time()
        self.allocation_end = self.started + time_limit_s if time_limit_s else None
        # no new run once the time-limit warning is due
        self.last_claim = self.allocation_end - signal_delay_s if self.allocation_end else None
        self.stop_signal: Optional[int] = None
        self.child: Optional[subprocess.Popen] = None
        self.runs: List[str] = []
        self.idle_since: Optional[float] = None
        self._last_beat = 0.0

    # ---- life ---------------------------------------------------------------------------------------
    def serve(self) -> int:
        for name in STOP_SIGNALS:
            signal.signal(getattr(signal, name), self._on_stop_signal)
        for folder in (self.paths.claimed(self.name), self.paths.ended(self.name)):
            folder.mkdir(parents=True, exist_ok=True)
        self._abandon_held()
        self.idle_since = time.time()
        self._beat(None, self.idle_since)
        while self.stop_signal is None and (self.last_claim is None or time.time() < self.last_claim):
            entry = self._claim()
            if entry is not None:
                self._run(entry)
                self.idle_since = time.time()
                self._beat(None, self.idle_since)
                continue
            if self.paths.closed.exists() or self.layout.stop_request.exists():  # the search is over
                break
            if time.time() - self.idle_since >= self.idle_timeout_s:
                break
            if time.time() - self._last_beat >= HEARTBEAT_S:
                self._beat(None, self.idle_since)
            time.sleep(POLL_S)
        self._beat(None, None, ended=time.time())
        return len(self.runs)

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        if self.child is not None:
            _signal_group(self.child.pid, signum)

    def _abandon_held(self) -> None:
        """Runs an earlier start of this worker's job claimed and never finished (it was killed)."""
        for file_name in list_names(self.paths.claimed(self.name)):
            run_id = file_name[:-len(".json")]
            ended = self.paths.ended(self.name, run_id)
            if not ended.exists():
                write_json_atomic(ended, {"abandoned": True, "worker": self.name, "time": time.time()})

    def _claim(self) -> Optional[Dict[str, Any]]:
        """The oldest queued run, now this worker's (None when the queue is empty). The heartbeat names
        the run before the rename that claims it, so a start of this job killed in between is known to
        have held it. A stop signal that came meanwhile puts the run back in the queue."""
        tried = False
        for key in list_names(self.paths.queue):
            run_id = run_of_key(key)
            source, target = self.paths.queue / key, self.paths.claimed(self.name, run_id)
            self._beat(run_id, None)
            tried = True
            try:
                os.rename(source, target)
            except FileNotFoundError:  # another worker took it, or the driver withdrew it
                if not target.exists():  # (on NFS a retried rename that had succeeded says so too)
                    continue
            if self.stop_signal is not None:
                os.rename(target, source)
                break
            entry = read_optional(target)
            if entry is None or entry.get("run") != run_id:  # not a queue file this hpo-slurm wrote
                write_json_atomic(self.paths.ended(self.name, run_id), {"exit_code": 2, "worker": self.name,
                                                                       "message": "unreadable queue entry"})
                continue
            return entry
        if tried:
            self._beat(None, self.idle_since)
        return None

    def _run(self, entry: Dict[str, Any]) -> None:
        """Run one claimed run to its end and record how its process ended."""
        run_id, spec_path = entry["run"], entry["spec"]
        self.runs.append(run_id)
        layout = _layout_of(spec_path, self.layout)
        run_dir = layout.run_dir(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env[POOLED_RUN_ENV] = self.name
        if self.allocation_end:
            env[ALLOCATION_END_ENV] = f"{self.allocation_end:.3f}"
        with open(run_dir / f"{self.name}_log.out", "ab") as out, open(run_dir / f"{self.name}_log.err", "ab") as err:
            self.child = subprocess.Popen([sys.executable, "-u", "-m", "hpo_slurm.tasks.pool_run", spec_path],
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                          start_new_session=True, preexec_fn=_stop_with_parent(os.getpid()))
            if self.stop_signal is not None:  # a signal that came while it was starting
                _signal_group(self.child.pid, self.stop_signal)
            stop_file = layout.run_stop_file(run_id)
            told_to_stop = False
            while True:
                try:
                    code = self.child.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if not told_to_stop and (stop_file.exists() or layout.stop_request.exists()):
                    told_to_stop = True
                    _signal_group(self.child.pid, signal.SIGTERM)
                if time.time() - self._last_beat >= HEARTBEAT_S:
                    self._beat(run_id, None)
        self.child = None
        if code < 0:  # killed by a signal: the status a shell gives it
            code = 128 - code
        write_json_atomic(self.paths.ended(self.name, run_id),
                          {"exit_code": code, "worker": self.name, "time": time.time()})

    def _beat(self, run_id: Optional[str], idle_since: Optional[float], ended: Optional[float] = None) -> None:
        """``alive.json``: which job this is, what it holds, since when it idles, when it ended."""
        self._last_beat = time.time()
        write_json_atomic(self.paths.alive(self.name), {
            "worker": self.name,
            "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"),
            "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "host": socket.gethostname(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(),
            "started": self.started,
            "run": run_id,
            "runs": len(self.runs),
            "idle_since": idle_since,
            "ended": ended,
            "beat": self._last_beat,
        }, durable=False)


def _layout_of(spec_path: str, default: ExperimentLayout) -> ExperimentLayout:
    """The layout of the experiment a run's spec names (the pool's own when the spec cannot be read:
    the run's process then fails on it and says why)."""
    try:
        return ExperimentLayout(Path(RunSpec.read(Path(spec_path)).experiment_dir))
    except (OSError, ProtocolError):
        return default


def _stop_with_parent(parent: int) -> Callable[[], None]:
    """What a run's process does before it starts: ask for SIGTERM when the worker ``parent`` dies
    (Linux), so a worker killed outright stops its run too (which checkpoints as on a preemption);
    a worker already gone ends it at once."""

    def in_child() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        except (OSError, AttributeError):  # not Linux: the run ends with the job's allocation instead
            return
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass

