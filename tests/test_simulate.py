"""The simulated cluster and `hpo-slurm simulate`: the real driver and store on a virtual clock."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hpo_slurm.cli import cli
from hpo_slurm.executors.base import JobState, JobStatus, SchedulerError, SubmitError
from hpo_slurm.executors.simulated_world import Faults
from hpo_slurm.config.schema import load_config
from hpo_slurm.config.yaml12 import yaml_load
from hpo_slurm.engine.simulation import Simulation, create_experiment, dump_config, simulate
from hpo_slurm.core.protocol import MetricLine, RunResult, RunStatus, StopReason
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.reporting.status import summarize

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "benchmarks" / "configs"
HARTMANN = "hpo_slurm.benchmarks.hartmann:good"
CURVES = "hpo_slurm.benchmarks.curves:high"


def config(tmp_path: Path, base: str = "hartmann6.yaml", **searcher) -> Path:
    data = yaml.safe_load((CONFIGS / base).read_text())
    data["searcher"].update(searcher)
    if data["searcher"]["name"] != "adaptive_asha":
        for key in ("mode", "divisor", "max_rungs"):
            data["searcher"].pop(key)
    path = tmp_path / f"{base.split('.')[0]}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def comparable(result):
    """What must not change between equivalent runs (names, folders and wall time may)."""
    return {k: v for k, v in result.items() if k not in ("experiment", "dir", "wall_seconds", "driver_restarts")}


def rows(result, sql):
    conn = sqlite3.connect(f"file:{Path(result['dir']) / 'experiment.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_same_seed_same_result_other_seed_other_result(tmp_path):
    path = config(tmp_path, max_trials=64)
    faults = Faults(stragglers=0.2, failures=0.1, preemptions=0.1)
    first = simulate(path, HARTMANN, tmp_path / "runs", name="a", workers=8, seed=3, faults=faults)
    second = simulate(path, HARTMANN, tmp_path / "runs", name="b", workers=8, seed=3, faults=faults)
    other = simulate(path, HARTMANN, tmp_path / "runs", name="c", workers=8, seed=4, faults=faults)
    assert comparable(first) == comparable(second)
    assert first["best"] != other["best"]
    assert rows(first, "SELECT id, hparams, state, best_metric FROM trials") == \
        rows(second, "SELECT id, hparams, state, best_metric FROM trials")


def test_records_the_search_in_sqlite_like_launch(tmp_path):
    result = simulate(config(tmp_path, max_trials=48), CURVES, tmp_path / "runs", name="rec", workers=6)
    assert result["state"] == "COMPLETED"
    assert result["trials"] == 48
    assert rows(result, "SELECT executor, state FROM experiment") == [("simulated", "COMPLETED")]
    assert rows(result, "SELECT DISTINCT state FROM runs") == [("SUCCEEDED",)]
    assert rows(result, "SELECT COUNT(*) FROM runs")[0][0] == result["runs"]
    # one validation line per run, ingested once, at the run's target length
    assert rows(result, "SELECT COUNT(*) FROM metrics WHERE kind = 'validation'")[0][0] == result["runs"]
    assert rows(result, "SELECT COUNT(*) FROM runs r JOIN metrics m ON m.run_id = r.id AND m.length = r.to_length")[0][0] \
        == result["runs"]
    kinds = {k for (k,) in rows(result, "SELECT DISTINCT kind FROM events")}
    assert {"experiment_started", "created", "validation", "run_ended", "closed", "shutdown"} <= kinds
    summary = summarize(Path(result["dir"]) and __import__("hpo_slurm.core.layout", fromlist=["x"]).ExperimentLayout(
        Path(result["dir"])))
    assert summary["state"] == "COMPLETED" and summary["progress"] == pytest.approx(1.0)
    assert summary["best"]["metric"] <= result["best"]["metric"]
    # busy time, makespan and utilization agree with each other
    assert 0 < result["utilization"] <= 1
    assert result["compute_seconds"] == pytest.approx(result["utilization"] * 6 * result["makespan_seconds"])


def test_incumbent_trace_improves_at_full_length(tmp_path):
    result = simulate(config(tmp_path, max_trials=64), HARTMANN, tmp_path / "runs", workers=4, seed=1)
    trace = result["incumbent_trace"]
    assert trace, "some trial reached max_length"
    computes = [c for c, _ in trace]
    metrics = [m for _, m in trace]
    assert computes == sorted(computes) and computes[-1] <= result["compute_seconds"]
    assert all(b < a for a, b in zip(metrics, metrics[1:]))
    assert metrics[-1] == result["best"]["metric"]
    best = rows(result, "SELECT MIN(json_extract(metrics, '$.loss')) FROM metrics WHERE length = 100")[0][0]
    assert best == pytest.approx(result["best"]["metric"])


@pytest.mark.parametrize("crash_at, sampler", [(1, "random"), (7, "random"), (40, "random"), (40, "tpe")])
def test_kill_and_resume_gives_the_same_result(tmp_path, crash_at, sampler):
    path = config(tmp_path, max_trials=64, sampler=sampler)
    faults = Faults(stragglers=0.1, failures=0.1, preemptions=0.1)
    whole = simulate(path, HARTMANN, tmp_path / "runs", name="whole", workers=8, seed=5, faults=faults)

    layout, cfg = create_experiment(path, tmp_path / "runs", name="killed", seed=5)
    sim = Simulation(layout, HARTMANN, workers=8, seed=5, faults=faults)
    sim.run(max_ticks=crash_at)
    sim.crash()  # no searcher checkpoint, the store just closes: as SIGKILL between two ticks
    resumed = sim.run()
    assert resumed["driver_restarts"] == 1
    assert comparable(resumed) == {**comparable(whole), "events": resumed["events"]}
    assert resumed["events"] == whole["events"] + 1  # the "resumed" event


def test_an_interrupted_commit_leaves_the_searcher_snapshot_as_it_was(tmp_path):
    """Ctrl-C lands after the searcher decided but before its decisions were committed; the exiting
    driver's last snapshot must not include them, so the resumed search is the uninterrupted one."""
    path = config(tmp_path, max_trials=64)
    whole = simulate(path, HARTMANN, tmp_path / "runs", name="whole", workers=8, seed=5)
    layout, _ = create_experiment(path, tmp_path / "runs", name="interrupted", seed=5)
    sim = Simulation(layout, HARTMANN, workers=8, seed=5)
    sim.run(max_ticks=7)

    def interrupt(rows):
        raise KeyboardInterrupt

    sim.store.append_searcher_events = interrupt
    with pytest.raises(KeyboardInterrupt):
        sim.run()
    sim.close()  # what an exiting driver does: checkpoint the searcher, close the store
    sim.crash()
    resumed = sim.run()
    assert comparable(resumed) == {**comparable(whole), "events": resumed["events"]}
    assert resumed["events"] == whole["events"] + 1  # the "resumed" event


def test_between_polls_only_trials_seen_running_are_read(tmp_path):
    """Queued trials cannot have written metrics: between two polls their files are not touched."""
    path = config(tmp_path, max_trials=64, max_concurrent_trials=24)
    layout, _ = create_experiment(path, tmp_path / "runs", name="reads", seed=1)
    sim = Simulation(layout, HARTMANN, workers=8, seed=1)
    sim.open_driver()
    driver, read = sim.driver, []
    driver.poll_interval_s = 60.0
    read_metrics = sim.workspace.read_metrics
    sim.workspace.read_metrics = lambda trial_id, offset: (read.append(trial_id), read_metrics(trial_id, offset))[1]
    driver.tick()  # polls: every trial with a run is read
    running = {run["trial_id"] for run in driver.runs.values() if run["state"] == "RUNNING"}
    assert len(running) == 8 and set(read) == set(driver.active) and len(driver.active) > 8
    read.clear()
    driver.tick()  # the same moment: no poll
    assert sorted(read) == sorted(running)


def layout_of(sim: Simulation) -> ExperimentLayout:
    return ExperimentLayout(sim.layout.dir)


def two_running_runs(tmp_path, name: str):
    """A simulated search one tick in: (simulation, its driver, the ids of two running runs)."""
    layout, _ = create_experiment(config(tmp_path, max_trials=16), tmp_path / "runs", name=name, seed=1)
    sim = Simulation(layout, HARTMANN, workers=4, seed=1)
    sim.open_driver()
    sim.driver.tick()
    first, second = [run["id"] for run in sim.driver.runs.values() if run["state"] == "RUNNING"][:2]
    return sim, sim.driver, first, second


def test_a_job_gone_while_accounting_is_down_waits_for_an_answer_unless_it_left_a_result(tmp_path):
    sim, driver, first, second = two_running_runs(tmp_path, "unaccounted")
    unaccounted = JobStatus(JobState.UNKNOWN, reason="sacct failed", confirmed=False)
    driver.clock = lambda: sim.clock() + 3600  # long after submission: no grace for new jobs
    driver._on_job_status(first, unaccounted)  # no result file: how it ended is unknown, so ask again
    assert driver.runs[first]["state"] == "RUNNING"
    sim.workspace.results[second] = RunResult(RunStatus.STOPPED, 0, stop_reason=StopReason.PREEMPTED)
    driver._on_job_status(second, unaccounted)  # it left a result: judged by it
    assert driver.runs[second]["state"] == "PREEMPTED"
    driver._on_job_status(first, JobStatus(JobState.UNKNOWN))  # the scheduler says it is gone: lost
    assert driver.runs[first]["state"] == "LOST"


def test_status_shows_how_far_a_running_trial_trained_inside_its_rung(tmp_path):
    sim, driver, first, _ = two_running_runs(tmp_path, "progress")
    trial_id = driver.runs[first]["trial_id"]
    target = driver.trials[trial_id]["target_length"]
    line = MetricLine(kind="training", length=target - 1, metrics={"loss": 0.5}, run=first, time=sim.clock())
    sim.workspace.lines.setdefault(trial_id, []).append(line)
    driver.tick()
    (trial,) = [t for t in summarize(layout_of(sim), trials="all")["trials"] if t["id"] == trial_id]
    assert (trial["length_done"], trial["length_trained"], trial["target_length"]) == (0, target - 1, target)


def test_a_running_job_seen_pending_again_was_requeued_and_shows_as_queued(tmp_path):
    _, driver, first, second = two_running_runs(tmp_path, "requeued")
    driver._on_job_status(first, JobStatus(JobState.PENDING, reason="squeue failed", confirmed=False))
    assert driver.runs[first]["state"] == "RUNNING"  # nothing known: nothing changes
    driver._on_job_status(second, JobStatus(JobState.PENDING, reason="REQUEUED"))
    assert driver.runs[second]["state"] == "SUBMITTED"
    assert driver.trials[driver.runs[second]["trial_id"]]["state"] == "QUEUED"
    driver._on_job_status(second, JobStatus(JobState.RUNNING))
    assert driver.runs[second]["state"] == "RUNNING"
    assert driver.trials[driver.runs[second]["trial_id"]]["state"] == "RUNNING"


def ten_ticks_in(tmp_path, name: str) -> Simulation:
    """A simulated 64-trial search on 8 workers, ten driver ticks in (jobs running and queued)."""
    layout, _ = create_experiment(config(tmp_path, max_trials=64), tmp_path / "runs", name=name, seed=4)
    sim = Simulation(layout, HARTMANN, workers=8, seed=4)
    sim.run(max_ticks=10)
    return sim


def test_a_stop_committed_but_not_yet_cancelled_is_cancelled_after_a_crash(tmp_path):
    """The driver records that the search stops, then dies before scancel: the resumed driver cancels
    the jobs it inherited and sees each one end."""
    sim = ten_ticks_in(tmp_path, "stopped")
    cancel, asked = sim.executor.cancel, []

    class Killed(Exception):
        pass

    def die(job_ids):
        asked.extend(job_ids)
        raise Killed()

    sim.workspace.stop_search = True
    sim.executor.cancel = die
    with pytest.raises(Killed):
        sim.run()
    sim.crash()
    sim.executor.cancel = cancel
    stop_time = sim.clock.t
    result = sim.run()
    assert result["state"] == "STOPPED"
    assert asked and all(sim.executor.jobs[job_id].state == JobState.CANCELLED for job_id in asked)
    assert not [job for job in sim.executor.jobs.values() if job.state.live]
    assert rows(result, "SELECT COUNT(*) FROM runs WHERE ended_at IS NULL") == [(0,)]
    assert result["makespan_seconds"] == pytest.approx(stop_time)  # the jobs ended when the search stopped


def test_a_cancel_the_scheduler_did_not_take_is_tried_again(tmp_path):
    sim = ten_ticks_in(tmp_path, "retried")
    cancel, refused = sim.executor.cancel, []

    def refuse_twice(job_ids):
        if len(refused) < 2:
            refused.append(list(job_ids))
            raise SchedulerError("scancel failed: timed out")
        cancel(job_ids)

    sim.workspace.stop_search = True
    sim.executor.cancel = refuse_twice
    result = sim.run()
    assert len(refused) == 2 and refused[0] == refused[1]
    assert result["state"] == "STOPPED"
    assert not [job for job in sim.executor.jobs.values() if job.state.live]
    assert rows(result, "SELECT COUNT(*) FROM runs WHERE ended_at IS NULL") == [(0,)]


@pytest.mark.parametrize("scheduler_down", [False, True])
def test_crash_between_submit_and_recording_the_job_ids(tmp_path, scheduler_down):
    """The driver dies right after the cluster accepted a batch: the resumed driver finds the jobs
    by name instead of submitting them twice, also when the scheduler cannot be asked at first."""
    path = config(tmp_path, max_trials=32)
    whole = simulate(path, CURVES, tmp_path / "runs", name="whole", workers=4, seed=2)
    layout, _ = create_experiment(path, tmp_path / "runs", name="killed", seed=2)
    sim = Simulation(layout, CURVES, workers=4, seed=2)
    submit = sim.executor.submit
    calls = {"n": 0}

    class Killed(Exception):
        pass

    def submit_then_die(requests):
        jobs = submit(requests)
        calls["n"] += 1
        if calls["n"] == 5:
            raise Killed()
        return jobs

    sim.executor.submit = submit_then_die
    with pytest.raises(Killed):
        sim.run()
    sim.crash()
    sim.executor.submit = submit
    find, lookups = sim.executor.find, []
    if scheduler_down:
        def find_when_up(requests):  # the controller does not answer the first two lookups
            lookups.append([r.run_id for r in requests])
            if len(lookups) <= 2:
                raise SchedulerError("squeue failed: timed out")
            return find(requests)

        sim.executor.find = find_when_up
    resumed = sim.run()
    assert resumed["runs"] == whole["runs"]  # nothing submitted twice
    assert resumed["best"] == whole["best"]
    if scheduler_down:
        assert len(lookups) >= 3 and lookups[0] == lookups[2]  # the same runs, looked up until found
    else:
        assert resumed["compute_seconds"] == whole["compute_seconds"]


def test_a_search_stopped_while_its_jobs_cannot_be_looked_up_leaves_them_a_stop_request(tmp_path):
    """Unbound runs whose jobs may exist (the driver died right after sbatch, and the scheduler does
    not answer the lookup) are stopped with the search: their jobs, if any, end as soon as they start."""
    path = config(tmp_path, max_trials=32)
    layout, _ = create_experiment(path, tmp_path / "runs", name="unreachable", seed=2)
    sim = Simulation(layout, CURVES, workers=4, seed=2)
    submit, batches = sim.executor.submit, []

    class Killed(Exception):
        pass

    def submit_then_die(requests):
        jobs = submit(requests)
        batches.append([r.run_id for r in requests])
        if len(batches) == 3:
            raise Killed()
        return jobs

    def unreachable(requests):
        raise SchedulerError("squeue failed: timed out")

    sim.executor.submit = submit_then_die
    with pytest.raises(Killed):
        sim.run()
    sim.crash()
    sim.executor.submit, sim.executor.find = submit, unreachable
    sim.workspace.stop_search = True
    sim.open_driver()
    sim.driver.tick()
    assert set(batches[-1]) <= sim.workspace.stop_requests
    assert all(sim.driver.runs[run_id]["state"] == "CANCELLED" for run_id in batches[-1])


def test_a_refused_submission_fails_the_run_and_the_search_carries_on(tmp_path):
    """sbatch refuses for good (a partition removed while the search ran): each refusal is a failed
    run without a job, counted against max_restarts; the search ends instead of waiting forever."""
    path = config(tmp_path, max_trials=4, max_concurrent_trials=4)
    path.write_text(path.read_text().replace("max_restarts: 3", "max_restarts: 1"))
    layout, _ = create_experiment(path, tmp_path / "runs", name="refused", seed=1)
    sim = Simulation(layout, HARTMANN, workers=4, seed=1)

    def refuse(requests):
        raise SubmitError("sbatch: error: invalid partition specified: gone", retry=False)

    sim.executor.submit = refuse
    result = sim.run()
    assert result["state"] == "ERRORED"
    assert rows(result, "SELECT DISTINCT state, job_id FROM runs") == [("FAILED", None)]
    assert rows(result, "SELECT COUNT(*) FROM runs")[0][0] == 4 * 2  # a first try and max_restarts 1
    (message,) = {m for (m,) in rows(result, "SELECT message FROM trials")}
    assert message == "failed 2 times (max_restarts 1); last: submission refused: sbatch: error: invalid partition specified: gone"


def test_failures_and_preemptions_are_handled(tmp_path):
    path = config(tmp_path, max_trials=64)
    result = simulate(path, HARTMANN, tmp_path / "runs", workers=8, seed=7,
                      faults=Faults(failures=0.15, preemptions=0.15))
    injected = result["injected"]
    assert injected["failed"] > 0 and injected["preempted"] > 0
    assert result["state"] == "COMPLETED"
    assert result["restarts"] == injected["failed"]  # every failure counted against max_restarts
    assert result["preemptions"] == injected["preempted"]  # preemptions counted, not as failures
    states = dict(rows(result, "SELECT state, COUNT(*) FROM runs GROUP BY state"))
    assert states.get("FAILED") == injected["failed"] and states.get("PREEMPTED") == injected["preempted"]
    # a preempted run keeps its work: the next run of the trial starts from the preemption point
    clean = simulate(path, HARTMANN, tmp_path / "runs", name="clean", workers=8, seed=7)
    assert result["compute_seconds"] > clean["compute_seconds"]
    assert result["trials"] == clean["trials"] == 64


def test_jobs_wait_in_the_schedulers_queue_before_they_take_a_worker(tmp_path):
    """With a queue wait, every job waits its drawn time before it may start: the same random search
    spends the same compute and finds the same best, later."""
    path = config(tmp_path, base="hartmann6.yaml", name="random", max_trials=32, max_concurrent_trials=8)
    clean = simulate(path, HARTMANN, tmp_path / "runs", name="clean", workers=8, seed=5)
    waited = simulate(path, HARTMANN, tmp_path / "runs", name="waited", workers=8, seed=5,
                      faults=Faults(queue_wait_median_s=1200.0))
    assert waited["state"] == clean["state"] == "COMPLETED"
    assert waited["trials"] == clean["trials"] == 32 and waited["runs"] == clean["runs"]
    assert waited["compute_seconds"] == pytest.approx(clean["compute_seconds"])  # waiting costs no GPU time
    assert waited["best"] == clean["best"]
    waits = waited["queue_wait"]
    assert waits["jobs"] == waited["runs"] and clean["queue_wait"]["total_s"] == 0
    # every job waited, so the search takes longer by at least the shortest chain of waits it had to sit through
    assert waited["makespan_seconds"] > clean["makespan_seconds"] + waits["total_s"] / waits["jobs"]
    # the same seed draws the same waits
    again = simulate(path, HARTMANN, tmp_path / "runs", name="again", workers=8, seed=5,
                     faults=Faults(queue_wait_median_s=1200.0))
    assert comparable(again) == comparable(waited)


def test_queue_waits_are_lognormal_around_the_median_asked():
    faults = Faults(queue_wait_median_s=600.0, queue_wait_sigma=1.0)
    draws = sorted(faults.queue_wait(3, f"t{i}-r1") for i in range(2001))
    assert 500 < draws[1000] < 720  # the median
    assert all(d > 0 for d in draws) and draws[-1] > 3 * 600  # a long right tail
    fixed = Faults(queue_wait_median_s=600.0, queue_wait_sigma=0.0)
    assert {fixed.queue_wait(3, f"t{i}-r1") for i in range(10)} == {600.0}
    assert Faults().queue_wait(3, "t1-r1") == 0.0


def test_a_search_stopped_while_its_jobs_wait_in_the_queue_cancels_them_before_they_start(tmp_path):
    path = config(tmp_path, max_trials=16, max_concurrent_trials=8)
    layout, _ = create_experiment(path, tmp_path / "runs", name="stopped", seed=4)
    sim = Simulation(layout, HARTMANN, workers=8, seed=4,
                     faults=Faults(queue_wait_median_s=600.0, queue_wait_sigma=0.0))
    sim.open_driver()  # the first 8 jobs are submitted: each waits 600 s in the queue
    assert sim.executor.next_event_time() == pytest.approx(600.0) and not sim.executor.idle
    sim.workspace.stop_search = True  # hpo-slurm stop
    result = sim.run()
    assert result["state"] == "STOPPED" and result["compute_seconds"] == 0
    assert dict(rows(result, "SELECT state, COUNT(*) FROM runs GROUP BY state")) == {"CANCELLED": 8}
    assert sim.executor.counts["cancelled"] == 8 and sim.executor.idle


def test_a_driver_killed_while_jobs_wait_in_the_queue_resumes_to_the_same_search(tmp_path):
    path = config(tmp_path, max_trials=32)
    faults = Faults(queue_wait_median_s=900.0)
    whole = simulate(path, HARTMANN, tmp_path / "runs", name="whole", workers=8, seed=6, faults=faults)
    layout, _ = create_experiment(path, tmp_path / "runs", name="killed", seed=6)
    sim = Simulation(layout, HARTMANN, workers=8, seed=6, faults=faults)
    sim.run(max_ticks=5)
    sim.crash()
    resumed = sim.run()
    assert comparable(resumed) == {**comparable(whole), "events": resumed["events"]}


def test_a_trial_failing_beyond_max_restarts_errors(tmp_path):
    result = simulate(config(tmp_path, max_trials=8), HARTMANN, tmp_path / "runs", workers=4,
                      faults=Faults(failures=1.0))
    assert result["state"] == "ERRORED"  # no trial completed
    assert rows(result, "SELECT DISTINCT state FROM trials") == [("ERRORED",)]
    assert result["restarts"] == 8 * 4  # max_restarts 3: four attempts each
    assert result["best"] is None


def test_stragglers_slow_runs_down(tmp_path):
    path = config(tmp_path, max_trials=32)
    slow = simulate(path, HARTMANN, tmp_path / "runs", name="slow", workers=4, faults=Faults(stragglers=0.5))
    fast = simulate(path, HARTMANN, tmp_path / "runs", name="fast", workers=4)
    assert slow["injected"]["stragglers"] > 0
    assert slow["compute_seconds"] > fast["compute_seconds"]
    assert slow["best"] == fast["best"]  # same decisions when ranks do not depend on timing... of this seed


def test_runs_queue_fifo_when_workers_are_busy(tmp_path):
    result = simulate(config(tmp_path, name="random", max_trials=6, max_concurrent_trials=6), HARTMANN,
                      tmp_path / "runs", workers=2)
    # six equal full-length runs on two workers: three rounds of one hour each
    assert result["makespan_seconds"] == pytest.approx(3 * 3600)
    assert result["utilization"] == pytest.approx(1.0)
    started = [r[0] for r in rows(result, "SELECT submitted_at FROM runs ORDER BY id")]
    assert len(set(started)) == 1  # all submitted at once, the cluster queued them


def test_cli_json(tmp_path):
    path = config(tmp_path, max_trials=16)
    done = CliRunner().invoke(cli, ["simulate", str(path), "--objective", HARTMANN, "--workers", "4", "--seed", "9",
                                    "--root", str(tmp_path / "runs"), "--json", "--preemptions", "0.1"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    for key in ("best", "trials", "events", "compute_seconds", "makespan_seconds", "utilization", "wall_seconds",
                "incumbent_trace"):
        assert key in result
    assert set(result["best"]) >= {"trial_id", "metric", "hparams"}
    assert result["trials"] == 16 and result["seed"] == 9
    stored = yaml.safe_load((Path(result["dir"]) / "config.yaml").read_text())
    assert stored["reproducibility"]["experiment_seed"] == 9  # what ran is what is on disk
    status = CliRunner().invoke(cli, ["status", result["experiment"], "--root", str(tmp_path / "runs"), "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["state"] == "COMPLETED"


def test_cli_queue_wait(tmp_path):
    path = config(tmp_path, max_trials=8)
    args = ["simulate", str(path), "--objective", HARTMANN, "--workers", "4", "--seed", "9", "--queue-wait", "600",
            "--queue-wait-sigma", "0"]
    done = CliRunner().invoke(cli, [*args, "--root", str(tmp_path / "runs")])
    assert done.exit_code == 0, done.output
    jobs = int(done.output.split("queue wait: median 600 s asked, ")[1].split(" jobs")[0])
    assert f"{jobs} jobs waited {jobs * 600 / 3600:.2f} h in all" in done.output
    refused = CliRunner().invoke(cli, [*args[:-2], "--queue-wait", "-5", "--root", str(tmp_path / "r")])
    assert refused.exit_code == 2 and "--queue-wait" in refused.output


def test_cli_errors_are_one_line(tmp_path):
    path = config(tmp_path, max_trials=4)
    for objective, message in [("nomodule", "MODULE:FUNCTION"), ("hpo_slurm.benchmarks.hartmann:nope", "no function"),
                               ("no_such_module_xyz:f", "cannot import"),
                               ("hpo_slurm.benchmarks.curves:make", "failed on a sample"),
                               ("hpo_slurm.benchmarks.zero:objective", None)]:
        done = CliRunner().invoke(cli, ["simulate", str(path), "--objective", objective, "--root", str(tmp_path / "r")])
        if message:
            assert done.exit_code == 2 and message in done.output, done.output
        else:
            assert done.exit_code == 0, done.output
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["hartmann6"]  # failures created nothing
    done = CliRunner().invoke(cli, ["simulate", str(path), "--objective", "hpo_slurm.benchmarks.zero:objective",
                                    "--root", str(tmp_path / "r")])
    assert done.exit_code == 2 and "already exists" in done.output


def test_config_text_is_written_so_the_config_loader_reads_it_back():
    """The config loader reads YAML 1.2: strings that YAML 1.1 writes plain but 1.2 reads as numbers,
    booleans or null come back as the same strings."""
    strings = ["1e-3", "0o17", "0x1F", "010", "1:30:00", "on", "no", "false", "True", "null", "~", "", ".inf",
               ".nan", "-.5", "a: b", "- x", "#c", "line\nbreak", "naïve", "plain_name-1.2/x", "yes"]
    data = {"name": "n", "entrypoint": "false", "strings": strings, "numbers": [1e-3, 10, -0.0, float("inf"), 2**70],
            "flags": [True, False, None], "nested": {"1e5": "0o7", "k": {"deep": ["010"]}}}
    text = dump_config(data)
    assert yaml_load(text, "dumped") == data
    assert list(yaml_load(text, "dumped")) == list(data)  # keys keep their order


def test_a_seeded_experiment_stores_the_config_it_runs_with_and_no_model_folder(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text((CONFIGS / "hartmann6.yaml").read_text().replace(
        "x5: {type: double, minval: 0.0, maxval: 1.0}",
        'x5: {type: categorical, vals: [1e-3, "1e-3", 0o17, on, "010"]}'))
    original = load_config(str(path))
    layout, returned = create_experiment(path, tmp_path / "runs", name="seeded", seed=11, origin=1000.0)
    stored = load_config(str(layout.config))
    assert stored.seed == returned.seed == 11 and original.seed == 1
    for read in (returned, stored):
        assert read.raw["hyperparameters"] == original.raw["hyperparameters"]
        assert read.raw["hyperparameters"]["x5"]["vals"] == [0.001, "1e-3", 15, "on", "010"]
        assert {k: v for k, v in read.raw.items() if k != "reproducibility"} == \
            {k: v for k, v in original.raw.items() if k != "reproducibility"}
    assert not layout.context.exists()  # a simulated search runs no code: no model folder copy
    assert rows({"dir": layout.dir}, "SELECT config, created_at FROM experiment") == [(layout.config.read_text(), 1000.0)]
    unseeded = config(tmp_path, max_trials=4)
    result = simulate(unseeded, HARTMANN, tmp_path / "runs", name="unseeded", workers=2)
    assert (Path(result["dir"]) / "config.yaml").read_text() == unseeded.read_text()  # the file as given


def test_the_simulation_engine_needs_no_command_line_library():
    import subprocess
    import sys

    code = "import sys, hpo_slurm.engine.simulation; print('click' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

