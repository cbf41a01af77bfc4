"""The faults a real cluster throws, on the real local Slurm cluster (2 nodes x 2 fake GPUs): a node
that dies mid-run (its slurmd and its jobs SIGKILLed), a node set DOWN, slurmctld stopped and
restarted (with the driver killed and resumed while it is down), slurmdbd stopped for a minute
(sacct failing) with the driver killed four times and a preemption meanwhile (a short form of
benchmarks/soak.py), and munged restarted. Each search must end COMPLETED with no restart counted, no rung
run twice, every metric line ingested once and every trial's metrics equal to the same search on
local processes; driver.log says what the driver waited for. Needs root and `scripts/local-slurm.sh`."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from driver_helpers import cli, copy_example, db_count, metric_lines, start_cli, status, wait_for, write_config
from slurm_cluster import (crash_node, multi_node_cluster, node_state, reconfigure, require_cluster, sacct_rows, slurm,
                           stop_daemon, wait_until_idle)

pytestmark = pytest.mark.slurm

TWO_NODES = ("--nodes", "2", "--gpus", "2")
SLURM = {"partition": "debug", "poll_interval": 1, "time": 10, "mem": "400M", "cpus_per_task": 1, "gpus_per_node": 2}


@pytest.fixture(scope="module")
def two_nodes():
    require_cluster()
    wait_until_idle()
    with multi_node_cluster(nodes=2, gpus=2) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def healthy(two_nodes, tmp_path):
    wait_until_idle()
    yield
    reconfigure(*TWO_NODES)  # every daemon a test stopped is started again, a crashed node returns
    subprocess.run(["scancel", "--user", "root"], capture_output=True)
    wait_until_idle()


@pytest.fixture
def quadratic(tmp_path):
    return copy_example("quadratic", tmp_path)


def configs(quadratic: Path, name: str, trials: int, length: int, sleep: float):
    """(the search on Slurm, the same search without delays for the local executor): random search,
    ``trials`` trials of ``length`` batches and one GPU each, four at a time (two per node)."""
    changes = dict(searcher={"max_trials": trials, "max_concurrent_trials": 4, "max_length": {"batches": length}},
                   resources={"slots_per_trial": 1}, max_restarts=0)
    on_slurm = write_config(quadratic / "random.yaml", quadratic / f"{name}.yaml", name=name, slurm=SLURM,
                            data={"sleep_per_unit": sleep}, **changes)
    local = write_config(quadratic / "random.yaml", quadratic / f"{name}-local.yaml", name=f"{name}-local",
                         data={"sleep_per_unit": 0.0}, **changes)
    return on_slurm, local


def launch(config: Path, root: Path) -> subprocess.Popen:
    return start_cli("launch", str(config), "--root", str(root), "--executor", "slurm")


def running_jobs(root: Path, name: str, count: int) -> List[Dict[str, Any]]:
    """Once ``count`` runs are RUNNING and each has reported training: those runs."""
    def ready():
        if not (root / name / "experiment.db").exists():
            return None
        runs = [dict(r, trial_id=t["id"]) for t in status(root, name)["trials"] for r in t["runs"]
                if r["state"] == "RUNNING"]
        trained = [r for r in runs if (root / name / "trials" / str(r["trial_id"]) / "metrics.jsonl").exists()]
        return trained if len(trained) >= count else None

    return wait_for(ready, timeout=180, interval=1, what=f"{count} runs of {name} to train")


def stop_daemon_mid_search(quadratic: Path, root: Path, name: str, trials: int, length: int, sleep: float,
                           daemon: str):
    """Launch the search ``name`` (``configs``) under ``root`` and stop ``daemon`` once 4 of its runs
    train: (the driver's process, the local form of the search, the monotonic time it stopped)."""
    config, local = configs(quadratic, name, trials=trials, length=length, sleep=sleep)
    driver = launch(config, root)
    running_jobs(root, name, 4)
    stop_daemon(daemon)
    return driver, local, time.monotonic()


def finish(driver: subprocess.Popen, timeout: float = 400) -> None:
    out, err = driver.communicate(timeout=timeout)
    assert driver.returncode == 0, err[-3000:]


def validations(experiment: Path, trial_id: int) -> List[tuple]:
    path = experiment / "trials" / str(trial_id) / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [(m["length"], m["metrics"]["validation_loss"]) for m in lines if m["kind"] == "validation"]


def assert_nothing_lost_or_run_twice(root: Path, name: str, local_config: Path) -> Dict[str, Any]:
    """The search COMPLETED, no trial restarted, each rung trained by one run that succeeded (the others
    preempted), no length validated twice, every Slurm job of the experiment bound to one run, every
    metric line ingested once and every trial's validations equal to those of the same search on
    local processes. Returns the summary."""
    experiment = root / name
    summary = status(root, name)
    assert summary["state"] == "COMPLETED", summary["state"]
    for trial in summary["trials"]:
        assert trial["state"] == "COMPLETED" and trial["restarts"] == 0, trial
        # a preempted run is carried on by a run over the same lengths, from its checkpoint
        assert all(r["state"] in ("SUCCEEDED", "PREEMPTED", "TIMEOUT") for r in trial["runs"]), trial
        spans = [(r["from_length"], r["to_length"]) for r in trial["runs"] if r["state"] == "SUCCEEDED"]
        assert len(spans) == len(set(spans)), trial
        lengths = [length for length, _ in validations(experiment, trial["id"])]
        assert len(lengths) == len(set(lengths)), (trial["id"], lengths)  # no length validated twice
    jobs = [r["job_id"] for t in summary["trials"] for r in t["runs"]]
    assert len(jobs) == len(set(jobs))
    prefix = f"hpo.{db_uid(experiment)[:8]}."
    rows = wait_for(lambda: (lambda r: r if {j for j, _, _ in r} >= set(jobs) else None)(sacct_rows(prefix)),
                    timeout=90, interval=2, what="accounting to list every job")
    assert sorted({job_id for job_id, _, _ in rows}) == sorted(jobs)  # nothing submitted twice
    assert db_count(experiment, "SELECT COUNT(*) FROM metrics") == metric_lines(experiment)
    local = cli("launch", str(local_config), "--root", str(root), "--executor", "local", timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]
    for trial in summary["trials"]:
        assert validations(experiment, trial["id"]) == validations(root / f"{name}-local", trial["id"]), trial["id"]
    return summary


def db_uid(experiment: Path) -> str:
    conn = sqlite3.connect(f"file:{experiment / 'experiment.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT uid FROM experiment").fetchone()[0]
    finally:
        conn.close()


def attempts(experiment: Path, run_id: str) -> int:
    path = experiment / "runs" / run_id / "attempts.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def driver_log(experiment: Path) -> str:
    return (experiment / "driver.log").read_text()


def crash_node2_mid_search(config: Path, root: Path, name: str):
    """Launch ``config`` under ``root`` and crash node2 once 4 of its runs train: (the driver's process,
    the runs that were running on node2)."""
    driver = launch(config, root)
    running = running_jobs(root, name, 4)
    on_node2 = [r for r in running if r["nodes"] == ["node2"]]
    assert on_node2, running
    crash_node("node2")
    return driver, on_node2


def test_a_node_that_dies_mid_run_is_resumed_elsewhere_without_a_restart(quadratic, tmp_path, two_nodes):
    """node2's slurmd and its jobs are SIGKILLed (a node losing power). slurmctld marks it DOWN after
    SlurmdTimeout and requeues its jobs (NODE_FAIL); they run again on node1 under the same job ids."""
    config, local = configs(quadratic, "crashed", trials=4, length=40, sleep=0.4)
    root = tmp_path / "runs"
    driver, on_node2 = crash_node2_mid_search(config, root, "crashed")
    wait_for(lambda: node_state("node2").startswith("down"), timeout=150, interval=2, what="node2 to be DOWN")
    finish(driver)
    assert_nothing_lost_or_run_twice(root, "crashed", local)
    for run in on_node2:
        assert attempts(root / "crashed", run["run_id"]) == 2, run  # the same job, started again by Slurm
        assert f"job {run['job_id']}: Slurm requeued it after NODE_FAIL" in driver_log(root / "crashed")


def test_a_node_set_down_mid_run_is_resumed_elsewhere_without_a_restart(quadratic, tmp_path, two_nodes):
    config, local = configs(quadratic, "downed", trials=4, length=32, sleep=0.4)
    root = tmp_path / "runs"
    driver = launch(config, root)
    running = running_jobs(root, "downed", 4)
    on_node1 = [r for r in running if r["nodes"] == ["node1"]]
    slurm("scontrol", "update", "nodename=node1", "state=DOWN", "reason=hpo-slurm fault test")
    # back in service: by itself (ReturnToService=2: its slurmd answers), else an admin resumes it
    wait_for(lambda: not node_state("node1").startswith("down") or subprocess.run(
        ["scontrol", "update", "nodename=node1", "state=RESUME"], capture_output=True).returncode == 0,
        timeout=120, interval=2, what="node1 to be back in service")
    finish(driver)
    assert_nothing_lost_or_run_twice(root, "downed", local)
    assert all(attempts(root / "downed", run["run_id"]) == 2 for run in on_node1)
    assert all(f"job {run['job_id']}: Slurm requeued it after NODE_FAIL" in driver_log(root / "downed")
               for run in on_node1)


def test_slurmctld_stopped_mid_search_with_the_driver_resumed_meanwhile(quadratic, tmp_path, two_nodes):
    """slurmctld is down for 30 s while runs finish and new ones wait to be submitted; the driver is
    SIGKILLed and resumed while it is down (a resume must wait for it, not stop)."""
    root = tmp_path / "runs"
    driver, local, down_at = stop_daemon_mid_search(quadratic, root, "headless", 6, 24, 0.4, "slurmctld")
    time.sleep(8)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    driver = start_cli("resume", "headless", "--root", str(root))
    time.sleep(max(0.0, down_at + 30 - time.monotonic()))
    assert driver.poll() is None, driver.stderr.read()[-3000:]  # still waiting, not stopped
    assert status(root, "headless")["driver"]["alive"]  # status reads the database: no controller needed
    log = driver_log(root / "headless")
    assert "does not answer" in log or "Unable to contact slurm controller" in log, log[-3000:]
    reconfigure(*TWO_NODES)
    finish(driver)
    assert_nothing_lost_or_run_twice(root, "headless", local)


def test_slurmdbd_stopped_for_a_minute_with_driver_kills_and_a_preemption(quadratic, tmp_path, two_nodes):
    """The soak's short form: sacct fails for a minute while runs end and others start, the driver is
    SIGKILLed and resumed four times and an urgent job preempts two runs meanwhile. The driver judges
    the jobs that leave squeue by their result files, says so in driver.log (once per driver) and
    says when sacct answers again."""
    root = tmp_path / "runs"
    driver, local, stopped = stop_daemon_mid_search(quadratic, root, "unaccounted", 8, 48, 0.9, "slurmdbd")
    rng = random.Random(15)
    for kill in range(4):
        time.sleep(rng.uniform(4.0, 9.0))
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        if kill == 1:
            slurm("sbatch", "-p", "urgent", "-N", "1", "--gres=gpu:2", "-J", "urgent-preemptor", "-o", "/dev/null",
                  "--wrap", "sleep 3")
        driver = start_cli("resume", "unaccounted", "--root", str(root))
    time.sleep(max(0.0, stopped + 60 - time.monotonic()))
    log = driver_log(root / "unaccounted")
    assert 1 <= log.count("sacct does not answer") <= 5, log[-3000:]  # once per driver
    summary = status(root, "unaccounted")
    counts = summary["run_counts"]
    assert counts["SUCCEEDED"] >= 2 and counts["LOST"] == 0 and counts["FAILED"] == 0, counts  # judged by their files
    assert "sacct does not answer" in (summary["driver"]["waiting"] or ""), summary["driver"]  # status says so
    shown = cli("status", "unaccounted", "--root", str(root))
    assert "waiting: sacct" in shown.stdout, shown.stdout[-2000:]  # the summary's driver line
    assert driver.poll() is None  # runs of the second wave are still going
    reconfigure(*TWO_NODES)
    finish(driver)
    assert "sacct answers again after" in driver_log(root / "unaccounted")
    summary = assert_nothing_lost_or_run_twice(root, "unaccounted", local)
    assert sum(t["preemptions"] + t["time_limits"] for t in summary["trials"]) >= 2


def test_munged_restarted_mid_search(quadratic, tmp_path, two_nodes):
    """munged is down for 5 s while short runs end and new ones are submitted: sbatch's "Protocol
    authentication error" is retried, not taken as a refusal."""
    config, local = configs(quadratic, "unmunged", trials=6, length=12, sleep=0.5)
    root = tmp_path / "runs"
    driver = launch(config, root)
    running_jobs(root, "unmunged", 4)
    # down just before the first trials validate, so the driver submits their successors meanwhile
    wait_for(lambda: any((root / "unmunged" / "trials" / str(t) / "metrics.jsonl").read_text().count("training") >= 2
                         for t in range(1, 5)), timeout=60, interval=0.2, what="a trial near its end")
    stop_daemon("munged")
    time.sleep(8)
    reconfigure(*TWO_NODES)
    finish(driver)
    log = driver_log(root / "unmunged")
    assert "Protocol authentication error" in log and "retrying in" in log, log[-3000:]
    assert_nothing_lost_or_run_twice(root, "unmunged", local)


def test_what_slurm_clients_print_while_a_daemon_is_down_is_retried_or_waited_out():
    """Literal Slurm 22.05 output seen on the local cluster with munged, slurmctld or slurmdbd down."""
    from hpo_slurm.executors.slurm.parse import is_retryable, is_unreachable

    munge_down = ('sbatch: error: Munge encode failed: Failed to access "/run/munge/munge.socket.2": No such file or '
                  'directory (Did you start munged?) sbatch: error: Batch job submission failed: Protocol '
                  'authentication error')
    controller_down = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
    for message in (munge_down, controller_down):
        assert is_retryable(message) and is_unreachable(message)


def test_a_pool_worker_whose_node_dies_loses_only_its_runs_work_since_its_checkpoint(quadratic, tmp_path, two_nodes):
    """A search on a pool of 4 worker jobs (slurm.pool), two per node; node2 dies mid-run. Slurm
    requeues its workers' jobs; the runs they held resume from their trials' checkpoints on the other
    workers, as a run whose own job's node failed would: no restart counted, nothing run twice."""
    config, local = configs(quadratic, "poolcrash", trials=6, length=40, sleep=0.3)
    write_config(config, config, slurm={"pool": {"workers": 4, "idle_timeout": 20}})
    root = tmp_path / "runs"
    driver, on_node2 = crash_node2_mid_search(config, root, "poolcrash")
    finish(driver)
    experiment = root / "poolcrash"
    summary = status(root, "poolcrash")
    assert summary["state"] == "COMPLETED", summary["state"]
    runs = {r["run_id"]: r for t in summary["trials"] for r in t["runs"]}
    for trial in summary["trials"]:
        assert trial["state"] == "COMPLETED" and trial["restarts"] == 0, trial
        lengths = [length for length, _ in validations(experiment, trial["id"])]
        assert len(lengths) == len(set(lengths)), (trial["id"], lengths)
    for run in on_node2:  # ended with its worker's node, then carried on by a new run of its trial
        assert runs[run["run_id"]]["state"] in ("LOST", "PREEMPTED"), runs[run["run_id"]]
        assert attempts(experiment, run["run_id"]) == 1
    assert all(r["job_id"] == f"pool:{r['run_id']}" for r in runs.values())
    assert db_count(experiment, "SELECT COUNT(*) FROM metrics") == metric_lines(experiment)
    # let go either when the driver saw Slurm requeue its worker's job, or when that job's next start
    # (Slurm may start it again before the driver looks) marked the run it held as abandoned
    for run in on_node2:
        abandoned = [json.loads(p.read_text()).get("abandoned") for p in
                     experiment.glob(f"pool/workers/*/ended/{run['run_id']}.json")]
        assert abandoned == [True] or "Slurm requeued it after NODE_FAIL" in driver_log(experiment), abandoned
    done = cli("launch", str(local), "--root", str(root), "--executor", "local", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for trial in summary["trials"]:
        assert validations(experiment, trial["id"]) == validations(root / "poolcrash-local", trial["id"]), trial["id"]
