"""One contract, every executor (``hpo_slurm.executors.base.Executor``): what the driver may rely on
whichever place runs its jobs.

- ``submit`` of a batch gives one ``Submitted`` per request, in request order;
- ``poll`` reports each job live (PENDING or RUNNING) until it reports a terminal state;
- a job whose trial succeeds ends COMPLETED, and its result (``Workspace.read_result``) says ``exited``;
- a job whose trial fails ends FAILED, and its result says ``failed``;
- ``cancel`` ends a running job promptly, and its result says ``stopped``;
- ``find`` finds the submitted jobs by name (what a restarted driver does);
- ``poll`` of a job the executor never saw gives UNKNOWN.

Where an executor honestly differs, its harness says so and the contract checks the difference:
the local executor's job is submitit's local controller, which exits 0 whatever the trial did, so a
failed or cancelled trial ends COMPLETED there and only its result file tells (the driver reads it).
Slurm's accounting can lag a moment behind its queue, so a Slurm job may briefly poll UNKNOWN.

``local``, ``pool`` (local worker processes) and ``simulated`` always run; ``slurm`` runs on the real local cluster (marked ``slurm``).
Trials are tiny shell commands written into run specs by ``helpers_spec.make_run``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence

import pytest

from driver_helpers import EXAMPLES, write_config
from helpers_spec import make_run
from slurm_cluster import require_cluster, slurm
from hpo_slurm.config.schema import load_config
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import RunResult, RunSpec, RunStatus
from hpo_slurm.engine.workspace import FileWorkspace
from hpo_slurm.executors.base import Executor, JobRequest, JobState, JobStatus, Submitted, Workspace
from hpo_slurm.executors.local import LocalExecutor
from hpo_slurm.executors.simulated import SimulatedExecutor
from hpo_slurm.executors.simulated_world import Faults, SimulatedWorkspace, VirtualClock
from hpo_slurm.trial import SPEC_ENV

# What the trials do: shell commands for real processes; for the simulator, how long they last.
SUCCEED, FAIL, RUN_LONG = "succeed", "fail", "run long"
TRIAL_STARTED = "trial-started"
COMMANDS = {
    SUCCEED: 'python3 -c "pass"',
    FAIL: 'python3 -c "import sys; sys.exit(3)"',
    # leaves a file next to its spec once it runs (the job's stop handlers are in place by then)
    RUN_LONG: f'python3 -c "import os, pathlib, time; pathlib.Path(os.environ[{SPEC_ENV!r}])'
              f'.with_name({TRIAL_STARTED!r}).touch(); time.sleep(600)"',
}
SIMULATED_SECONDS = {SUCCEED: 10.0, FAIL: 10.0, RUN_LONG: 1e6}
TERMINAL = frozenset(state for state in JobState if not state.live and state != JobState.UNKNOWN)


class Harness:
    """One executor under the contract, with the runs it is given and the means to let time pass.

    ``failed_trial_states`` / ``cancelled_states``: the states a job ends in when its trial fails /
    when it is cancelled. ``cancel_within_s``: how soon a cancelled job must stop being live.
    ``unknown_while_settling``: whether a job may poll UNKNOWN for a moment before its terminal state.
    ``unknown_job_id``: a job id the executor cannot have seen."""

    name = ""
    failed_trial_states: FrozenSet[JobState] = frozenset({JobState.FAILED})
    cancelled_states: FrozenSet[JobState] = frozenset({JobState.CANCELLED})
    cancel_within_s = 30.0
    unknown_while_settling = False
    timeout_s = 60.0
    unknown_job_id = ""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.layout = ExperimentLayout(tmp_path / "exp")
        self.prefix = f"hpo.contract{time.time_ns() % 10**9:09d}."
        self.kinds: Dict[str, str] = {}  # run id -> what its trial does
        self._trials = 0

    @property
    def executor(self) -> Executor:
        return self._executor

    @property
    def workspace(self) -> Workspace:
        return self._workspace

    def request(self, kind: str) -> JobRequest:
        """A run whose trial does ``kind``, its spec written as the driver writes it."""
        self._trials += 1
        spec_path = make_run(self.tmp_path, self.tmp_path, COMMANDS[kind], {"seconds": SIMULATED_SECONDS[kind]},
                             target_length=1, trial_id=self._trials)
        spec = RunSpec.read(spec_path)
        self.kinds[spec.run_id] = kind
        return JobRequest(run_id=spec.run_id, job_name=self.prefix + spec.run_id, run_dir=spec_path.parent,
                          spec_path=spec_path, gpus=0, time_minutes=5, spec=spec)

    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        return self.executor.submit(requests)

    def let_time_pass(self) -> None:
        time.sleep(0.1)

    def result(self, run_id: str) -> Optional[RunResult]:
        return self.workspace.read_result(run_id)

    def trial_running(self, run_id: str) -> bool:
        """The run's trial process has started (a RUN_LONG trial says so with a file)."""
        return (self.layout.run_dir(run_id) / TRIAL_STARTED).exists()

    def close(self) -> None:
        """Stop whatever this harness's jobs left running."""


class LocalHarness(Harness):
    name = "local"
    # submitit's local controller exits 0 whatever its task did: the result file tells the rest
    failed_trial_states = frozenset({JobState.COMPLETED})
    cancelled_states = frozenset({JobState.COMPLETED})
    cancel_within_s = 10.0
    unknown_job_id = "4194305"  # above the largest pid Linux hands out

    def __init__(self, tmp_path: Path):
        super().__init__(tmp_path)
        self._executor = LocalExecutor(gpus=0, signal_delay_s=2)
        self._workspace = FileWorkspace(self.layout)
        self._job_ids: List[str] = []

    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        submitted = self._executor.submit(requests)
        self._job_ids += [s.job_id for s in submitted]
        return submitted

    def close(self) -> None:
        self._executor.cancel(self._job_ids)


class PoolHarness(Harness):
    """A pool of two local worker processes (``slurm.pool``) in front of the local executor: a run is
    queued, then claimed by a worker, and its state read from the pool's files. Unlike submitit's local
    controller a worker records its run's exit status, so a failed trial ends FAILED; a cancelled run
    ends COMPLETED (its trial stopped as asked, its result says so) or CANCELLED (withdrawn before a
    worker took it)."""

    name = "pool"
    cancelled_states = frozenset({JobState.COMPLETED, JobState.CANCELLED})
    cancel_within_s = 10.0
    unknown_job_id = "pool:t999-r1"

    def __init__(self, tmp_path: Path):
        super().__init__(tmp_path)
        from hpo_slurm.executors.pool.executor import PoolExecutor

        config_path = write_config(EXAMPLES / "quadratic" / "random.yaml", tmp_path / "contract.yaml",
                                   name="contract", slurm={"pool": {"workers": 2, "idle_timeout": 5}})
        self._executor = PoolExecutor(LocalExecutor(gpus=0, signal_delay_s=2), load_config(str(config_path)),
                                      self.layout, self.prefix)
        self._workspace = FileWorkspace(self.layout)

    def close(self) -> None:
        self._executor.finish()
        self._executor.cancel([w.job_id for w in self._executor.workers.record.live() if w.job_id])


class SimulatedHarness(Harness):
    """One worker, so that a batch of two has one job waiting. The simulator draws failures per run
    with a probability, so a batch of failing trials gets an executor where every run fails; a batch
    mixes no failing trials with others. Time passes by one event of the simulation at a time."""

    name = "simulated"
    cancel_within_s = 0.0  # the cancelled job ends in the same call
    unknown_job_id = "999999"

    def __init__(self, tmp_path: Path):
        super().__init__(tmp_path)
        self.clock = VirtualClock(origin=1.7e9)
        self._workspace = SimulatedWorkspace()
        self._executor: Optional[SimulatedExecutor] = None

    @property
    def executor(self) -> Executor:
        assert self._executor is not None, "the simulated executor is made at the first submit"
        return self._executor

    @property
    def workspace(self) -> Workspace:
        return self._workspace

    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        failing = {self.kinds[r.run_id] == FAIL for r in requests}
        assert len(failing) == 1, "a simulated batch is all failing trials or none"
        if self._executor is None:
            faults = Faults(failures=1.0) if failing == {True} else Faults()
            self._executor = SimulatedExecutor(self._workspace, self._objective, self.clock, workers=1, faults=faults)
        for request in requests:  # what the driver does for executors that do not deliver specs
            self._workspace.prepare_run(request.run_id, request.spec.trial_id, request.spec)
        return self._executor.submit(requests)

    @staticmethod
    def _objective(hparams: Dict[str, float], length: int) -> Dict[str, float]:
        return {"loss": 0.0, "seconds": hparams["seconds"] * length}

    def trial_running(self, run_id: str) -> bool:
        return self._workspace.attempts(run_id) >= 1

    def let_time_pass(self) -> None:
        when = self._executor.next_event_time()
        if when is not None:
            self.clock.t = when
            self._executor.advance(when)


class SlurmHarness(Harness):
    name = "slurm"
    unknown_while_settling = True  # sacct may not list a job that just left squeue
    timeout_s = 240.0
    unknown_job_id = "1999999999"

    def __init__(self, tmp_path: Path):
        super().__init__(tmp_path)
        from hpo_slurm.executors.slurm.executor import SlurmExecutor

        config_path = write_config(EXAMPLES / "quadratic" / "random.yaml", tmp_path / "contract.yaml",
                                   name="contract", slurm={"partition": "debug", "mem": "500M", "time": 5})
        self._executor = SlurmExecutor(load_config(str(config_path)), self.layout.dir)
        self._workspace = FileWorkspace(self.layout)

    def let_time_pass(self) -> None:
        time.sleep(0.5)

    def close(self) -> None:
        for line in slurm("squeue", "-h", "-o", "%A|%j").splitlines():
            job_id, name = line.split("|", 1)
            if name.startswith(self.prefix):
                subprocess.run(["scancel", job_id], capture_output=True, timeout=60)


HARNESSES: Dict[str, Callable[[Path], Harness]] = {
    "local": LocalHarness, "pool": PoolHarness, "simulated": SimulatedHarness, "slurm": SlurmHarness,
}


@pytest.fixture(params=[
    "local", "pool", "simulated", pytest.param("slurm", marks=pytest.mark.slurm),
])
def harness(request, tmp_path):
    if request.param == "slurm":
        require_cluster()
    made = HARNESSES[request.param](tmp_path)
    yield made
    made.close()


# ---- watching jobs ------------------------------------------------------------------------------------
def watch(harness: Harness, job_ids: Sequence[str], until: Callable[[Dict[str, JobStatus]], bool],
          timeout: Optional[float] = None) -> Dict[str, List[JobState]]:
    """Poll the jobs, letting time pass between polls, until ``until(last statuses)``; every job's
    states as polled, a repeated state kept once. Fails after ``timeout`` seconds of real time."""
    seen: Dict[str, List[JobState]] = {job_id: [] for job_id in job_ids}
    deadline = time.monotonic() + (harness.timeout_s if timeout is None else timeout)
    while True:
        statuses = harness.executor.poll(job_ids)
        assert set(statuses) == set(job_ids), f"poll answered for {sorted(statuses)}, asked {sorted(job_ids)}"
        for job_id, status in statuses.items():
            if not seen[job_id] or seen[job_id][-1] != status.state:
                seen[job_id].append(status.state)
        if until(statuses):
            return seen
        assert time.monotonic() < deadline, f"{harness.name}: jobs still {seen} after the timeout"
        harness.let_time_pass()


def ended(harness: Harness) -> Callable[[Dict[str, JobStatus]], bool]:
    """Every job has reported a terminal state once. Before that, a job must not poll UNKNOWN (but for
    Slurm's settling); after it, what a poll says no longer matters (the driver stops asking: the
    local executor forgets a job once it has reported its end)."""
    reported: set = set()

    def check(statuses: Dict[str, JobStatus]) -> bool:
        lost = [job_id for job_id, status in statuses.items() if job_id not in reported
                and status.state == JobState.UNKNOWN and not harness.unknown_while_settling]
        assert not lost, f"{harness.name}: submitted jobs {lost} polled UNKNOWN before they ended"
        reported.update(job_id for job_id, status in statuses.items() if status.state in TERMINAL)
        return reported == set(statuses)

    return check


def first_terminal(harness: Harness, states: List[JobState]) -> JobState:
    """The job's first state after its live ones, which must be terminal; only live states before it."""
    settled = [s for s in states if not (harness.unknown_while_settling and s == JobState.UNKNOWN)]
    index = next(i for i, state in enumerate(settled) if not state.live)
    assert all(state.live for state in settled[:index])
    assert settled[index] in TERMINAL, f"{harness.name}: the job went from live to {settled[index]}"
    return settled[index]


# ---- the contract -------------------------------------------------------------------------------------
def test_submit_gives_one_submitted_per_request_in_request_order(harness):
    requests = [harness.request(SUCCEED) for _ in range(3)]
    submitted = harness.submit(requests)
    assert len(submitted) == 3 and all(isinstance(s, Submitted) for s in submitted)
    job_ids = [s.job_id for s in submitted]
    assert len(set(job_ids)) == 3 and all(job_ids)
    # the order is the requests': each run's job is the one find() names for it
    assert harness.executor.find(requests) == {r.run_id: s.job_id for r, s in zip(requests, submitted)}
    watch(harness, job_ids, ended(harness))


def test_jobs_are_live_until_a_successful_trial_ends_them_completed_with_its_result(harness):
    requests = [harness.request(SUCCEED) for _ in range(2)]
    job_ids = [s.job_id for s in harness.submit(requests)]
    seen = watch(harness, job_ids, ended(harness))
    for request, job_id in zip(requests, job_ids):
        assert seen[job_id][0].live, f"{harness.name}: job {job_id} was never seen live: {seen[job_id]}"
        assert first_terminal(harness, seen[job_id]) == JobState.COMPLETED, seen[job_id]
        result = harness.result(request.run_id)
        assert result is not None and result.status == RunStatus.EXITED and result.exit_code == 0


def test_a_job_whose_trial_fails_ends_failed_with_a_failed_result(harness):
    requests = [harness.request(FAIL)]
    [job_id] = [s.job_id for s in harness.submit(requests)]
    seen = watch(harness, [job_id], ended(harness))
    assert first_terminal(harness, seen[job_id]) in harness.failed_trial_states, seen[job_id]
    result = harness.result(requests[0].run_id)
    assert result is not None and result.status == RunStatus.FAILED


def test_cancel_ends_a_running_job_promptly(harness):
    requests = [harness.request(RUN_LONG)]
    [job_id] = [s.job_id for s in harness.submit(requests)]
    watch(harness, [job_id], lambda statuses: statuses[job_id].state == JobState.RUNNING
          and harness.trial_running(requests[0].run_id))
    cancelled_at = time.monotonic()
    harness.executor.cancel([job_id])
    seen = watch(harness, [job_id], ended(harness), timeout=max(harness.cancel_within_s, 0.5))
    assert time.monotonic() - cancelled_at <= max(harness.cancel_within_s, 0.5)
    assert first_terminal(harness, seen[job_id]) in harness.cancelled_states, seen[job_id]
    # the trial got the signal and ended as asked (real processes write it as their job ends)
    wait_for_result = time.monotonic() + harness.cancel_within_s
    while harness.result(requests[0].run_id) is None and time.monotonic() < wait_for_result:
        time.sleep(0.1)
    result = harness.result(requests[0].run_id)
    assert result is not None and result.status == RunStatus.STOPPED


def test_cancel_skips_jobs_that_already_ended(harness):
    requests = [harness.request(SUCCEED)]
    [job_id] = [s.job_id for s in harness.submit(requests)]
    watch(harness, [job_id], ended(harness))
    harness.executor.cancel([job_id])  # no error
    assert harness.result(requests[0].run_id).status == RunStatus.EXITED


def test_find_names_only_the_runs_asked_for(harness):
    requests = [harness.request(SUCCEED) for _ in range(2)]
    submitted = harness.submit(requests)
    never_submitted = harness.request(SUCCEED)
    found = harness.executor.find([requests[1], never_submitted])
    assert found == {requests[1].run_id: submitted[1].job_id}
    watch(harness, [s.job_id for s in submitted], ended(harness))


def test_poll_of_a_job_it_never_saw_is_unknown(harness):
    harness.submit([harness.request(SUCCEED)])  # the executor is in use
    unknown = harness.unknown_job_id
    assert harness.executor.poll([unknown])[unknown].state == JobState.UNKNOWN
