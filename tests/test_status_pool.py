"""`hpo-slurm status` shows a search's pool of worker jobs (`slurm.pool`): its workers, the run each holds,
how long each idles, and totals, in `--json` (`pool`) and in the tables; `pool` is null without a pool."""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from driver_helpers import cli, copy_example, start_cli, wait_for, write_config
from hpo_slurm.config.pool_section import PoolSettings
from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.core.pool_files import PoolPaths, queue_key
from hpo_slurm.engine.simulation import create_experiment
from hpo_slurm.reporting.pool import SILENT_AFTER_S, read_pool
from results_helpers import invoke

REPO = Path(__file__).resolve().parent.parent


def pooled_config(tmp: Path, name: str, sleep_per_unit: float, **searcher) -> Path:
    """examples/quadratic/adaptive.yaml as ``name`` with a pool of 2 workers, its trials slowed by
    ``sleep_per_unit`` seconds a unit."""
    example = copy_example("quadratic", tmp)
    return write_config(example / "adaptive.yaml", example / f"{name}.yaml", name=name,
                        data={"sleep_per_unit": sleep_per_unit}, searcher=searcher,
                        slurm={"pool": {"workers": 2, "idle_timeout": "30s"}})


def status_json(root: Path, name: str) -> dict:
    done = cli("status", name, "--root", str(root), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def db(root: Path, name: str, sql: str, *params):
    conn = sqlite3.connect(f"file:{root / name / 'experiment.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def all_ended(root: Path, name: str):
    """The summary once every worker's heartbeat says it ended (workers end just after the driver)."""
    summary = status_json(root, name)
    workers = summary["pool"]["workers"]
    return summary if workers and all(w["state"] == "ended" for w in workers) else None


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished adaptive search on a local pool of 2 workers: (root, name, summary once all ended)."""
    tmp = tmp_path_factory.mktemp("pool")
    config = pooled_config(tmp, "pooled", 0.002)
    root = tmp / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = wait_for(lambda: all_ended(root, "pooled"), timeout=60, interval=0.5, what="every worker to end")
    return root, "pooled", summary


def test_json_pool_agrees_with_the_database_after_the_search(finished):
    root, name, summary = finished
    pool = summary["pool"]
    assert pool["max_workers"] == 2 and pool["idle_timeout_s"] == 30.0
    workers = pool["workers"]
    assert [w["name"] for w in workers] == ["w1", "w2"]
    runs = db(root, name, "SELECT * FROM runs")
    started = [r for r in runs if r["started_at"]]
    assert len(runs) > 16 and all(r["job_id"] == f"pool:{r['id']}" for r in runs)
    assert sum(w["runs"] for w in workers) == len(started)  # every run that started ran on one of them
    for w in workers:
        assert w["state"] == "ended" and w["ended_how"] == "search over" and w["run"] is None
        assert w["job_id"] and w["host"] == socket.gethostname() and w["idle_s"] is None
        assert w["started"] <= w["ended"] and w["seconds"] == pytest.approx(w["ended"] - w["started"])
    totals = pool["totals"]
    run_seconds = sum(r["ended_at"] - r["started_at"] for r in started)
    assert totals["workers_live"] == 0 and totals["runs_queued"] == 0 and totals["runs_held"] == 0
    assert totals["workers_total"] == totals["workers_counted"] == 2
    assert totals["worker_hours"] * 3600 >= run_seconds > 0
    assert totals["run_hours"] * 3600 == pytest.approx(run_seconds)
    assert totals["idle_hours"] == pytest.approx(totals["worker_hours"] - totals["run_hours"])
    listed = json.loads(invoke("status", "--root", str(root), "--json").stdout)["experiments"]
    ageless = [[{**w, "beat_age_s": None} for w in s["pool"]["workers"]] for s in listed]
    assert ageless == [[{**w, "beat_age_s": None} for w in workers]]  # every summary carries it


def test_rich_status_shows_the_pool_table_and_totals(finished):
    root, name, _ = finished
    out = invoke("status", name, "--root", str(root), env={"COLUMNS": "160"}).stdout
    assert "Pool" in out and "pool: 0 of at most 2 workers live, 0 runs queued, worker-hours" in out
    header = next(line for line in out.splitlines() if "worker" in line and "state" in line)
    assert [cell.strip() for cell in header.strip("┃ ").split("┃")] == \
        ["worker", "job", "state", "run", "idle", "runs", "host"]
    rows = [line for line in out.splitlines() if line.startswith("│ w")]
    assert len(rows) == 2 and all("ended (search over)" in row for row in rows)
    narrow = invoke("status", name, "--root", str(root), env={"COLUMNS": "70"}).stdout
    header = next(line for line in narrow.splitlines() if "worker" in line and "state" in line)
    assert "job" not in header and "host" in header  # narrow: no job ids, nothing cut
    assert all(len(line) <= 70 for line in narrow.splitlines())


def test_the_live_view_shows_the_pool_table(finished):
    import io

    from rich.console import Console

    from hpo_slurm.core.layout import ExperimentLayout
    from hpo_slurm.reporting import live

    root, name, _ = finished
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, height=60, force_terminal=True, color_system=None)
    live.watch_status(ExperimentLayout(root / name), console=console, interval=0.01, iterations=2)
    frame = buffer.getvalue()
    header = next(line for line in frame.splitlines() if "worker" in line and "state" in line)
    assert [cell.strip() for cell in header.strip("┃ ").split("┃")] == \
        ["worker", "job", "state", "run", "idle", "runs", "host"]
    assert len(re.findall(r"│ w[12] ", frame)) >= 2 and "ended (search over)" in frame


def test_a_worker_holds_a_running_run_mid_search(tmp_path):
    """A slowed search: some worker shows the run it holds, which the database has RUNNING."""
    config = pooled_config(tmp_path, "live", 0.5, max_trials=4, max_concurrent_trials=2)
    root = tmp_path / "runs"
    driver = start_cli("launch", str(config), "--root", str(root), "--executor", "local")
    try:
        def held():
            if not (root / "live" / "experiment.db").exists():
                return None
            summary = status_json(root, "live")
            for worker in (summary["pool"] or {}).get("workers", []):
                if worker["state"] == "running":
                    rows = db(root, "live", "SELECT state, job_id FROM runs WHERE id = ?", worker["run"])
                    if rows and rows[0]["state"] == "RUNNING":
                        return summary, worker, rows[0]
            return None

        summary, worker, row = wait_for(held, timeout=120, interval=0.5, what="a worker holding a running run")
        assert row["job_id"] == f"pool:{worker['run']}"
        assert worker["idle_s"] is None and worker["host"] == socket.gethostname() and not worker["silent"]
        assert summary["driver"]["alive"] and summary["pool"]["totals"]["workers_live"] >= 1
        assert summary["pool"]["totals"]["runs_held"] >= 1

        def running_row():  # a worker may be between two runs at the moment the table is read
            out = invoke("status", "live", "--root", str(root), env={"COLUMNS": "160"}).stdout
            return [line for line in out.splitlines() if line.startswith("│ w") and " running " in line]

        (row, *_) = wait_for(running_row, timeout=60, interval=0.5, what="a running worker in the table")
        assert re.search(r"│ t\d+-r\d+ +│", row)  # the run it holds
    finally:
        stopped = cli("stop", "live", "--root", str(root), timeout=180)
        try:
            driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    summary = wait_for(lambda: all_ended(root, "live"), timeout=60, interval=0.5, what="every worker to end")
    assert summary["pool"]["totals"]["workers_live"] == 0


def test_no_pool_is_null_and_has_no_table(tmp_path):
    create_experiment(REPO / "benchmarks" / "configs" / "hartmann6.yaml", tmp_path / "runs", name="plain")
    summary = json.loads(invoke("status", "plain", "--root", str(tmp_path / "runs"), "--json").stdout)
    assert "pool" in summary and summary["pool"] is None
    out = invoke("status", "plain", "--root", str(tmp_path / "runs")).stdout
    assert "Pool" not in out and "pool:" not in out


def test_reading_tolerates_missing_and_torn_files_and_reads_few_ended_workers(tmp_path):
    """Workers with no heartbeat are queued; a torn heartbeat counts as none; a worker the record shows
    ended tells how; of the ended workers only the last few are read; a stale live one is silent."""
    paths = PoolPaths(tmp_path)
    now = 10_000.0
    workers = {f"w{i}": {"name": f"w{i}", "batch": "b", "batch_names": [], "submitted": 100.0 + i,
                         "job_id": str(i), "gpus": "", "ended": "TIMEOUT"} for i in range(1, 8)}
    workers["w8"] = {**workers["w7"], "name": "w8", "ended": None, "job_id": None}  # not submitted yet
    workers["w9"] = {**workers["w7"], "name": "w9", "ended": None}  # torn heartbeat
    workers["w10"] = {**workers["w7"], "name": "w10", "ended": None}  # idle
    workers["w11"] = {**workers["w7"], "name": "w11", "ended": None}  # running, silent
    paths.root.mkdir()
    write_json_atomic(paths.record, {"next": 12, "workers": workers})
    beat = {"host": "n1", "pid": 1, "runs": 3, "ended": None, "job_id": "x"}
    for i in range(1, 8):
        paths.worker(f"w{i}").mkdir(parents=True)
        write_json_atomic(paths.alive(f"w{i}"), {**beat, "started": 1000.0, "run": "t1-r1", "idle_since": None,
                                                "beat": 1000.0 + 100 * i})
    paths.worker("w9").mkdir(parents=True)
    paths.alive("w9").write_text('{"worker": "w9", "sta')
    paths.worker("w10").mkdir(parents=True)
    write_json_atomic(paths.alive("w10"), {**beat, "started": 9000.0, "run": None, "idle_since": 9900.0,
                                           "beat": 9990.0})
    paths.worker("w11").mkdir(parents=True)
    write_json_atomic(paths.alive("w11"), {**beat, "started": 5000.0, "run": "t2-r1", "idle_since": None,
                                           "beat": now - SILENT_AFTER_S - 1})
    paths.queue.mkdir(parents=True)
    write_json_atomic(paths.queue / queue_key(1, "t3-r1"), {"run": "t3-r1", "spec": "x"})

    pool = read_pool(tmp_path, PoolSettings(4), run_seconds=100.0, now=now, ended_shown=2)
    by_name = {w["name"]: w for w in pool["workers"]}
    assert list(by_name) == ["w6", "w7", "w8", "w9", "w10", "w11"]
    assert by_name["w7"]["state"] == "ended" and by_name["w7"]["ended_how"] == "timeout"
    assert by_name["w7"]["run"] is None and by_name["w7"]["seconds"] == 700.0  # to its last heartbeat
    assert by_name["w8"]["state"] == by_name["w9"]["state"] == "queued"
    assert by_name["w8"]["job_id"] is None and by_name["w9"]["host"] is None
    assert by_name["w10"]["state"] == "idle" and by_name["w10"]["idle_s"] == 100.0 and not by_name["w10"]["silent"]
    assert by_name["w11"]["state"] == "running" and by_name["w11"]["run"] == "t2-r1" and by_name["w11"]["silent"]
    totals = pool["totals"]
    assert totals["workers_live"] == 4 and totals["workers_total"] == 11 and totals["workers_counted"] == 6
    assert totals["runs_queued"] == 1 and totals["runs_held"] == 1
    assert totals["idle_hours"] is None  # five ended workers were not read: their hours are unknown

    complete = read_pool(tmp_path, PoolSettings(4), run_seconds=100.0, now=now, ended_shown=100)
    assert complete["totals"]["workers_counted"] == 11
    assert complete["totals"]["idle_hours"] == pytest.approx(
        (complete["totals"]["worker_hours"] * 3600 - 100.0) / 3600)

    paths.record.write_text('{"next": 3, "work')  # torn: no workers known, the queue still counts
    assert read_pool(tmp_path, PoolSettings(4), now=now)["totals"] == {
        "workers_live": 0, "workers_total": 0, "workers_counted": 0, "runs_queued": 1, "runs_held": 0,
        "worker_hours": 0.0, "run_hours": None, "idle_hours": None}
