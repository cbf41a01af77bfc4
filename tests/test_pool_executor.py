"""The pool executor's decisions about runs whose workers the scheduler reports in a given state, on real
files and real local worker processes where they matter: a refused worker submission fails the queued
runs instead of leaving them waiting, a worker seen queued that claims a run after the query is
running it (also while accounting lags its start), a requeued worker's run is resumed, a run found nowhere is asked about again before it is
gone, and a damaged record of the workers stops the driver instead of reusing worker names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import pytest

from driver_helpers import EXAMPLES, write_config
from helpers_spec import make_run
from hpo_slurm.config.schema import load_config
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.pool_files import PoolPaths, pool_job_id
from hpo_slurm.core.protocol import RunSpec
from hpo_slurm.executors.base import (SUBMISSION_REFUSED, JobRequest, JobState, JobStatus, SubmitError, Submitted,
                                      WorkerBatch)
from hpo_slurm.executors.local import LocalExecutor
from hpo_slurm.executors.pool.executor import MISSING_POLLS, PoolExecutor


class RefusingHost(LocalExecutor):
    """A local host whose worker submissions the cluster refuses for good (an invalid partition)."""

    def submit_workers(self, batch: WorkerBatch) -> List[Submitted]:
        raise SubmitError("sbatch: error: invalid partition specified: gone", retry=False)


class ReportingHost(LocalExecutor):
    """A local host that reports its worker jobs in the states a test sets (what squeue/sacct would say)."""

    def __init__(self) -> None:
        super().__init__(gpus=0)
        self.states: Dict[str, JobStatus] = {}
        self.on_poll: Callable[[], None] = lambda: None  # what workers do while the scheduler is asked

    def submit_workers(self, batch: WorkerBatch) -> List[Submitted]:
        return [Submitted(f"90{index}") for index, _ in enumerate(batch.names)]

    def poll(self, job_ids: Sequence[str]) -> Dict[str, JobStatus]:
        answer = {job_id: self.states.get(job_id, JobStatus(JobState.PENDING)) for job_id in job_ids}
        self.on_poll()
        return answer


def pool(tmp_path: Path, host, workers: int = 1) -> PoolExecutor:
    config = write_config(EXAMPLES / "quadratic" / "random.yaml", tmp_path / "pool.yaml", name="pool",
                          slurm={"pool": {"workers": workers, "idle_timeout": 5}})
    return PoolExecutor(host, load_config(str(config)), ExperimentLayout(tmp_path / "exp"), "hpo.test.")


def request(tmp_path: Path, trial_id: int) -> JobRequest:
    spec_path = make_run(tmp_path, tmp_path, 'python3 -c "pass"', {}, target_length=1, trial_id=trial_id)
    spec = RunSpec.read(spec_path)
    return JobRequest(spec.run_id, f"hpo.test.{spec.run_id}", spec_path.parent, spec_path, 0)


def claim(paths: PoolPaths, worker: str, run_id: str, beat: dict) -> None:
    """What a worker does: its heartbeat names the run, then the run moves from the queue to its folder."""
    paths.claimed(worker).mkdir(parents=True, exist_ok=True)
    paths.alive(worker).write_text(json.dumps(beat))
    (queued,) = [p for p in paths.queue.iterdir() if p.name.endswith(f".{run_id}.json")]
    queued.rename(paths.claimed(worker, run_id))


def test_a_refused_worker_submission_fails_the_queued_runs_as_refused_submissions(tmp_path):
    executor = pool(tmp_path, RefusingHost(gpus=0))
    runs = [request(tmp_path, 1), request(tmp_path, 2)]
    job_ids = [s.job_id for s in executor.submit(runs)]
    statuses = executor.poll(job_ids)
    assert {s.state for s in statuses.values()} == {JobState.FAILED}
    assert all(s.reason.startswith(f"{SUBMISSION_REFUSED}: sbatch: error: invalid partition") for s in statuses.values())
    paths = PoolPaths(tmp_path / "exp")
    assert not list(paths.queue.iterdir()) and len(list(paths.withdrawn.iterdir())) == 2
    record = json.loads(paths.record.read_text())["workers"]
    assert [w["ended"] for w in record.values()] == ["FAILED"]


def test_a_worker_seen_queued_that_claimed_a_run_since_is_running_it_and_a_requeued_one_is_not(tmp_path):
    host = ReportingHost()
    executor = pool(tmp_path, host)
    paths = PoolPaths(tmp_path / "exp")
    run = request(tmp_path, 1)
    (job_id,) = [s.job_id for s in executor.submit([run])]
    assert executor.poll([job_id])[job_id].state == JobState.PENDING  # queued; its worker w1 is queued too

    # while the driver asks the scheduler (which still says w1 is queued), w1 starts and claims the run
    host.on_poll = lambda: claim(paths, "w1", run.run_id, {"run": run.run_id, "ended": None})
    assert executor.poll([job_id])[job_id].state == JobState.RUNNING
    host.on_poll = lambda: None

    # w1 held the run when the driver asked and accounting still shows it queued (it lags a start): running
    assert executor.poll([job_id])[job_id].state == JobState.RUNNING
    # w1 held the run when the driver asked, and the scheduler says Slurm requeued w1: the run is let go
    host.states["900"] = JobStatus(JobState.PENDING, reason="requeued after PREEMPTED")
    status = executor.poll([job_id])[job_id]
    assert status.state == JobState.PREEMPTED and "requeued" in status.reason
    host.states["900"] = JobStatus(JobState.PENDING, reason="requeued after NODE_FAIL")
    assert executor.poll([job_id])[job_id].state == JobState.NODE_FAIL
    host.states["900"] = JobStatus(JobState.RUNNING)
    assert executor.poll([job_id])[job_id].state == JobState.RUNNING


def test_a_run_found_neither_queued_nor_claimed_is_asked_about_again_before_it_counts_as_gone(tmp_path):
    executor = pool(tmp_path, ReportingHost())
    job_id = pool_job_id("t7-r1")
    seen = [executor.poll([job_id])[job_id] for _ in range(MISSING_POLLS)]
    assert all(s.state == JobState.UNKNOWN for s in seen)
    assert [s.confirmed for s in seen] == [False] * (MISSING_POLLS - 1) + [True]


def test_a_damaged_record_of_the_workers_stops_the_pool_instead_of_reusing_their_names(tmp_path):
    paths = PoolPaths(tmp_path / "exp")
    paths.root.mkdir(parents=True)
    paths.record.write_text('{"next": 3, "workers": {"w1": ')
    with pytest.raises(UserError, match="workers.json: the record of the pool's worker jobs cannot be read"):
        pool(tmp_path, ReportingHost())
