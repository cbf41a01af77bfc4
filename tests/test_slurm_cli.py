"""Slurm client commands: what a failed scancel means to the caller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpo_slurm.config.schema import load_config
from hpo_slurm.executors.slurm import commands as slurm_cli
from hpo_slurm.executors.base import JobRequest, JobState, JobStatus, SchedulerError, SubmitError
from hpo_slurm.executors.slurm.executor import SlurmExecutor
from hpo_slurm.executors.array.wave_job import submit_once

QUADRATIC = Path(__file__).resolve().parent.parent / "examples" / "quadratic"


def fake_command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_scancel_of_jobs_that_already_ended_is_not_an_error(tmp_path, monkeypatch):
    fake_command(tmp_path, "scancel", 'echo "$@" > "$(dirname "$0")/args"; echo "scancel: error: Invalid job id 7" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    slurm_cli.scancel(["7", "8_1"])
    assert (tmp_path / "args").read_text().split() == ["7", "8_1"]


def test_scancel_that_cannot_reach_the_controller_raises_cancel_error(tmp_path, monkeypatch):
    fake_command(tmp_path, "scancel", "sleep 5")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(slurm_cli, "COMMAND_TIMEOUT_S", 0.2)
    with pytest.raises(SchedulerError, match="scancel failed"):
        slurm_cli.scancel(["7"])


def test_scancel_without_slurm_raises_cancel_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SchedulerError):
        slurm_cli.scancel(["7"])


def fake_cluster(folder: Path, monkeypatch, sacct: str) -> SlurmExecutor:
    """A SlurmExecutor whose client commands are scripts: squeue lists job 5 running."""
    fake_command(folder, "scontrol", 'printf "AccountingStorageType = accounting_storage/slurmdbd\\nMaxArraySize = 1001\\n"')
    fake_command(folder, "squeue", 'echo "5|RUNNING|None"')
    fake_command(folder, "sacct", sacct)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    config = load_config(str(QUADRATIC / "adaptive.yaml"))
    return SlurmExecutor(config, folder / "experiment")


def test_a_job_gone_from_squeue_is_unknown_only_when_sacct_answered(tmp_path, monkeypatch):
    executor = fake_cluster(tmp_path, monkeypatch, sacct='echo "5|RUNNING|0:0"')
    assert executor.poll(["5", "6"]) == {"5": JobStatus(JobState.RUNNING, 0, "RUNNING"),
                                         "6": JobStatus(JobState.UNKNOWN)}


def test_when_sacct_fails_a_job_gone_from_squeue_is_unknown_unconfirmed(tmp_path, monkeypatch):
    executor = fake_cluster(tmp_path, monkeypatch,
                            sacct='echo "sacct: error: Problem talking to the database" >&2; exit 1')
    statuses = executor.poll(["5", "6"])
    assert statuses["5"].state == JobState.RUNNING
    assert statuses["6"] == JobStatus(JobState.UNKNOWN, reason="sacct failed", confirmed=False)


def test_finding_jobs_by_name_when_squeue_fails_raises_scheduler_error(tmp_path, monkeypatch):
    executor = fake_cluster(tmp_path, monkeypatch, sacct='echo ""')
    fake_command(tmp_path, "squeue", 'echo "squeue: error: slurm_receive_msg: Socket timed out" >&2; exit 1')
    batch = tmp_path / "experiment" / "jobs" / "hpo.x.1"
    batch.mkdir(parents=True)
    (batch / "manifest.json").write_text('{"runs": ["1"], "specs": [{}]}')
    request = JobRequest(run_id="1", job_name="hpo.x.1", run_dir=tmp_path, spec_path=tmp_path / "s", gpus=1)
    with pytest.raises(SchedulerError, match="Socket timed out"):
        executor.find([request])


def test_a_wave_job_never_submits_when_it_cannot_tell_whether_it_already_did(tmp_path, monkeypatch):
    fake_cluster(tmp_path, monkeypatch, sacct='echo ""')
    fake_command(tmp_path, "squeue", 'echo "squeue: error: Socket timed out" >&2; exit 1')
    submitted = []
    with pytest.raises(SubmitError, match="cannot tell whether hpo.x.array-1 was submitted"):
        submit_once("hpo.x.array-1", tmp_path / "submitted.json", lambda: submitted.append(1) or "9",
                    pause_s=0.01, retry_for_s=0.2)
    assert submitted == [] and not (tmp_path / "submitted.json").exists()
    fake_command(tmp_path, "squeue", 'echo ""')  # the controller answers again: not found, so submitted once
    assert submit_once("hpo.x.array-1", tmp_path / "submitted.json", lambda: submitted.append(1) or "9") == "9"
    assert submitted == [1]


@pytest.mark.parametrize("message, outcome", [
    ("sbatch: error: Batch job submission failed: Invalid partition name specified", SubmitError),
    ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", SchedulerError),
    ("sbatch: error: QOSMaxSubmitJobPerUserLimit", "warning"),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not available", "warning"),
])
def test_a_test_only_refusal_is_told_apart_from_one_that_depends_on_the_moment(tmp_path, monkeypatch, message, outcome):
    fake_command(tmp_path, "sbatch", f'echo "{message}" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\ntrue\n")
    if outcome == "warning":
        warning = slurm_cli.check_script(script, tmp_path)
        assert warning.startswith("sbatch --test-only could not judge the jobs now (") and "submitting anyway" in warning
    else:
        with pytest.raises(outcome):
            slurm_cli.check_script(script, tmp_path)
