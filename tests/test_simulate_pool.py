"""The simulated cluster's worker pool (``slurm.pool``): worker jobs wait in the queue once, then run
the search's runs one after another; their whole lives, idle time included, are the search's compute."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import yaml

from hpo_slurm.engine.simulation import Simulation, create_experiment, simulate
from hpo_slurm.executors.simulated_world import Faults
from test_simulate import comparable, rows

REPO = Path(__file__).resolve().parent.parent
HARTMANN = "hpo_slurm.benchmarks.hartmann:good"
SECONDS_PER_UNIT = 36.0  # hpo_slurm.benchmarks.hartmann: a full-length (100) trial is an hour


def config(tmp_path: Path, pool: Optional[Dict[str, Any]], slurm: Optional[Dict[str, Any]] = None,
           **searcher: Any) -> Path:
    """benchmarks/configs/hartmann6.yaml with ``searcher`` fields replaced and ``slurm.pool: pool``."""
    data = yaml.safe_load((REPO / "benchmarks" / "configs" / "hartmann6.yaml").read_text())
    data["searcher"].update(searcher)
    if data["searcher"]["name"] != "adaptive_asha":
        for key in ("mode", "divisor", "max_rungs"):
            data["searcher"].pop(key)
    if pool is not None or slurm is not None:
        data["slurm"] = dict(slurm or {}, pool=pool)
    path = tmp_path / f"search-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_runs_after_the_first_wave_take_started_workers_without_a_queue_wait(tmp_path):
    faults = Faults(queue_wait_median_s=1200.0, queue_wait_sigma=0.0)  # every worker waits 20 minutes
    base = dict(max_trials=32, max_concurrent_trials=8)
    layout, _ = create_experiment(config(tmp_path, {"workers": 8, "idle_timeout": 600}, **base), tmp_path / "runs",
                                  name="pool", seed=5)
    sim = Simulation(layout, HARTMANN, workers=8, seed=5, faults=faults)
    pooled = sim.run()
    per_run = simulate(config(tmp_path, None, **base), HARTMANN, tmp_path / "runs", name="per-run", workers=8,
                       seed=5, faults=faults)
    assert pooled["state"] == per_run["state"] == "COMPLETED" and pooled["trials"] == 32
    pool = pooled["pool"]
    # the waits counted are the worker jobs', one each: far fewer than the runs
    assert pooled["queue_wait"]["jobs"] == pool["workers_started"] < pooled["runs"] / 2
    assert pooled["queue_wait"]["total_s"] == pytest.approx(sum(w.wait for w in sim.executor.pool.workers
                                                                 if w.started_at is not None))
    assert per_run["queue_wait"]["jobs"] == per_run["runs"] and "pool" not in per_run
    # a run that does not start when it is submitted starts when a worker does, or when another run ends
    # and leaves its worker free: it never waits in the scheduler's queue itself
    origin = sim.clock.origin
    worker_starts = {round(origin + w.started_at, 6) for w in sim.executor.pool.workers if w.started_at is not None}
    runs = rows(pooled, "SELECT submitted_at, started_at, ended_at FROM runs")
    run_ends = {round(ended, 6) for _, _, ended in runs}
    late = [started for submitted, started, _ in runs if started > submitted]
    assert late and all(round(started, 6) in worker_starts | run_ends for started in late)
    # once the workers started (all at 1200 s), runs start the moment they are submitted
    assert all(started == submitted for submitted, started, _ in runs if submitted >= origin + 1200.0)
    assert len(late) <= 8 < len(runs) - len(late)
    # one job per run pays the 20 minutes again at every rung (adaptive_asha here: up to 5 rungs)
    assert pooled["makespan_seconds"] + 3 * 1200.0 < per_run["makespan_seconds"]
    assert pool["busy_seconds"] + pool["idle_seconds"] == pytest.approx(pooled["compute_seconds"])


def _speed_objective(hparams: Dict[str, Any], length: int) -> Dict[str, Any]:
    """A fast trial (10 s a unit) and a slow one (50 s a unit), by ``x``."""
    return {"loss": hparams["x"], "seconds": length * (10.0 if hparams["x"] < 0.5 else 50.0)}


def test_compute_counts_a_worker_idle_until_its_idle_timeout(tmp_path):
    data = {"name": "two-speeds", "entrypoint": "false",
            "hyperparameters": {"x": {"type": "categorical", "vals": [0.1, 0.9]}},
            "searcher": {"name": "grid", "metric": "loss", "max_length": {"batches": 100}, "max_concurrent_trials": 2}}
    without, path = tmp_path / "no-pool.yaml", tmp_path / "pool.yaml"
    without.write_text(yaml.safe_dump(data))
    path.write_text(yaml.safe_dump({**data, "slurm": {"pool": {"workers": 2, "idle_timeout": "10m"}}}))
    result = simulate(path, _speed_objective, tmp_path / "runs", workers=2, seed=1)
    pool = result["pool"]
    # the fast trial's worker is done at 1000 s, idles 600 s and ends; the slow one's ends with the search at 5000 s
    assert result["makespan_seconds"] == pytest.approx(5000.0)
    assert pool["busy_seconds"] == pytest.approx(6000.0)
    assert pool["idle_seconds"] == pytest.approx(600.0)
    assert result["compute_seconds"] == pytest.approx(6600.0)
    assert pool["ended_by"] == {"idle_timeout": 1, "time_limit": 0, "preempted": 0, "search_over": 1}
    plain = simulate(without, _speed_objective, tmp_path / "runs", name="no-pool", workers=2, seed=1)
    assert plain["compute_seconds"] == pytest.approx(6000.0) and plain["makespan_seconds"] == pytest.approx(5000.0)


@pytest.mark.parametrize("pool_workers, cluster_workers", [(3, 8), (6, 4)])
def test_never_more_workers_alive_than_the_pool_or_the_cluster_allows(tmp_path, pool_workers, cluster_workers):
    path = config(tmp_path, {"workers": pool_workers, "idle_timeout": 60}, max_trials=32, max_concurrent_trials=8)
    layout, _ = create_experiment(path, tmp_path / "runs", name="cap", seed=2)
    sim = Simulation(layout, HARTMANN, workers=cluster_workers, seed=2,
                     faults=Faults(queue_wait_median_s=600.0, preemptions=0.1))
    sim.executor.timeline = []
    cap = min(pool_workers, cluster_workers)
    alive, started = [], []
    sim.open_driver()
    while sim.step():
        pool = sim.executor.pool
        alive.append(pool.alive)
        started.append(sum(1 for w in pool.workers if w.started_at is not None and w.ended_at is None))
    result = sim.run()
    assert result["state"] == "COMPLETED"
    assert max(alive) == result["pool"]["max_alive"] == cap
    assert max(started) <= cap and max(running for _, running, _ in sim.executor.timeline) <= cap
    # workers that idled out (60 s) were replaced when runs were ready again, each waiting in the queue anew
    assert result["pool"]["workers_started"] > cap and result["pool"]["ended_by"]["idle_timeout"] > 0


def test_a_worker_at_its_time_limit_stops_its_run_which_resumes_from_its_checkpoint(tmp_path):
    # one full-length trial is 3600 s of training; each worker may live 20 minutes
    path = config(tmp_path, {"workers": 1, "time": 20}, name="single", max_trials=1, max_concurrent_trials=1)
    result = simulate(path, HARTMANN, tmp_path / "runs", name="limited", workers=4, seed=3)
    assert result["state"] == "COMPLETED" and result["trials"] == 1
    # each worker stops its run at 1200 s, when the trial had checkpointed 33 more whole units (1188 s); the
    # next run resumes from there, so the fourth has one unit (36 s) left of the 100
    runs = rows(result, "SELECT state, reason, ended_at - started_at FROM runs ORDER BY seq")
    assert [(state, reason) for state, reason, _ in runs] == [("TIMEOUT", "reached its time limit")] * 3 + [
        ("SUCCEEDED", "")]
    assert [seconds for _, _, seconds in runs] == pytest.approx([1200.0, 1200.0, 1200.0, SECONDS_PER_UNIT])
    assert rows(result, "SELECT restarts, time_limits, preemptions, state FROM trials") == [(0, 3, 0, "COMPLETED")]
    assert result["restarts"] == 0 and result["time_limits"] == 3
    assert result["pool"]["ended_by"]["time_limit"] == 3 and result["pool"]["workers_started"] == 4
    assert result["makespan_seconds"] == pytest.approx(3 * 1200.0 + SECONDS_PER_UNIT)
    assert result["compute_seconds"] == pytest.approx(result["makespan_seconds"])  # never idle
    uninterrupted = simulate(config(tmp_path, None, name="single", max_trials=1, max_concurrent_trials=1), HARTMANN,
                             tmp_path / "runs", name="whole", workers=4, seed=3)
    assert result["best"]["metric"] == uninterrupted["best"]["metric"]  # the same trial, trained in four pieces


def test_faults_in_pool_mode_and_the_same_seed_gives_the_same_result(tmp_path):
    path = config(tmp_path, {"workers": 8, "time": "2:00:00", "idle_timeout": "5m"}, max_trials=48,
                  max_concurrent_trials=8)
    faults = Faults(stragglers=0.2, failures=0.1, preemptions=0.1, queue_wait_median_s=900.0)
    first = simulate(path, HARTMANN, tmp_path / "runs", name="a", workers=8, seed=4, faults=faults)
    second = simulate(path, HARTMANN, tmp_path / "runs", name="b", workers=8, seed=4, faults=faults)
    assert comparable(first) == comparable(second)
    # times from the simulation's origin: the wall-clock second the experiment was created in
    timeline = ("SELECT r.id, r.state, r.started_at - CAST(e.created_at AS INTEGER), "
                "r.ended_at - CAST(e.created_at AS INTEGER) FROM runs r, experiment e ORDER BY r.id")
    assert rows(first, timeline) == rows(second, timeline)
    injected, pool = first["injected"], first["pool"]
    assert injected["stragglers"] and injected["failed"] and injected["preempted"]
    # a preemption takes its worker's allocation (the worker is replaced); a failure ends only the run
    assert pool["ended_by"]["preempted"] == injected["preempted"] == first["preemptions"]
    assert first["restarts"] == injected["failed"]
    other = simulate(path, HARTMANN, tmp_path / "runs", name="c", workers=8, seed=6, faults=faults)
    assert other["pool"]["worker_seconds"] != pool["worker_seconds"]


def test_a_driver_killed_mid_search_resumes_to_the_same_pooled_search(tmp_path):
    path = config(tmp_path, {"workers": 8, "time": 60, "idle_timeout": "5m"}, max_trials=32, max_concurrent_trials=8)
    faults = Faults(stragglers=0.1, failures=0.1, preemptions=0.1, queue_wait_median_s=900.0)
    whole = simulate(path, HARTMANN, tmp_path / "runs", name="whole", workers=8, seed=5, faults=faults)
    layout, _ = create_experiment(path, tmp_path / "runs", name="killed", seed=5)
    sim = Simulation(layout, HARTMANN, workers=8, seed=5, faults=faults)
    sim.run(max_ticks=7)
    sim.crash()  # the workers keep running and waiting; the resumed driver re-adopts their runs
    resumed = sim.run()
    assert resumed["driver_restarts"] == 1 and whole["pool"]["ended_by"]["time_limit"] > 0
    assert {**comparable(resumed), "events": whole["events"]} == comparable(whole)


def test_a_cancelled_run_frees_its_worker_at_once(tmp_path):
    path = config(tmp_path, {"workers": 2}, max_trials=8, max_concurrent_trials=4)
    layout, _ = create_experiment(path, tmp_path / "runs", name="cancel", seed=1)
    sim = Simulation(layout, HARTMANN, workers=4, seed=1)
    sim.open_driver()  # four runs: two on the two workers (started at once: no queue wait), two waiting
    executor = sim.executor

    def states():
        return sorted(job.state.value for job in executor.jobs.values())

    assert states() == ["PENDING", "PENDING", "RUNNING", "RUNNING"]
    running = next(job for job in executor.jobs.values() if job.state.value == "RUNNING")
    executor.cancel([running.job_id])  # at t = 0: the first waiting run takes its worker
    assert states() == ["CANCELLED", "PENDING", "RUNNING", "RUNNING"]
    assert executor.pool.alive == 2 and not executor.pool.has_idle
    sim.workspace.stop_search = True  # hpo-slurm stop: the driver cancels the rest and ends the workers
    result = sim.run()
    assert result["state"] == "STOPPED" and executor.pool.alive == 0
    assert result["pool"]["ended_by"]["search_over"] == 2 and result["pool"]["workers_started"] == 2
    assert result["compute_seconds"] == pytest.approx(2 * sim.clock.t)


def test_without_a_pool_the_results_are_those_of_one_job_per_run(tmp_path):
    """Pinned: these are the numbers the simulator gave before it had a pool (and gives with ``pool: null``)."""
    faults = Faults(stragglers=0.1, failures=0.05, preemptions=0.1, queue_wait_median_s=1200.0)
    results = [simulate(config(tmp_path, None, slurm=slurm, max_trials=32, max_concurrent_trials=8), HARTMANN,
                        tmp_path / "runs", name=f"n{i}", workers=8, seed=5, faults=faults)
               for i, slurm in enumerate([None, {"time": 90}])]
    for result in results:
        assert "pool" not in result
        assert (result["makespan_seconds"], result["compute_seconds"], result["runs"], result["best"]["metric"],
                result["queue_wait"]["total_s"], result["restarts"], result["injected"]) == pytest.approx(
            (30997.08944043671, 44730.36295214879, 52, -1.535449335540536, 98162.46143424592, 4,
             {"stragglers": 12, "failed": 4, "preempted": 4}), rel=1e-12)
        assert result["queue_wait"]["jobs"] == result["runs"]
