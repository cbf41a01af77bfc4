"""Searches on the real local Slurm cluster: arrays, GPUs, preemption, time limits, failures, crashes.

Needs `scripts/local-slurm.sh up` (CI runs it). Marked `slurm`.
"""

from __future__ import annotations

import getpass
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from driver_helpers import cli, copy_example, start_cli, status, wait_for, write_config
from slurm_cluster import reconfigure, require_cluster, sacct_rows, slurm, wait_until_idle

pytestmark = pytest.mark.slurm

FAST_POLL = {"poll_interval": 1, "partition": "debug", "mem": "500M"}


@pytest.fixture(autouse=True)
def cluster(tmp_path):
    require_cluster()
    wait_until_idle()
    yield
    # cancel whatever this test's experiments left behind (and its preemptor jobs)
    for db in tmp_path.glob("**/experiment.db"):
        prefix = job_prefix(db.parent.parent, db.parent.name)
        for job_id, _, state in sacct_rows(prefix):
            if state in ("PENDING", "RUNNING", "REQUEUED"):
                subprocess.run(["scancel", job_id], capture_output=True)
    subprocess.run(["scancel", "--name", "urgent-preemptor"], capture_output=True)


@pytest.fixture
def quadratic(tmp_path):
    return copy_example("quadratic", tmp_path)


def launch_slurm(config: Path, root: Path, timeout: float = 600):
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def job_prefix(root: Path, name: str) -> str:
    import sqlite3

    conn = sqlite3.connect(root / name / "experiment.db")
    uid = conn.execute("SELECT uid FROM experiment").fetchone()[0]
    conn.close()
    return f"hpo.{uid[:8]}."


def accounted(root: Path, name: str):
    """sacct rows of the experiment's jobs, once accounting lists every job its runs are bound to
    (slurmctld hands finished jobs to accounting asynchronously)."""
    bound = {r["job_id"] for t in status(root, name)["trials"] for r in t["runs"] if r["job_id"]}
    prefix = job_prefix(root, name)

    def complete_rows():
        rows = sacct_rows(prefix)
        return rows if bound <= {row[0] for row in rows} else None

    return wait_for(complete_rows, timeout=60, interval=1, what=f"accounting to list the jobs of {name}")


def _time_limits(job_ids):
    """Job id -> its time limit in minutes, from sacct."""
    text = slurm("sacct", "-n", "-P", "-X", "-S", "now-1days", "-o", "JobID,TimelimitRaw")
    limits = {}
    for line in text.splitlines():
        job_id, raw = line.split("|")
        if job_id in job_ids:
            limits[job_id] = int(raw)
    return limits


def attempts(experiment: Path):
    for path in sorted(experiment.glob("runs/*/attempts.jsonl")):
        for line in path.read_text().splitlines():
            yield path.parent.name, json.loads(line)


def test_adaptive_search_with_gpus_runs_as_arrays(quadratic, tmp_path):
    config = write_config(quadratic / "adaptive.yaml", quadratic / "gpus.yaml", name="gpus",
                          resources={"slots_per_trial": 1}, slurm={**FAST_POLL, "time": 10},
                          data={"sleep_per_unit": 0.05})
    root = tmp_path / "runs"
    launch_slurm(config, root)
    summary = status(root, "gpus")
    assert summary["state"] == "COMPLETED" and len(summary["trials"]) == 16
    assert all(t["state"] in ("COMPLETED", "STOPPED_EARLY") for t in summary["trials"])
    rows = accounted(root, "gpus")
    assert any("_" in job_id for job_id, _, _ in rows), "no array jobs in sacct"
    assert all(state == "COMPLETED" for _, _, state in rows)
    # first runs ask for slurm.time; rung continuations for a limit fitted to their measured speed
    first = {r["job_id"] for t in summary["trials"] for r in t["runs"] if r["from_length"] == 0}
    later = {r["job_id"] for t in summary["trials"] for r in t["runs"] if r["from_length"] > 0}
    assert later, "no rung continuations"
    requested = _time_limits([j for j, _, _ in rows])
    assert all(requested[j] == 10 for j in first)
    assert all(requested[j] < 10 for j in later), requested
    # concurrent trials saw different GPUs
    seen = [a for _, a in attempts(root / "gpus")]
    assert all(a["cuda_visible_devices"] not in (None, "") for a in seen)
    assert len({a["cuda_visible_devices"] for a in seen}) >= 2


def test_preempted_trials_resume_from_checkpoints_and_match_an_uninterrupted_search(quadratic, tmp_path):
    changes = dict(resources={"slots_per_trial": 1}, searcher={"max_trials": 4, "max_concurrent_trials": 4},
                   data={"sleep_per_unit": 0.25})
    reference = write_config(quadratic / "random.yaml", quadratic / "reference.yaml", name="reference",
                             **{**changes, "data": {"sleep_per_unit": 0.0}})
    preempted = write_config(quadratic / "random.yaml", quadratic / "preempted.yaml", name="preempted",
                             slurm={**FAST_POLL, "time": 10}, **changes)
    root = tmp_path / "runs"
    done = cli("launch", str(reference), "--root", str(root), "--executor", "local", timeout=300)
    assert done.returncode == 0, done.stderr
    driver = start_cli("launch", str(preempted), "--root", str(root), "--executor", "slurm")
    experiment = root / "preempted"
    for round_ in range(3):
        # once trials have trained a little in their current jobs, take every GPU from an urgent job
        wait_for(lambda: _running_trials_reported(experiment, round_), timeout=120, what="trials to train")
        slurm("sbatch", "-p", "urgent", "--gres=gpu:4", "-J", "urgent-preemptor", "-o", "/dev/null", "--wrap", "sleep 3")
        time.sleep(6)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    summary = status(root, "preempted")
    assert summary["state"] == "COMPLETED"
    trials = {t["id"]: t for t in summary["trials"]}
    assert sum(t["preemptions"] for t in trials.values()) >= 3
    assert all(t["restarts"] == 0 and t["time_limits"] == 0 for t in trials.values())
    expected = {t["id"]: t["best_metric"] for t in status(root, "reference")["trials"]}
    assert {i: t["best_metric"] for i, t in trials.items()} == expected


def _running_trials_reported(experiment: Path, round_: int) -> bool:
    """Every running attempt has written a few training lines since it started."""
    running = slurm("squeue", "-h", "-t", "RUNNING", "-o", "%j").split()
    if len([n for n in running if n.startswith("hpo.")]) == 0:
        return False
    lines = 0
    for path in experiment.glob("trials/*/metrics.jsonl"):
        lines += path.read_text().count("training")
    return lines >= 4 * (round_ + 1)


def test_a_time_limit_shorter_than_the_work_is_finished_over_several_jobs(quadratic, tmp_path):
    config = write_config(quadratic / "single.yaml", quadratic / "timed.yaml", name="timed",
                          slurm={**FAST_POLL, "time": 1, "signal_delay": 40},
                          data={"sleep_per_unit": 1.0}, searcher={"max_length": {"batches": 40}})
    root = tmp_path / "runs"
    launch_slurm(config, root, timeout=900)
    (trial,) = status(root, "timed")["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 0
    states = [r["state"] for r in trial["runs"]]
    assert states[-1] == "SUCCEEDED" and "TIMEOUT" in states, states
    assert (trial["time_limits"], trial["preemptions"]) == (states.count("TIMEOUT"), 0)


def test_a_preemption_late_in_a_job_is_told_from_its_time_limit_by_slurms_record(quadratic, tmp_path):
    """Preempted 60 s into a 2-minute job (signal_delay 10): inside the last window before the time
    limit, where only Slurm's record of the job (its PreemptTime) can tell a preemption from the time
    limit. Counted as a preemption, resumed from its checkpoint, ending as the uninterrupted run."""
    changes = dict(searcher={"max_length": {"batches": 140}})
    reference = write_config(quadratic / "single.yaml", quadratic / "reference.yaml", name="reference",
                             data={"sleep_per_unit": 0.0}, **changes)
    late = write_config(quadratic / "single.yaml", quadratic / "late.yaml", name="late", resources={"slots_per_trial": 1},
                        slurm={**FAST_POLL, "time": 2, "signal_delay": 10}, data={"sleep_per_unit": 0.5}, **changes)
    root = tmp_path / "runs"
    done = cli("launch", str(reference), "--root", str(root), "--executor", "local", timeout=300)
    assert done.returncode == 0, done.stderr
    driver = start_cli("launch", str(late), "--root", str(root), "--executor", "slurm")
    first = wait_for(lambda: next((a for _, a in attempts(root / "late")), None), timeout=120, what="the job to start")
    time.sleep(max(0.0, first["time"] + 60 - time.time()))
    slurm("sbatch", "-p", "urgent", "--gres=gpu:4", "-J", "urgent-preemptor", "-o", "/dev/null", "--wrap", "sleep 3")
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    (trial,) = status(root, "late")["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 0
    assert (trial["preemptions"], trial["time_limits"]) == (1, 0)
    recorded = [json.loads(line) for line in (root / "late" / "runs" / "t1-r1" / "interruptions.jsonl").read_text().splitlines()]
    assert [(r["attempt"], r["reason"]) for r in recorded] == [(1, "preempted")]
    assert trial["best_metric"] == status(root, "reference")["trials"][0]["best_metric"]


def test_failures_are_retried_then_errored_and_the_search_completes(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "flaky.yaml", name="flaky",
                          max_restarts=1, searcher={"max_trials": 3}, slurm={**FAST_POLL, "time": 5},
                          data={"fail_once_trial": 2})
    root = tmp_path / "runs"
    launch_slurm(config, root)
    trials = {t["id"]: t for t in status(root, "flaky")["trials"]}
    assert trials[2]["state"] == "COMPLETED" and trials[2]["restarts"] == 1
    assert [r["state"] for r in trials[2]["runs"]] == ["FAILED", "SUCCEEDED"]
    broken = write_config(quadratic / "single.yaml", quadratic / "broken.yaml", name="broken",
                          max_restarts=2, slurm={**FAST_POLL, "time": 5}, data={"fail_always": True})
    done = cli("launch", str(broken), "--root", str(root), "--executor", "slurm", timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]  # the search ended ERRORED
    summary = status(root, "broken")
    (trial,) = summary["trials"]
    assert trial["state"] == "ERRORED" and len(trial["runs"]) == 3
    assert summary["state"] == "ERRORED"
    # accounting lags the controller by a moment
    rows = wait_for(lambda: [r for r in sacct_rows(job_prefix(root, "broken")) if r[2] == "FAILED"][2:] and
                    sacct_rows(job_prefix(root, "broken")), timeout=60, what="sacct to record the jobs")
    assert len(rows) == 3 and all(state == "FAILED" for _, _, state in rows)


def test_driver_killed_five_times_loses_and_duplicates_nothing(quadratic, tmp_path):
    config = write_config(quadratic / "adaptive.yaml", quadratic / "crashy.yaml", name="crashy",
                          slurm={**FAST_POLL, "time": 10}, data={"sleep_per_unit": 0.2})
    root = tmp_path / "runs"
    rng = random.Random(99)
    crash_points = ["after_submit:1", "before_submit:2", "after_submit:2"]
    args = ["launch", str(config), "--root", str(root), "--executor", "slurm"]
    for kill in range(len(crash_points) + 3):
        if kill < len(crash_points):
            process = start_cli(*args, env={"HPO_SLURM_CRASH_AT": crash_points[kill]})
            process.wait(timeout=300)
        else:
            process = start_cli(*args)
            time.sleep(rng.uniform(2.0, 6.0))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, process.stderr.read()[-3000:]
        args = ["resume", "crashy", "--root", str(root)]
    done = cli(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = status(root, "crashy")
    assert summary["state"] == "COMPLETED" and len(summary["trials"]) == 16
    for t in summary["trials"]:
        assert t["restarts"] == 0 and all(r["state"] == "SUCCEEDED" for r in t["runs"]), t
    # nothing submitted twice: every Slurm job of the experiment is bound to exactly one run
    rows = accounted(root, "crashy")
    bound = [r["job_id"] for t in summary["trials"] for r in t["runs"]]
    assert sorted(job_id for job_id, _, _ in rows) == sorted(bound)
    for run, attempt in attempts(root / "crashy"):
        assert attempt["attempt"] == 1, run


def test_a_lowered_max_array_size_splits_arrays(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "split.yaml", name="split",
                          searcher={"max_trials": 8, "max_concurrent_trials": 8},
                          slurm={**FAST_POLL, "time": 5})
    root = tmp_path / "runs"
    reconfigure("--max-array-size", "3")
    try:
        launch_slurm(config, root)
    finally:
        reconfigure()
    assert status(root, "split")["state"] == "COMPLETED"
    arrays = {}
    for job_id, _, _ in accounted(root, "split"):
        base, _, index = job_id.partition("_")
        arrays.setdefault(base, []).append(index)
    assert len(arrays) >= 3 and all(len(tasks) <= 3 for tasks in arrays.values()), arrays


@pytest.fixture
def submit_cap():
    """MaxSubmitJobs=3 on this user's association for one test (the cluster enforces limits)."""
    user = getpass.getuser()
    slurm("sacctmgr", "-i", "modify", "user", "where", f"name={user}", "set", "MaxSubmitJobs=3")
    try:
        wait_for(lambda: "MaxSubmitJobs=3(" in slurm("scontrol", "show", "assoc_mgr", f"users={user}", "flags=assoc"),
                 timeout=30, what="slurmctld to know the cap")
        yield 3
    finally:
        slurm("sacctmgr", "-i", "modify", "user", "where", f"name={user}", "set", "MaxSubmitJobs=-1")


def test_under_a_queued_jobs_cap_the_driver_submits_fewer_at_a_time(quadratic, tmp_path, submit_cap):
    config = write_config(quadratic / "random.yaml", quadratic / "capped.yaml", name="capped",
                          searcher={"max_trials": 7, "max_concurrent_trials": 7},
                          slurm={**FAST_POLL, "time": 5})
    root = tmp_path / "runs"
    launch_slurm(config, root)
    summary = status(root, "capped")
    assert summary["state"] == "COMPLETED" and all(t["state"] == "COMPLETED" for t in summary["trials"])
    assert all(len(t["runs"]) == 1 for t in summary["trials"])  # a refused batch is not a failed run
    arrays = {}
    for job_id, _, _ in accounted(root, "capped"):
        base, _, index = job_id.partition("_")
        arrays.setdefault(base, []).append(index)
    assert sum(len(tasks) for tasks in arrays.values()) == 7
    assert all(len(tasks) <= submit_cap for tasks in arrays.values()), arrays
    log = (root / "capped" / "driver.log").read_text()
    assert "refused 7 runs for its cap on queued jobs" in log and "at most 3 at a time" in log


def test_the_driver_runs_as_a_job_that_requeues_itself(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "asjob.yaml", name="asjob",
                          searcher={"max_trials": 4, "max_concurrent_trials": 2},
                          slurm={**FAST_POLL, "time": 5}, data={"sleep_per_unit": 0.1})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", "--as-job")
    assert done.returncode == 0, done.stderr
    driver_job = done.stderr.split("Slurm job ")[1].split(";")[0]
    wait_for(lambda: status(root, "asjob")["driver"]["alive"] and any(
        t["runs"] for t in status(root, "asjob")["trials"]), timeout=120, what="the driver job to submit runs")
    # the time-limit warning the job would get: the driver stops, the job requeues itself and resumes
    slurm("scancel", "--signal=USR1", "--batch", driver_job)
    wait_for(lambda: status(root, "asjob")["state"] == "COMPLETED", timeout=300, interval=1,
             what="the search to complete")
    log = (root / "asjob" / "driver-job.log").read_text()
    assert "requeueing the driver job" in log
    restarts = slurm("scontrol", "show", "job", driver_job)
    assert "Restarts=1" in restarts or "Restarts=2" in restarts
    summary = status(root, "asjob")
    assert all(t["state"] == "COMPLETED" for t in summary["trials"])
    jobs = [r["job_id"] for t in summary["trials"] for r in t["runs"]]
    assert len(jobs) == len(set(jobs)) == 4  # nothing submitted twice across the driver's requeue


def test_without_accounting_the_executor_works_from_squeue_and_files(quadratic, tmp_path):
    from hpo_slurm.experiment import folder as experiments
    from hpo_slurm.config.schema import load_config
    from hpo_slurm.engine.driver import Driver
    from hpo_slurm.engine.searcher_log import load_searcher
    from hpo_slurm.executors.slurm.executor import SlurmExecutor
    from hpo_slurm.experiment.store import Store

    path = write_config(quadratic / "random.yaml", quadratic / "nosacct.yaml", name="nosacct",
                        searcher={"max_trials": 3}, slurm={**FAST_POLL, "time": 5}, max_restarts=1,
                        data={"fail_once_trial": 2})
    config = load_config(str(path))
    layout = experiments.create(config, path, tmp_path / "runs", "nosacct", "slurm")
    store = Store.open(layout.database)
    executor = SlurmExecutor(config, layout.dir)
    executor.accounting = False  # as on a cluster whose sacct is disabled
    searcher, fresh = load_searcher(config, store)
    driver = Driver(layout, config, store, executor, searcher, poll_interval_s=1)
    driver.start(fresh=fresh)
    deadline = time.monotonic() + 300
    while not driver.done and time.monotonic() < deadline:
        time.sleep(0.5)
        driver.tick()
    store.close()
    summary = status(tmp_path / "runs", "nosacct")
    assert summary["state"] == "COMPLETED"
    trials = {t["id"]: t for t in summary["trials"]}
    assert [r["state"] for r in trials[2]["runs"]] == ["FAILED", "SUCCEEDED"]
    assert all(t["state"] == "COMPLETED" for t in trials.values())


@pytest.mark.parametrize("slurm_section, refusal", [
    ({"partition": "no-such-partition"}, "invalid partition"),
    ({"account": "no-such-account"}, "invalid account"),
    ({"extra_args": {"gres": "lscratch:100"}}, "invalid generic resource"),
])
def test_what_slurm_refuses_is_refused_before_the_experiment_exists(quadratic, tmp_path, slurm_section, refusal):
    config = write_config(quadratic / "single.yaml", quadratic / "refused.yaml", name="refused",
                          slurm={**FAST_POLL, "time": 5, **slurm_section})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("hpo-slurm: Slurm refuses the search's jobs: sbatch: ")
    assert refusal in done.stderr.lower() and done.stderr.count("\n") == 1, done.stderr
    assert not root.exists() or not any(root.iterdir())  # nothing created


def test_stop_cancels_every_job_of_the_experiment(quadratic, tmp_path):
    config = write_config(quadratic / "random.yaml", quadratic / "stopme.yaml", name="stopme",
                          searcher={"max_trials": 6, "max_concurrent_trials": 6},
                          slurm={**FAST_POLL, "time": 5}, data={"sleep_per_unit": 0.5})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", "--detach")
    assert done.returncode == 0, done.stderr
    prefix = job_prefix(root, "stopme")
    wait_for(lambda: [r for r in sacct_rows(prefix) if r[2] in ("RUNNING", "PENDING")], timeout=120,
             what="jobs of the search in the queue")
    stopped = cli("stop", "stopme", "--root", str(root), timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    assert not [line for line in slurm("squeue", "-h", "-o", "%j").split() if line.startswith(prefix)]
    summary = status(root, "stopme")
    assert summary["state"] == "STOPPED" and summary["driver"]["alive"] is False
    assert all(t["state"] == "STOPPED_EARLY" for t in summary["trials"])
    assert all(r["state"] == "CANCELLED" for t in summary["trials"] for r in t["runs"])
