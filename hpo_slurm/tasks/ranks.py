"""Launch, watch and merge the ranks of a trial that runs as several processes. Imports nothing heavy.

A run whose spec has ``world_size`` > 1 (``resources.slots_per_trial`` GPUs) is started by its job as
``world_size`` processes, each ``python -m hpo_slurm.tasks.rank`` (which sets the rank's environment,
runs the entrypoint and writes ``runs/<run>/ranks/rank-<k>.json``):

- Under Slurm (the job holds an allocation: ``SLURM_JOB_ID``), as ONE ``srun`` step over the job's
  nodes with ``--kill-on-bad-exit=1``: a rank that fails ends every rank of the step, and no rank is
  left behind on any node. Slurm delivers the preemption SIGTERM and a ``--signal`` warning to the
  ranks of the step itself; a stop signal the job's own process receives (a sweep's ``B:`` warning)
  is passed to srun, which relays it to every rank.
- Elsewhere (the local executor), as local processes like ``torchrun --standalone``: stop signals the
  job receives are passed to every rank; when a rank fails the others get SIGTERM, then SIGKILL after
  ``GRACE_S`` seconds.

Every rank sees the same ``MASTER_ADDR`` (the job's first node, where rank 0 runs) and a
``MASTER_PORT`` free on it when the job started, so two trials sharing a node never collide.
``merge`` turns the ranks' endings into the run's one ``RunResult``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from hpo_slurm.core.fsio import read_json
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import ProtocolError, RunResult, RunSpec, RunStatus, StopReason
from hpo_slurm.tasks.entrypoint import StopSignals, kill_group
from hpo_slurm.tasks.rank import rank_environment
from hpo_slurm.trial import ATTEMPT_ENV

GRACE_S = 15.0  # local ranks: how long the others get to exit after one failed
POLL_S = 0.05


def launch_ranks(spec: RunSpec, spec_path: str, attempt: int) -> RunResult:
    """Run every rank of ``spec`` to its end and return their merged ending (``merge``)."""
    env = dict(os.environ)
    env.update(MASTER_ADDR=master_address(), MASTER_PORT=str(free_port()), **{ATTEMPT_ENV: str(attempt)})
    command = [sys.executable, "-u", "-m", "hpo_slurm.tasks.rank", spec_path]
    layout = ExperimentLayout(Path(spec.experiment_dir))
    layout.ranks_dir(spec.run_id).mkdir(parents=True, exist_ok=True)
    under_slurm = bool(os.environ.get("SLURM_JOB_ID"))
    ranks: List["subprocess.Popen[bytes]"] = []

    def forward(signum: int) -> None:
        for process in ranks:
            if under_slurm:  # Slurm signals a step's ranks itself; a warning sent to the batch shell
                _signal(process, signum)  # only (a sweep's --signal=B:...) reaches them through srun
            else:
                kill_group(process.pid, signum)

    signals = StopSignals(spec, forward)  # before any rank starts: a signal in between must not orphan them
    if under_slurm:
        srun = ["srun", "--kill-on-bad-exit=1", "--label", f"--nodes={spec.nodes}",
                f"--ntasks={spec.world_size}", f"--ntasks-per-node={spec.ranks_per_node}"]
        ranks.append(subprocess.Popen(srun + command[:-1] + ["--slurm", spec_path], env=env, cwd=spec.context_dir,
                                      start_new_session=True))
    else:
        for rank in range(spec.world_size):
            ranks.append(subprocess.Popen(command, env={**env, **rank_environment(spec, rank, local_rank=rank, node_rank=0)},
                                          cwd=spec.context_dir, start_new_session=True))
    codes = _wait_all(ranks, lambda: _trial_groups(layout, spec))
    signals.ignore()
    results = [_read_rank_result(layout.rank_result_file(spec.run_id, rank)) for rank in range(spec.world_size)]
    return merge(results, signals.reason, max(codes, key=abs))


def merge(results: Sequence[Optional[RunResult]], stop_reason: Optional[str], code: int) -> RunResult:
    """The run's ending from its ranks' (None: the rank wrote none, it was killed), the stop reason
    the job itself received (None: none) and the launcher's exit code. In order: a rank that failed
    fails the run (the lowest such rank names the cause; ranks ended because of it only stopped);
    a rank that raised InvalidHP makes the run's hyperparameters invalid; a rank without an ending
    fails the run unless the job itself was told to stop (then the ranks were killed for it); a rank
    that stopped, or a stop signal to the job, makes the run stopped, for the search's reason if any
    rank saw it, else the job's own reason, else the ranks'; otherwise the ranks all exited."""
    for rank, result in enumerate(results):
        if result is not None and result.status is RunStatus.FAILED:
            return RunResult(RunStatus.FAILED, result.exit_code or 1, message=f"rank {rank}: {result.message}")
    for result in results:
        if result is not None and result.status is RunStatus.INVALID_HP:
            return result
    missing = [rank for rank, result in enumerate(results) if result is None]
    if missing and stop_reason is None:
        return RunResult(RunStatus.FAILED, code or 1, message=f"rank {missing[0]} ended without a result "
                                                               f"(the ranks' launcher exited with status {code})")
    reasons = [r.stop_reason for r in results if r is not None and r.status is RunStatus.STOPPED]
    if reasons or stop_reason is not None:
        if StopReason.SEARCH_STOPPED in reasons:
            return RunResult(RunStatus.STOPPED, 0, stop_reason=StopReason.SEARCH_STOPPED)
        return RunResult(RunStatus.STOPPED, 0, stop_reason=stop_reason if stop_reason is not None else reasons[0])
    return RunResult(RunStatus.EXITED, 0)


def master_address() -> str:
    """Where rank 0 listens: this job's first node (a job's own process runs there), by its Slurm
    name when that resolves, else by this host's name; 127.0.0.1 outside Slurm."""
    if not os.environ.get("SLURM_JOB_ID"):
        return "127.0.0.1"
    for name in (os.environ.get("SLURMD_NODENAME"), socket.gethostname()):
        if name and _resolves(name):
            return name
    return socket.gethostname()


def node_names() -> List[str]:
    """The nodes this job holds: Slurm's node list, expanded by ``scontrol show hostnames`` (which asks
    no daemon) when it names several, or this host's name outside Slurm."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        return [socket.gethostname()]
    if not any(c in nodelist for c in "[,"):  # one node, named as it is
        return [nodelist]
    try:
        done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return [nodelist]
    names = done.stdout.split()
    return names if done.returncode == 0 and names else [nodelist]


def free_port() -> int:
    """A TCP port free on this host now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def _resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, None)
    except OSError:
        return False
    return True


def _wait_all(ranks: List["subprocess.Popen[bytes]"], trial_groups: Callable[[], List[int]]) -> List[int]:
    """Every rank's exit code. Once one fails, the others get SIGTERM, then SIGKILL after ``GRACE_S``,
    as do the trials' own process groups (``trial_groups()``: a shell command's trial runs in a
    session of its own)."""
    killing_at: Optional[float] = None
    while True:
        codes = [process.poll() for process in ranks]
        if all(code is not None for code in codes):
            return [int(code) for code in codes if code is not None]
        if killing_at is None and any(code not in (None, 0) for code in codes):
            killing_at = time.monotonic() + GRACE_S
            for process, code in zip(ranks, codes):
                if code is None:
                    kill_group(process.pid, signal.SIGTERM)
        elif killing_at is not None and time.monotonic() >= killing_at:
            for process in ranks:
                kill_group(process.pid, signal.SIGKILL)
            for group in trial_groups():
                kill_group(group, signal.SIGKILL)
        time.sleep(POLL_S)


def _trial_groups(layout: ExperimentLayout, spec: RunSpec) -> List[int]:
    groups = []
    for rank in range(spec.world_size):
        try:
            groups.append(int(layout.rank_group_file(spec.run_id, rank).read_text()))
        except (OSError, ValueError):
            continue
    return groups


def _signal(process: "subprocess.Popen[bytes]", signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass


def _read_rank_result(path: Path) -> Optional[RunResult]:
    try:
        return RunResult.from_json(read_json(path), str(path))
    except (OSError, ValueError, ProtocolError):
        return None
