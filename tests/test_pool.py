"""Pools of worker jobs (``slurm.pool``) on the local executor: real worker processes, the real command
line, real files. Each search is compared with the same search without a pool (``assert_same_search``),
and the pool's files (``core.pool_files``) tell which worker ran which run.

What is proven: a pooled search gives the results of one job per run, each run started once by one
worker, never more workers than ``workers``; a driver SIGKILLed again and again re-adopts its workers
and their runs; a worker SIGKILLed (a node lost) or SIGTERMed (a preemption) costs its run only what
the run had not checkpointed, and the run goes on on another worker; ``hpo-slurm stop`` withdraws
queued runs, stops running ones and leaves no process behind; idle workers end by themselves and the
pool grows back; config mistakes are one line naming the file and the key."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import pytest

from driver_helpers import (cli, copy_example, db_count, launch_with_kills, metric_lines, start_cli, status, wait_for,
                            write_config)

WORKERS = 2
# examples/quadratic/adaptive.yaml made small: 8 trials, rungs at 4 and 16, 4 at once (2 wait in the
# queue of a pool of 2), one continuation (tN-r2, from 4 to 16) to interrupt
SMALL = {"searcher": {"max_trials": 8, "max_length": {"batches": 16}, "max_concurrent_trials": 4}}
VARIANTS: Dict[str, Dict[str, Any]] = {"full": {}, "small": SMALL}


# ---- reading an experiment's files ------------------------------------------------------------------
def validations(experiment: Path) -> Dict[Tuple[int, int], float]:
    """(trial id, length) -> validation_loss. A length validated twice (a run stopped between its
    validation and its checkpoint validates again when resumed) must have the same value."""
    found: Dict[Tuple[int, int], Set[float]] = {}
    for path in sorted(experiment.glob("trials/*/metrics.jsonl")):
        for line in metric_file(path):
            if line["kind"] == "validation":
                found.setdefault((int(path.parent.name), line["length"]), set()).add(line["metrics"]["validation_loss"])
    assert all(len(values) == 1 for values in found.values()), {k: v for k, v in found.items() if len(v) > 1}
    return {key: values.pop() for key, values in found.items()}


def assert_same_search(experiment: Path, reference: Path) -> None:
    """The search in ``experiment`` is the ``reference`` search: the same trials (hyperparameters by
    id), as many trials ending at each length, and wherever both trained a trial to a length the same
    validation_loss, bit for bit (a resumed trial ends exactly as an uninterrupted one would).

    Not every validation: asynchronous ASHA promotes by the order in which rungs end, so timing alone
    (without a pool: 0.001 against 0.002 s a unit) can put two trials in each other's bracket. So at
    least 3/4 of the reference's validations must be in both, and usually all are."""
    mine, theirs = status(experiment.parent, experiment.name), status(reference.parent, reference.name)
    assert {t["id"]: t["hparams"] for t in mine["trials"]} == {t["id"]: t["hparams"] for t in theirs["trials"]}
    assert Counter(t["length_done"] for t in mine["trials"]) == Counter(t["length_done"] for t in theirs["trials"])
    ours, expected = validations(experiment), validations(reference)
    common = ours.keys() & expected.keys()
    assert len(common) >= 0.75 * len(expected), (sorted(ours), sorted(expected))
    assert {key: ours[key] for key in common} == {key: expected[key] for key in common}


def metric_file(path: Path) -> List[Dict[str, Any]]:
    """The complete lines of a metrics file (a trial killed by SIGKILL may leave a torn last line)."""
    lines = []
    for text in path.read_text().splitlines() if path.exists() else []:
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines


def trained(experiment: Path, run_id: str) -> List[int]:
    """The lengths run ``run_id`` reported training at, in order."""
    trial_id = run_id[1:].split("-")[0]
    return [line["length"] for line in metric_file(experiment / "trials" / trial_id / "metrics.jsonl")
            if line["kind"] == "training" and line["run"] == run_id]


def heartbeats(experiment: Path) -> Dict[str, Dict[str, Any]]:
    """Worker name -> its ``alive.json``."""
    beats = {}
    for path in experiment.glob("pool/workers/*/alive.json"):
        try:
            beats[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return beats


def worker_record(experiment: Path) -> Dict[str, Dict[str, Any]]:
    """``pool/workers.json``'s workers, by name."""
    return json.loads((experiment / "pool" / "workers.json").read_text())["workers"]


def ended_on(experiment: Path) -> Dict[str, List[str]]:
    """Run id -> the workers whose ``ended/`` folder has it."""
    where: Dict[str, List[str]] = {}
    for path in experiment.glob("pool/workers/*/ended/*.json"):
        where.setdefault(path.stem, []).append(path.parent.parent.name)
    return where


def ended_file(experiment: Path, run_id: str) -> Dict[str, Any]:
    (path,) = experiment.glob(f"pool/workers/*/ended/{run_id}.json")
    return json.loads(path.read_text())


def pool_names(folder: Path) -> List[str]:
    return sorted(path.name for path in folder.glob("*.json"))


def trial_of(summary: Dict[str, Any], run_id: str) -> Dict[str, Any]:
    (trial,) = [t for t in summary["trials"] if any(r["run_id"] == run_id for r in t["runs"])]
    return trial


# ---- processes ----------------------------------------------------------------------------------------
def experiment_processes(experiment: Path) -> List[int]:
    """Live processes of the experiment: worker controllers and workers (their folder is in their
    command line), runs (their spec) and trials (the spec path in their environment)."""
    needle = str(experiment).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in blob:
            pids.append(int(entry.name))
    return pids


def descendants(pid: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> List[int]:
    """SIGKILL ``pid`` and every process below it, frozen first so none escapes (a node lost)."""
    tree = [pid] + descendants(pid)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for member in tree:
            try:
                os.kill(member, sig)
            except ProcessLookupError:
                pass
    return tree


def kill_experiment(experiment: Path) -> None:
    for pid in experiment_processes(experiment):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until_nothing_runs(experiment: Path, timeout: float = 30.0) -> None:
    wait_for(lambda: not experiment_processes(experiment), timeout=timeout, interval=0.2,
             what=f"every process of {experiment.name} to end")


# ---- searches -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Callable[[str], Path]:
    """``reference(variant)``: the experiment folder of the VARIANTS[variant] search run to its end
    without a pool (one local job per run), launched once per module."""
    tmp = tmp_path_factory.mktemp("reference")
    example = copy_example("quadratic", tmp)
    root = tmp / "runs"
    done: Dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in done:
            name = f"reference-{variant}"
            config = write_config(example / "adaptive.yaml", example / f"{name}.yaml", name=name, **VARIANTS[variant])
            launched = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=240)
            assert launched.returncode == 0, launched.stderr[-3000:]
            done[variant] = root / name
        return done[variant]

    return get


def pooled(tmp_path: Path, name: str, variant: str, sleep_per_unit: float, idle_timeout: Any = 60,
           **data: Any) -> Path:
    """The VARIANTS[variant] search as ``name`` on a pool of WORKERS workers, its trials slowed."""
    example = copy_example("quadratic", tmp_path)
    changes = VARIANTS[variant]
    return write_config(example / "adaptive.yaml", example / f"{name}.yaml", name=name, **changes,
                        data={"sleep_per_unit": sleep_per_unit, **data},
                        slurm={"pool": {"workers": WORKERS, "idle_timeout": idle_timeout}})


def launch(config: Path, root: Path) -> subprocess.Popen:
    return start_cli("launch", str(config), "--root", str(root), "--executor", "local")


@contextlib.contextmanager
def searching(config: Path, root: Path, name: str) -> Iterator[subprocess.Popen]:
    """The driver of ``config`` launched as ``name``; whatever happens, nothing of it runs afterwards."""
    driver = launch(config, root)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGCONT)
            driver.kill()
            driver.wait(timeout=30)
        kill_experiment(root / name)


def finish(driver: subprocess.Popen, timeout: float = 180) -> None:
    """The driver ends by itself (nothing hangs) and says the search is over."""
    _, err = driver.communicate(timeout=timeout)
    assert driver.returncode == 0, err[-3000:]


def both_busy(experiment: Path) -> bool:
    return sum(1 for beat in heartbeats(experiment).values() if beat.get("run")) == WORKERS


def all_ended(experiment: Path) -> Dict[str, Dict[str, Any]]:
    """The heartbeats once each of the WORKERS first workers says it ended, else {}."""
    beats = heartbeats(experiment)
    return beats if len(beats) == WORKERS and all(beat["ended"] for beat in beats.values()) else {}


def assert_each_run_once_on_one_worker(experiment: Path, summary: Dict[str, Any], lost: Sequence[str] = ()) -> None:
    """Every run was started once (one attempt line) by one worker (one claim), which recorded how it
    ended (but for the runs ``lost`` with their worker); its job id is ``pool:<run>``; a continuation
    trained on from its checkpoint (it reported nothing at or before the length it resumed from);
    every metric line reached the database once."""
    where = ended_on(experiment)
    for trial in summary["trials"]:
        for run in trial["runs"]:
            run_id = run["run_id"]
            assert run["job_id"] == f"pool:{run_id}", run
            attempts = experiment / "runs" / run_id / "attempts.jsonl"
            assert len(attempts.read_text().splitlines()) == 1, (run, attempts.read_text())
            claims = [path.parent.parent.name for path in experiment.glob(f"pool/workers/*/claimed/{run_id}.json")]
            assert len(claims) == 1, (run, claims)
            assert where.get(run_id, []) == ([] if run_id in lost else claims), (run, where.get(run_id))
            assert (experiment / "runs" / run_id / f"{claims[0]}_log.out").exists(), run
            if run["state"] == "SUCCEEDED" and run["from_length"] > 0:
                assert min(trained(experiment, run_id)) > run["from_length"], run
    assert db_count(experiment, "SELECT COUNT(*) FROM metrics") == metric_lines(experiment)


def busy_continuation(experiment: Path) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(run id, its worker's heartbeat) of a continuation (``tN-r2``: it resumed from the checkpoint
    of rung 4) that a worker runs and that has trained past where it resumed, else None."""
    for beat in heartbeats(experiment).values():
        run = beat.get("run") or ""
        if run.endswith("-r2") and beat.get("ended") is None and trained(experiment, run):
            return run, beat
    return None


def hold_a_continuation(experiment: Path, driver: subprocess.Popen) -> Tuple[str, Dict[str, Any]]:
    def held():
        assert driver.poll() is None, "the search ended before a continuation ran"
        return busy_continuation(experiment)

    return wait_for(held, timeout=90, interval=0.02, what="a worker to train a continuation")


def successor_of(trial: Dict[str, Any], run: Dict[str, Any]) -> Dict[str, Any]:
    """The run of ``trial`` that did the work ``run`` was stopped in (the same target), and succeeded."""
    (successor,) = [r for r in trial["runs"] if r["state"] == "SUCCEEDED" and r["to_length"] == run["to_length"]]
    return successor


def logged_at(line: str) -> float:
    """The epoch time of a driver.log line (``2026-12-05 18:20:42,024 INFO ...``, local time)."""
    return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000


def attempt_started(experiment: Path, run_id: str) -> float:
    return json.loads((experiment / "runs" / run_id / "attempts.jsonl").read_text().splitlines()[0])["time"]


# ---- 1. a pooled search is the search --------------------------------------------------------------
def test_a_pooled_search_has_the_results_of_one_job_per_run(tmp_path, reference):
    root = tmp_path / "runs"
    config = pooled(tmp_path, "pooled", "full", sleep_per_unit=0.002, idle_timeout="5m")
    experiment = root / "pooled"
    with searching(config, root, "pooled") as driver:
        finish(driver)
        # the search is over: the workers end at once (not after their idle timeout of 5 minutes)
        wait_until_nothing_runs(experiment, timeout=20)
    summary = status(root, "pooled")
    assert summary["state"] == "COMPLETED"
    assert len(summary["trials"]) == 16
    assert all(t["restarts"] == 0 and t["preemptions"] == 0 for t in summary["trials"])
    assert all(r["state"] == "SUCCEEDED" for t in summary["trials"] for r in t["runs"])
    assert_same_search(experiment, reference("full"))
    assert_each_run_once_on_one_worker(experiment, summary)
    # never more than `workers` worker processes: each is in the record with its job, and each
    # process start left its submitit pickle
    record = worker_record(experiment)
    assert 1 <= len(record) <= WORKERS, record
    assert all(entry["job_id"] for entry in record.values()), record
    assert len(list(experiment.glob("pool/jobs/*/*/*_submitted.pkl"))) == len(record)
    runs_done = sum(beat["runs"] for beat in heartbeats(experiment).values())
    assert runs_done == sum(len(t["runs"]) for t in summary["trials"])
    assert pool_names(experiment / "pool" / "queue") == [] and pool_names(experiment / "pool" / "withdrawn") == []
    assert all(beat["ended"] for beat in heartbeats(experiment).values())
    # without a pool, as before: a job of its own per run, no pool folder
    plain = reference("full")
    assert not (plain / "pool").exists()
    assert all(r["job_id"].isdigit() for t in status(plain.parent, plain.name)["trials"] for r in t["runs"])


def test_one_trial_takes_one_worker_which_outlives_a_failing_run(tmp_path):
    """One trial whose first run raises halfway: the run fails on its worker (exit 1), which goes on
    to run the restart; the pool never grows past the work there is (one run at a time: one worker)."""
    example = copy_example("quadratic", tmp_path)
    config = write_config(example / "single.yaml", example / "lone.yaml", name="lone", data={"fail_once_trial": 1},
                          slurm={"pool": {"workers": 2, "idle_timeout": 30}})
    root = tmp_path / "runs"
    with searching(config, root, "lone") as driver:
        finish(driver)
        wait_until_nothing_runs(root / "lone", timeout=20)
    experiment = root / "lone"
    summary = status(root, "lone")
    (trial,) = summary["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 1, trial
    assert [(r["run_id"], r["state"]) for r in trial["runs"]] == [("t1-r1", "FAILED"), ("t1-r2", "SUCCEEDED")]
    assert "raised RuntimeError" in trial["runs"][0]["reason"] or "status 1" in trial["runs"][0]["reason"], trial
    assert ended_file(experiment, "t1-r1")["exit_code"] == 1 and ended_file(experiment, "t1-r2")["exit_code"] == 0
    assert ended_on(experiment) == {"t1-r1": ["w1"], "t1-r2": ["w1"]}
    assert list(worker_record(experiment)) == ["w1"]
    assert_each_run_once_on_one_worker(experiment, summary)


# ---- 2. the driver killed at random moments ----------------------------------------------------------
def test_driver_killed_again_and_again_re_adopts_its_workers_and_loses_nothing(tmp_path, reference):
    root = tmp_path / "runs"
    config = pooled(tmp_path, "crashy", "full", sleep_per_unit=0.08, idle_timeout=60)
    experiment = root / "crashy"
    # first between recording runs and queueing them, and between queueing them and recording their
    # job ids; then SIGKILL at random moments
    crash_points = ["before_submit:2", "after_submit:2", "before_submit:1", "after_submit:1"]
    try:
        kills = launch_with_kills(config, root, "crashy", crash_points, 8, random.Random(4321))
        wait_until_nothing_runs(experiment, timeout=20)
    finally:
        kill_experiment(experiment)
    assert kills >= 6, f"the search ended after only {kills} kills"
    summary = status(root, "crashy")
    assert summary["state"] == "COMPLETED"
    assert_same_search(experiment, reference("full"))
    for trial in summary["trials"]:
        assert trial["restarts"] == 0 and trial["preemptions"] == 0, trial
        assert all(r["state"] == "SUCCEEDED" for r in trial["runs"]), trial
        spans = [(r["from_length"], r["to_length"]) for r in trial["runs"]]
        assert len(spans) == len(set(spans)), trial  # no rung trained twice
    assert_each_run_once_on_one_worker(experiment, summary)
    assert pool_names(experiment / "pool" / "queue") == []  # no queue entry left behind
    assert pool_names(experiment / "pool" / "withdrawn") == []
    # the workers the first driver started served the whole search: every later driver re-adopted
    # them (and the runs they held) instead of starting others
    log = (experiment / "driver.log").read_text()
    assert log.count("pool: started") == 1, log
    resumed = [logged_at(line) for line in log.splitlines() if re.search(r"resumed: \d+ live jobs re-adopted", line)]
    assert len(resumed) >= kills // 2, log
    record = worker_record(experiment)
    assert sorted(record) == ["w1", "w2"] and all(e["job_id"] and e["ended"] is None for e in record.values()), record
    assert all(beat["started"] < resumed[0] for beat in heartbeats(experiment).values())
    ran = [json.loads(path.read_text())["time"] for path in experiment.glob("pool/workers/*/ended/*.json")]
    assert sum(1 for t in ran if t > resumed[0]) >= len(ran) // 2, (resumed, sorted(ran))


# ---- 3. a worker killed or preempted --------------------------------------------------------------
def interrupt_a_worker(tmp_path: Path, name: str, interrupt):
    """A search of the small example on 2 workers; once a worker holds a rung continuation that has
    trained a little, ``interrupt(its heartbeat)``; the search runs to its end. (experiment folder,
    status summary, the interrupted run's trial, the run, its worker)."""
    root = tmp_path / "runs"
    config = pooled(tmp_path, name, "small", sleep_per_unit=0.1, report_every=2)
    experiment = root / name
    with searching(config, root, name) as driver:
        run_id, beat = hold_a_continuation(experiment, driver)
        interrupt(beat)
        finish(driver)
        wait_until_nothing_runs(experiment, timeout=20)
    summary = status(root, name)
    assert summary["state"] == "COMPLETED"
    return experiment, summary, trial_of(summary, run_id), run_id, beat["worker"]


def assert_preempted_and_resumed(experiment: Path, trial, run_id: str, worker: str, reference: Path) -> None:
    """The run checkpointed and stopped as preempted (no restart counted), and its trial went on from
    that checkpoint on another worker, ending as the search ``reference`` (the same without a pool)."""
    assert_same_search(experiment, reference)
    runs = {r["run_id"]: r for r in trial["runs"]}
    assert runs[run_id]["state"] == "PREEMPTED", trial
    assert trial["restarts"] == 0 and trial["preemptions"] == 1, trial
    result = json.loads((experiment / "runs" / run_id / "result.json").read_text())
    assert result["status"] == "stopped" and result["stop_reason"] == "preempted", result
    successor = successor_of(trial, runs[run_id])
    assert min(trained(experiment, successor["run_id"])) > max(trained(experiment, run_id))
    assert ended_on(experiment)[successor["run_id"]] != [worker]


def test_a_worker_killed_outright_has_its_run_checkpoint_and_go_on_elsewhere(tmp_path, reference):
    """SIGKILL to a worker's process group (its job's controller and the worker: ``kill -9`` of the
    worker job): the run, in a session of its own, is told by SIGTERM that its worker died; it
    checkpoints and stops (PREEMPTED: no restart counted), never training on beside the run that
    resumes it from that checkpoint on another worker."""
    experiment, summary, trial, run_id, worker = interrupt_a_worker(
        tmp_path, "killed", lambda beat: os.killpg(int(beat["job_id"]), signal.SIGKILL))  # its controller's pid
    assert_preempted_and_resumed(experiment, trial, run_id, worker, reference("small"))
    assert not list(experiment.glob(f"pool/workers/*/ended/{run_id}.json"))  # its worker never said
    # the killed run had stopped before its successor started: never two processes on one trial
    result = json.loads((experiment / "runs" / run_id / "result.json").read_text())
    successor = successor_of(trial, {r["run_id"]: r for r in trial["runs"]}[run_id])
    assert result["ended"] <= attempt_started(experiment, successor["run_id"])
    assert_each_run_once_on_one_worker(experiment, summary, lost=[run_id])
    # the pool reports the dead worker: its record and `status` say how it ended
    assert worker_record(experiment)[worker]["ended"] == "FAILED"
    shown = {w["name"]: w for w in summary["pool"]["workers"]}
    assert shown[worker]["state"] == "ended" and shown[worker]["ended_how"] == "failed", shown[worker]


def test_a_worker_lost_with_its_run_costs_only_the_progress_since_the_checkpoint(tmp_path, reference):
    """SIGKILL to a worker and everything below it, the run and its trial too, as when its node
    fails: the run ends (nothing hangs; it wrote no result) and its trial goes on from its last
    checkpoint on another worker, ending as it would have. On the local executor the dead worker's
    job is FAILED (exit -9), so the run counts as a restart (a Slurm node failure would not)."""
    root = tmp_path / "runs"
    config = pooled(tmp_path, "lost", "small", sleep_per_unit=0.1, report_every=2)
    experiment = root / "lost"
    with searching(config, root, "lost") as driver:
        run_id, beat = hold_a_continuation(experiment, driver)
        worker = beat["worker"]
        tree = kill_tree(int(beat["job_id"]))
        assert len(tree) >= 4, tree  # controller, worker, run, trial (and its shell)
        finish(driver, timeout=120)
        wait_until_nothing_runs(experiment, timeout=20)

    summary = status(root, "lost")
    assert summary["state"] == "COMPLETED"
    assert_same_search(experiment, reference("small"))
    trial = trial_of(summary, run_id)
    runs = {r["run_id"]: r for r in trial["runs"]}
    assert runs[run_id]["state"] == "FAILED", trial
    assert worker in runs[run_id]["reason"] and "-9" in runs[run_id]["reason"], runs[run_id]
    assert trial["restarts"] == 1 and trial["preemptions"] == 0, trial
    assert not (experiment / "runs" / run_id / "result.json").exists()
    assert not list(experiment.glob(f"pool/workers/*/ended/{run_id}.json"))
    # the next run resumed from the trial's checkpoint at the rung (4), not from scratch, elsewhere
    successor = successor_of(trial, runs[run_id])
    assert successor["from_length"] == runs[run_id]["from_length"] > 0
    assert ended_on(experiment)[successor["run_id"]] != [worker]
    assert_each_run_once_on_one_worker(experiment, summary, lost=[run_id])
    assert worker_record(experiment)[worker]["ended"] == "FAILED"


def test_a_preempted_worker_checkpoints_its_run_which_resumes_on_another(tmp_path, reference):
    """SIGTERM to a worker (a preemption's signal): its run checkpoints and stops, the worker takes no
    more work and ends, the run's trial goes on from that checkpoint on another worker, counted as a
    preemption, not a restart."""
    experiment, summary, trial, run_id, worker = interrupt_a_worker(
        tmp_path, "preempted", lambda beat: os.kill(beat["pid"], signal.SIGTERM))  # the worker's own process
    assert_preempted_and_resumed(experiment, trial, run_id, worker, reference("small"))
    assert ended_file(experiment, run_id)["exit_code"] == 0
    assert_each_run_once_on_one_worker(experiment, summary)
    # the preempted worker took nothing more and ended by itself (exit 0)
    stopped_at = ended_file(experiment, run_id)["time"]
    later = [path.stem for path in (experiment / "pool" / "workers" / worker / "ended").glob("*.json")
             if json.loads(path.read_text())["time"] > stopped_at]
    assert later == [], later
    assert heartbeats(experiment)[worker]["ended"] is not None
    assert worker_record(experiment)[worker]["ended"] == "COMPLETED"


# ---- 4. stop ----------------------------------------------------------------------------------------
def test_stop_withdraws_queued_runs_stops_running_ones_and_leaves_nothing_running(tmp_path):
    root = tmp_path / "runs"
    # 4 trials at once on 2 workers: 2 runs wait in the queue; each run lasts seconds
    config = pooled(tmp_path, "stoppable", "full", sleep_per_unit=1.0)
    experiment = root / "stoppable"

    def busy():
        held = {b["run"] for b in heartbeats(experiment).values() if b.get("run")}
        return held if len(held) == WORKERS and pool_names(experiment / "pool" / "queue") else None

    with searching(config, root, "stoppable") as driver:
        held = wait_for(busy, timeout=60, what="both workers busy and runs queued")
        # the driver is the only writer of the database: no worker, run or trial has it open
        for pid in experiment_processes(experiment):
            assert not [fd for fd in Path(f"/proc/{pid}/fd").iterdir() if "experiment.db" in _link(fd)], pid
        stopped = cli("stop", "stoppable", "--root", str(root), timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        finish(driver, timeout=60)
        wait_until_nothing_runs(experiment, timeout=30)

    summary = status(root, "stoppable")
    assert summary["state"] == "STOPPED" and summary["driver"]["alive"] is False
    assert all(t["state"] == "STOPPED_EARLY" for t in summary["trials"])
    runs = {r["run_id"]: r for t in summary["trials"] for r in t["runs"]}
    assert all(r["state"] == "CANCELLED" for r in runs.values()), runs
    assert pool_names(experiment / "pool" / "queue") == []
    withdrawn = [name.split(".")[1] for name in pool_names(experiment / "pool" / "withdrawn")]
    assert withdrawn, "no queued run was withdrawn"
    for run_id in withdrawn:  # taken back before any worker claimed it: never started
        assert not (experiment / "runs" / run_id / "attempts.jsonl").exists()
        assert not list(experiment.glob(f"pool/workers/*/claimed/{run_id}.json"))
    for run_id in held:  # running when stopped: told through its stop file, it checkpointed and ended
        assert (experiment / "runs" / run_id / "stop").exists()
        result = json.loads((experiment / "runs" / run_id / "result.json").read_text())
        assert result["status"] == "stopped" and result["stop_reason"] == "search_stopped", result
        assert ended_file(experiment, run_id)["exit_code"] == 0
        assert list(experiment.glob(f"trials/{run_id[1:].split('-')[0]}/checkpoints/*"))
    assert all(beat["ended"] for beat in heartbeats(experiment).values())


# ---- 5. idle workers -----------------------------------------------------------------------------------
def test_idle_workers_end_by_themselves_and_the_pool_grows_back(tmp_path, reference):
    """The driver frozen (SIGSTOP) queues nothing: the workers finish what they hold, idle for their
    idle_timeout and end, the pool not closed. Thawed, the driver starts new workers for the rest."""
    root = tmp_path / "runs"
    config = pooled(tmp_path, "idle", "small", sleep_per_unit=0.05, idle_timeout=1)
    experiment = root / "idle"
    with searching(config, root, "idle") as driver:
        wait_for(lambda: both_busy(experiment), timeout=60, interval=0.02, what="both workers busy")
        driver.send_signal(signal.SIGSTOP)
        frozen = time.time()
        beats = wait_for(lambda: all_ended(experiment), timeout=30, what="the idle workers to end")
        assert not (experiment / "pool" / "closed").exists()  # not told: they timed out
        assert all(beat["runs"] >= 1 and beat["ended"] > frozen for beat in beats.values()), beats
        wait_for(lambda: not [pid for pid in experiment_processes(experiment) if not _zombie(pid)], timeout=20,
                 what="the idle workers' processes to end")
        driver.send_signal(signal.SIGCONT)
        finish(driver)
        wait_until_nothing_runs(experiment, timeout=20)

    summary = status(root, "idle")
    assert summary["state"] == "COMPLETED"
    assert_same_search(experiment, reference("small"))
    assert_each_run_once_on_one_worker(experiment, summary)
    record = worker_record(experiment)
    assert record["w1"]["ended"] == record["w2"]["ended"] == "COMPLETED"
    later = [entry for name, entry in record.items() if name not in beats]
    assert later and all(entry["submitted"] > max(b["ended"] for b in beats.values()) for entry in later), record


def test_a_resumed_driver_replaces_workers_that_idled_out_while_it_was_down(tmp_path, reference):
    """The driver killed while both workers run; they finish and idle out with no driver. The resumed
    driver sees they are gone at once (they wrote heartbeats: they ran) and starts new workers for the
    runs still to come, without waiting for the scheduler to show them."""
    root = tmp_path / "runs"
    config = pooled(tmp_path, "gone", "small", sleep_per_unit=0.05, idle_timeout=0.5)
    experiment = root / "gone"
    with searching(config, root, "gone") as driver:
        wait_for(lambda: both_busy(experiment), timeout=60, interval=0.02, what="both workers busy")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        wait_for(lambda: all_ended(experiment), timeout=30, what="the idle workers to end")
    resumed = start_cli("resume", "gone", "--root", str(root))
    try:
        # the resumed driver has runs to queue: a worker must come within a few of its ticks
        wait_for(lambda: len(worker_record(experiment)) > WORKERS, timeout=4, interval=0.1,
                 what="the resumed driver to start a worker")
        finish(resumed)
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.wait(timeout=30)
        kill_experiment(experiment)
    assert status(root, "gone")["state"] == "COMPLETED"
    assert_same_search(experiment, reference("small"))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


# ---- 6. config mistakes ------------------------------------------------------------------------------
@pytest.mark.parametrize("pool, key, says", [
    ({"time": 10}, "slurm.pool.workers", "missing required key"),
    ({"workers": 0}, "slurm.pool.workers", "expected an integer from 1"),
    ({"workers": "two"}, "slurm.pool.workers", "'two'"),
    ({"workers": 2, "idle_timeout": -1}, "slurm.pool.idle_timeout", "more than 0 seconds"),
    ({"workers": 2, "idle_timeout": "5x"}, "slurm.pool.idle_timeout", "'5x'"),
    ({"workers": 2, "time": "abc"}, "slurm.pool.time", "'abc'"),
    ({"workers": 2, "idel_timeout": 3}, "slurm.pool.idel_timeout", "did you mean 'idle_timeout'"),
])
def test_pool_config_mistakes_are_one_line_naming_file_and_key(tmp_path, pool, key, says):
    example = copy_example("quadratic", tmp_path)
    config = write_config(example / "adaptive.yaml", example / "bad.yaml", slurm={"pool": pool})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"bad.yaml: {key}:" in lines[0] and says in lines[0], lines[0]
    assert not root.exists() or not any(root.iterdir())  # nothing half-created
