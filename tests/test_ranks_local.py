"""A trial of several ranks on this machine: the job launches one process per rank with torch's
``env://`` variables, records rank 0's reports, publishes one checkpoint from every rank's shards,
stops every rank at the same step, and fails the run when one rank fails (leaving no rank behind)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from driver_helpers import cli, copy_example, write_config
from helpers_spec import checkpoints, make_run, metrics, result, run_job_process, start_job
from hpo_slurm.core.protocol import RunResult, RunStatus, StopReason
from hpo_slurm.tasks.ranks import merge

TRIALS = Path(__file__).resolve().parent / "trials"
PROBE = "python3 ranks_probe.py"


def probes(spec_path: Path) -> dict:
    folder = Path(spec_path).parent / "probe"
    return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in folder.glob("rank-*.json")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_ranks_train_report_once_and_publish_one_checkpoint(tmp_path):
    spec = make_run(tmp_path, TRIALS, PROBE, {"x": 2}, target_length=6, ranks_per_node=2)
    done = run_job_process(spec)
    assert done.returncode == 0, done.stdout
    assert result(spec)["status"] == "exited"
    seen = probes(spec)
    assert sorted(seen) == [0, 1]
    for rank, record in seen.items():
        env = record["env"]
        assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"], env["NODE_RANK"]) == \
            (str(rank), str(rank), "2", "2", "0")
        assert record["world_size"] == 2 and record["is_chief"] == (rank == 0) and record["finished"]
        assert record["steps"] == [1, 2, 3, 4, 5, 6]  # the all_reduce of every step saw both ranks
    assert seen[0]["env"]["MASTER_PORT"] == seen[1]["env"]["MASTER_PORT"]
    assert seen[0]["env"]["MASTER_ADDR"] == "127.0.0.1"
    lines = metrics(spec)
    assert [(m["kind"], m["length"]) for m in lines] == [("training", n) for n in range(1, 7)] + [("validation", 6)]
    assert {m["metrics"]["reporting_rank"] for m in lines} == {0}
    [final] = checkpoints(spec)
    assert sorted(p.name for p in final.iterdir()) == ["hpo_checkpoint.json", "shard-0", "shard-1"]
    leftovers = [p.name for p in final.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary or synchronisation folders left
    assert sorted(p.name for p in (Path(spec).parent / "ranks").glob("rank-*")) == ["rank-0.json", "rank-1.json"]


def test_a_stop_signal_to_one_rank_stops_every_rank_at_the_same_step_and_resume_continues(tmp_path):
    spec = make_run(tmp_path, TRIALS, PROBE, {"sleep": 0.2}, target_length=40, ranks_per_node=2)
    job = start_job(spec)
    deadline = time.monotonic() + 60
    while not (len(probes(spec)) == 2 and all(len(r["steps"]) >= 3 for r in probes(spec).values())):
        assert job.poll() is None and time.monotonic() < deadline, job.stdout.read() if job.poll() is not None else ""
        time.sleep(0.05)
    os.kill(probes(spec)[1]["pid"], signal.SIGTERM)  # only rank 1 hears of the preemption
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 0, output
    first = probes(spec)
    assert first[0]["stopped_at"] == first[1]["stopped_at"] < 40
    assert first[0]["stop_reason"] == first[1]["stop_reason"] == StopReason.PREEMPTED.value
    assert result(spec)["status"] == "stopped" and result(spec)["stop_reason"] == "preempted"
    [checkpoint] = checkpoints(spec)
    stopped_at = first[0]["stopped_at"]
    assert sorted(p.name for p in checkpoint.iterdir()) == ["hpo_checkpoint.json", "shard-0", "shard-1"]

    done = run_job_process(spec)  # the requeued job: every rank resumes from the shared checkpoint
    assert done.returncode == 0, done.stdout
    second = probes(spec)
    for record in second.values():
        assert record["resumed_shards"] == ["shard-0", "shard-1"]
        assert record["steps"] == list(range(stopped_at + 1, 41)) and record["finished"]
    assert result(spec)["status"] == "exited" and result(spec)["attempt"] == 2


def test_a_rank_that_fails_fails_the_run_and_leaves_no_rank_running(tmp_path):
    spec = make_run(tmp_path, TRIALS, PROBE, {"sleep": 0.1, "fail_rank": 1, "fail_step": 4}, target_length=400,
                    ranks_per_node=2)
    done = run_job_process(spec, timeout=120)
    assert done.returncode != 0
    ended = result(spec)
    assert ended["status"] == "failed" and ended["message"].startswith("rank 1:"), ended
    for record in probes(spec).values():
        assert not alive(record["pid"])
    assert max(m["length"] for m in metrics(spec)) < 10


def test_merge_rules():
    exited, failed = RunResult(RunStatus.EXITED, 0), RunResult(RunStatus.FAILED, 3, message="boom")
    stopped = RunResult(RunStatus.STOPPED, 0, stop_reason=StopReason.TIME_LIMIT)
    assert merge([exited, exited], None, 0).status is RunStatus.EXITED
    assert merge([stopped, failed], None, 1) == RunResult(RunStatus.FAILED, 3, message="rank 1: boom")
    crashed = merge([stopped, None], None, 137)  # rank 1 died (SIGKILL, OOM): rank 0 was only stopped for it
    assert crashed.status is RunStatus.FAILED and crashed.message.startswith("rank 1 ended without a result")
    assert merge([None, None], StopReason.PREEMPTED.value, 143).status is RunStatus.STOPPED
    assert merge([stopped, None], StopReason.PREEMPTED.value, 143).stop_reason == StopReason.PREEMPTED
    # the job's own reason wins over the ranks' (a time-limit warning, then SIGTERM at the limit) ...
    preempted = RunResult(RunStatus.STOPPED, 0, stop_reason=StopReason.PREEMPTED)
    assert merge([preempted, preempted], StopReason.TIME_LIMIT.value, 0).stop_reason == StopReason.TIME_LIMIT
    # ... and the search's reason wins over both
    searched = RunResult(RunStatus.STOPPED, 0, stop_reason=StopReason.SEARCH_STOPPED)
    assert merge([preempted, searched], StopReason.TIME_LIMIT.value, 0).stop_reason == StopReason.SEARCH_STOPPED
    invalid = RunResult(RunStatus.INVALID_HP, 1, message="no")
    assert merge([exited, invalid], None, 1) is invalid


def test_a_trial_of_more_ranks_than_local_gpus_is_refused_before_anything_exists(tmp_path):
    example = copy_example("quadratic", tmp_path)
    config = write_config(example / "random.yaml", tmp_path / "wide.yaml", resources={"slots_per_trial": 4})
    done = cli("launch", str(config), "--root", str(tmp_path / "root"), "--executor", "local",
               env={"HPO_SLURM_LOCAL_GPUS": "2"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(
        "wide.yaml: resources.slots_per_trial: 4 GPUs per trial, but this machine has 2 "
        "(nvidia-smi, or $HPO_SLURM_LOCAL_GPUS)"), done.stderr
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())


@pytest.mark.parametrize("failing_rank", [0, 1])
def test_a_rank_failing_inside_a_shared_checkpoint_publishes_nothing_and_the_others_raise(tmp_path, failing_rank):
    from hpo_slurm.trial import TrialContext

    spec = make_run(tmp_path, tmp_path, "true", {}, 20, ranks_per_node=2)
    ranks = [TrialContext(json.loads(spec.read_text()), {"RANK": str(k), "LOCAL_RANK": str(k), "WORLD_SIZE": "2",
                                                         "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0"})
             for k in range(2)]
    raised = {}
    inside = threading.Barrier(2)

    def save(k):
        try:
            with ranks[k].checkpoint(10) as path:
                inside.wait(timeout=10)  # both ranks are in the block when one of them fails
                if k == failing_rank:
                    raise OSError("disk full")
                time.sleep(0.2)  # the failing rank leaves its block first
                (path / f"rank-{k}.txt").write_text("10")
        except Exception as exc:  # noqa: BLE001 - what each rank raised is the result
            raised[k] = exc

    threads = [threading.Thread(target=save, args=(k,), daemon=True) for k in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert time.monotonic() - started < 30 and not any(thread.is_alive() for thread in threads)
    other = 1 - failing_rank
    assert isinstance(raised[failing_rank], OSError)
    assert isinstance(raised[other], RuntimeError) and "was not published" in str(raised[other])
    assert checkpoints(spec) == []
