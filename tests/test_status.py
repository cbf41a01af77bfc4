"""`hpo-slurm status NAME`: a bounded summary by default (counts, compute, best, active runs, top
trials) that agrees with the experiment database, and the trial listing on request (`--trials`)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
import yaml

from driver_helpers import cli
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.engine.simulation import Simulation, create_experiment
from hpo_slurm.reporting.status import TOP_TRIALS, summarize
from hpo_slurm.core.types import RunState, TrialState
from results_helpers import invoke, launch_example

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory):
    """A finished adaptive ASHA search of examples/quadratic on the local executor: (root, name)."""
    return launch_example(tmp_path_factory.mktemp("status"), "adaptive")


def db(root: Path, name: str, sql: str):
    conn = sqlite3.connect(f"file:{root / name / 'experiment.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def status_json(root: Path, name: str, *extra: str) -> dict:
    done = cli("status", name, "--root", str(root), "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_summary_counts_agree_with_the_database(adaptive):
    root, name = adaptive
    summary = status_json(root, name)
    trials = db(root, name, "SELECT * FROM trials")
    runs = db(root, name, "SELECT * FROM runs")
    assert "trials" not in summary  # the listing is opt-in
    assert summary["state"] == "COMPLETED" and summary["searcher"] == "adaptive_asha"
    assert summary["trial_counts"] == {**{s.value: 0 for s in TrialState}, **Counter(t["state"] for t in trials)}
    assert summary["run_counts"] == {**{s.value: 0 for s in RunState}, **Counter(r["state"] for r in runs)}
    assert sum(summary["trial_counts"].values()) == 16 and len(runs) > 16  # promoted trials ran again
    seconds = sum(r["ended_at"] - r["started_at"] for r in runs if r["started_at"] and r["ended_at"])
    assert seconds > 0
    assert summary["job_hours"] == pytest.approx(seconds / 3600)
    assert summary["gpu_hours"] == 0  # slots_per_trial: 0
    assert summary["checkpoint_bytes"] == sum(t["checkpoint_bytes"] or 0 for t in trials) > 0
    assert summary["active_runs"] == []  # the search is over


def test_top_trials_are_the_best_by_the_metric_in_order(adaptive):
    root, name = adaptive
    summary = status_json(root, name)
    trials = db(root, name, "SELECT * FROM trials WHERE best_metric IS NOT NULL")
    expected = sorted(trials, key=lambda t: (t["best_metric"], t["id"]))[:TOP_TRIALS]
    top = summary["top_trials"]
    assert [t["id"] for t in top] == [t["id"] for t in expected] and len(top) == TOP_TRIALS
    assert [t["best_metric"] for t in top] == sorted(t["best_metric"] for t in top)
    best = expected[0]
    assert summary["best"] == {"trial_id": best["id"], "metric": best["best_metric"], "length": best["best_length"],
                               "hparams": json.loads(best["hparams"])}
    runs = db(root, name, "SELECT * FROM runs ORDER BY trial_id, seq")
    for t in top:
        assert [r["run_id"] for r in t["runs"]] == [r["id"] for r in runs if r["trial_id"] == t["id"]]


def test_trials_all_lists_every_trial_with_its_runs(adaptive):
    root, name = adaptive
    summary = status_json(root, name)
    full = status_json(root, name, "--trials", "all")
    assert {k: v for k, v in full.items() if k != "trials"} == summary
    trials = db(root, name, "SELECT * FROM trials ORDER BY id")
    runs = db(root, name, "SELECT * FROM runs ORDER BY trial_id, seq")
    assert [t["id"] for t in full["trials"]] == [t["id"] for t in trials]
    assert [t["state"] for t in full["trials"]] == [t["state"] for t in trials]
    assert [(r["run_id"], r["state"]) for t in full["trials"] for r in t["runs"]] == \
        [(r["id"], r["state"]) for r in runs]


def test_trials_n_lists_the_latest_n(adaptive):
    root, name = adaptive
    latest = status_json(root, name, "--trials", "3")["trials"]
    assert [t["id"] for t in latest] == [14, 15, 16]
    everything = {t["id"]: t for t in status_json(root, name, "--trials", "all")["trials"]}
    assert latest == [everything[t["id"]] for t in latest]
    assert len(status_json(root, name, "--trials", "100")["trials"]) == 16


def table_rows(text: str):
    """(trial id, state) of each row of a trials table printed without colours."""
    return [(int(i), state) for i, state in re.findall(r"^│ +(\d+) +│ ([A-Z_]+) +│", text, re.M)]


def test_tables_show_the_top_trials_or_the_listing(adaptive):
    root, name = adaptive
    summary = status_json(root, name)
    default = invoke("status", name, "--root", str(root))
    assert default.exit_code == 0, default.output
    assert f"Top {TOP_TRIALS} trials by validation_loss (smallest first)" in default.stdout
    assert "runs: " in default.stdout and "succeeded" in default.stdout
    assert table_rows(default.stdout) == [(t["id"], t["state"]) for t in summary["top_trials"]]
    listed = invoke("status", name, "--root", str(root), "--trials", "all")
    assert listed.exit_code == 0, listed.output
    assert "Top " not in listed.stdout
    trials = db(root, name, "SELECT id, state FROM trials ORDER BY id")
    assert table_rows(listed.stdout) == [(t["id"], t["state"]) for t in trials]


@pytest.mark.parametrize("value", ["0", "-2", "abc", "2.5", ""])
def test_bad_trials_values_are_one_line_and_exit_2(adaptive, value):
    root, name = adaptive
    done = cli("status", name, "--root", str(root), "--json", "--trials", value)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("hpo-slurm: --trials") and repr(value) in done.stderr


def test_trials_without_a_name_is_refused(adaptive):
    root, _ = adaptive
    done = invoke("status", "--root", str(root), "--trials", "all")
    assert done.exit_code == 2 and done.stderr.count("\n") == 1 and "NAME" in done.stderr


def test_experiment_list_carries_the_same_summaries(adaptive):
    root, name = adaptive
    listed = json.loads(invoke("status", "--root", str(root), "--json").stdout)["experiments"]
    assert [s["name"] for s in listed] == [name]
    one = status_json(root, name)
    assert {k: v for k, v in listed[0].items() if k != "driver"} == {k: v for k, v in one.items() if k != "driver"}


def test_active_runs_and_a_larger_is_better_metric_mid_search(tmp_path):
    """A simulated search paused mid-way: the active runs are the database's submitted and running
    runs, and with smaller_is_better false the top trials are the largest metrics first."""
    data = yaml.safe_load((REPO / "benchmarks" / "configs" / "hartmann6.yaml").read_text())
    data["searcher"].update(smaller_is_better=False, max_trials=200, max_concurrent_trials=30)
    path = tmp_path / "maximize.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    layout, _ = create_experiment(path, tmp_path / "runs", name="maximize")
    simulation = Simulation(layout, "hpo_slurm.benchmarks.hartmann:good", workers=30)
    simulation.open_driver()
    while len(simulation.driver.trials) < 120:
        simulation.step()
    try:
        summary = summarize(ExperimentLayout(layout.dir))
        conn = sqlite3.connect(f"file:{layout.database}?mode=ro", uri=True)
        active = conn.execute("SELECT id, trial_id, state FROM runs WHERE state IN ('SUBMITTED', 'RUNNING') "
                              "ORDER BY rowid").fetchall()
        scored = conn.execute("SELECT id, best_metric FROM trials WHERE best_metric IS NOT NULL").fetchall()
        conn.close()
    finally:
        simulation.close()
    assert summary["state"] != "COMPLETED"
    assert len(active) > 20  # more than a summary lists
    assert [(r["run_id"], r["trial_id"], r["state"]) for r in summary["active_runs"]] == [tuple(r) for r in active[:20]]
    assert summary["run_counts"]["SUBMITTED"] + summary["run_counts"]["RUNNING"] == len(active)
    expected = sorted(scored, key=lambda row: (-row[1], row[0]))[:TOP_TRIALS]
    assert [t["id"] for t in summary["top_trials"]] == [trial_id for trial_id, _ in expected]
    assert summary["best"]["trial_id"] == expected[0][0] and summary["best"]["metric"] == max(m for _, m in scored)


def test_runs_not_yet_given_to_the_scheduler_are_told_apart_from_queued_ones(tmp_path):
    """The cluster refuses submissions for a while (a full queue): the recorded runs wait, unsubmitted."""
    from rich.console import Console

    from hpo_slurm.executors.base import SubmitError
    from hpo_slurm.reporting.views import summary_panel

    layout, _ = create_experiment(REPO / "benchmarks" / "configs" / "hartmann6.yaml", tmp_path / "runs", name="full")
    simulation = Simulation(layout, "hpo_slurm.benchmarks.hartmann:good", workers=4)

    def queue_full(requests):
        raise SubmitError("sbatch: error: Slurm temporarily unable to accept job", retry=True)

    simulation.executor.submit = queue_full
    simulation.open_driver()
    try:
        summary = summarize(ExperimentLayout(layout.dir))
    finally:
        simulation.close()
    waiting = summary["run_counts"]["SUBMITTED"]
    assert waiting > 0 and summary["runs_unsubmitted"] == waiting
    console = Console(width=200, record=True)
    console.print(summary_panel(summary))
    assert f"runs: {waiting} not yet submitted" in console.export_text()


def copy_with_slots(root: Path, name: str, target: Path, slots: int) -> Path:
    """A copy of experiment ``name`` under ``target`` whose config asks for ``slots`` GPUs per trial."""
    shutil.copytree(root / name, target / name)
    config = target / name / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data.setdefault("resources", {})["slots_per_trial"] = slots
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def panel_text(summary: dict) -> str:
    from rich.console import Console

    from hpo_slurm.reporting.views import summary_panel

    console = Console(width=200, record=True)
    console.print(summary_panel(summary))
    return console.export_text()


def test_gpu_hours_are_job_hours_times_slots_per_trial(adaptive, tmp_path):
    """The example trains on CPUs (slots_per_trial 0): job hours, said so; the same runs with 4 GPUs
    per trial (a trial of 4 ranks) count 4 GPU-hours per job hour."""
    root, name = adaptive
    cpu = status_json(root, name)
    assert cpu["slots_per_trial"] == 0 and cpu["gpu_hours"] == 0 and cpu["job_hours"] > 0
    text = panel_text(cpu)
    assert f"job hours {cpu['job_hours']:.2f} (slots_per_trial 0: no GPUs)" in text and "GPU-hours" not in text
    gpu = status_json(copy_with_slots(root, name, tmp_path, 4), name)
    assert gpu["slots_per_trial"] == 4 and gpu["job_hours"] == cpu["job_hours"]
    assert gpu["gpu_hours"] == pytest.approx(4 * cpu["job_hours"])
    assert f"GPU-hours {gpu['gpu_hours']:.2f} (4 GPUs per trial × {cpu['job_hours']:.2f} job hours)" in panel_text(gpu)


def test_running_runs_show_the_nodes_of_their_last_attempt(tmp_path, monkeypatch):
    """A search mid-way whose running jobs wrote their attempts files: each RUNNING run shows the nodes
    of its last attempt (``nodes``, else ``host``); no other run's attempts file is read."""
    from rich.console import Console

    from hpo_slurm.core.fsio import append_line
    from hpo_slurm.reporting import status
    from hpo_slurm.reporting.views import active_runs_table, trials_table

    layout, _ = create_experiment(REPO / "benchmarks" / "configs" / "hartmann6.yaml", tmp_path / "runs", name="nodes")
    simulation = Simulation(layout, "hpo_slurm.benchmarks.hartmann:good", workers=4)
    simulation.open_driver()
    try:
        while True:
            simulation.step()
            runs = db(layout.dir.parent, "nodes", "SELECT id, trial_id, state FROM runs ORDER BY rowid")
            running = [r for r in runs if r["state"] == "RUNNING"]
            ended = [r for r in runs if r["state"] == "SUCCEEDED"]
            if len(running) >= 3 and ended:
                break

        def attempts(run_id: str, *lines: dict) -> None:
            layout.run_dir(run_id).mkdir(parents=True, exist_ok=True)
            for line in lines:
                append_line(layout.attempts_file(run_id), json.dumps(line))

        first, second, third = running[:3]
        attempts(first["id"], {"attempt": 1, "host": "node7", "nodes": ["node7"], "time": 1.0},  # requeued since
                 {"attempt": 2, "host": "node1", "nodes": ["node1", "node2", "node3", "node5"], "time": 2.0})
        attempts(second["id"], {"attempt": 1, "host": "login2", "pid": 12, "time": 1.0})  # no "nodes": its host
        # third: no attempts file yet; an ended run's file is not read
        attempts(ended[0]["id"], {"attempt": 1, "host": "old", "nodes": ["old1"], "time": 1.0})
        read = []
        real = status.last_attempt_nodes
        monkeypatch.setattr(status, "last_attempt_nodes", lambda path: read.append(path) or real(path))
        summary = summarize(ExperimentLayout(layout.dir), trials="all")
    finally:
        simulation.close()
    assert sorted(read) == sorted(layout.attempts_file(r["id"]) for r in running)
    nodes = {r["run_id"]: r["nodes"] for t in summary["trials"] for r in t["runs"]}
    assert nodes[first["id"]] == ["node1", "node2", "node3", "node5"] and nodes[second["id"]] == ["login2"]
    assert nodes[third["id"]] is None and nodes[ended[0]["id"]] is None
    assert all(nodes[r["id"]] is None for r in runs if r["state"] != "RUNNING")
    active = {r["run_id"]: r["nodes"] for r in summary["active_runs"]}
    assert active[first["id"]] == ["node1", "node2", "node3", "node5"]
    console = Console(width=200, record=True)
    console.print(trials_table(summary["trials"], width=200))
    console.print(active_runs_table(summary))
    text = console.export_text()
    row = {int(i): line for i, line in re.findall(r"^│ +(\d+) +│(.*)$", text, re.M)}
    assert len(re.findall(r"┃ nodes +┃", text)) == 2  # a column in both tables
    assert "node[1-3,5]" in row[first["trial_id"]] and "login2" in row[second["trial_id"]]
    assert "old1" not in text
    assert re.search(rf"{first['id']} .*node\[1-3,5\]", text)  # the active runs table too


def test_last_attempt_nodes_reads_the_end_of_the_file(tmp_path):
    from hpo_slurm.core.fsio import append_line
    from hpo_slurm.reporting.nodes import last_attempt_nodes

    path = tmp_path / "attempts.jsonl"
    assert last_attempt_nodes(path) is None  # the job has not started yet
    for attempt in range(1, 2001):  # a job requeued 2,000 times: far more than the part read
        append_line(path, json.dumps({"attempt": attempt, "host": f"h{attempt}", "nodes": [f"n{attempt}", "gpu01"]}))
    assert path.stat().st_size > 64 * 1024
    assert last_attempt_nodes(path) == ["n2000", "gpu01"]
    append_line(path, json.dumps({"attempt": 2001, "host": "h2001", "nodes": []}))  # an empty list: its host
    assert last_attempt_nodes(path) == ["h2001"]
    with open(path, "a") as handle:
        handle.write('{"attempt": 2002, "host": "h20')  # a line cut short by a killed job
    assert last_attempt_nodes(path) == ["h2001"]
    path.write_text('{"attempt": 1, "pid": 5}\n')
    assert last_attempt_nodes(path) is None  # names no node


@pytest.mark.parametrize("names, text", [
    (["node1", "node2"], "node[1-2]"), (["node1", "node2", "node3", "node5"], "node[1-3,5]"),
    (["node3", "node1", "node2", "node1"], "node[1-3]"), (["login2"], "login2"), (["node9", "node10"], "node[9-10]"),
    (["gpu099", "gpu100", "gpu7"], "gpu[099-100],gpu7"), (["a1", "b1", "a2", "host.example.org"], "a[1-2],b1,host.example.org"),
    ([], ""),
])
def test_node_lists_are_written_as_slurm_writes_them(names, text):
    from hpo_slurm.reporting.nodes import compact_nodes

    assert compact_nodes(names) == text


def test_trials_and_runs_without_a_target_show_what_they_trained():
    """A search without max_length: a training trial's target_length and its run's to_length are 0
    (NO_TARGET). The trials table shows the length it trained, with no target; the active runs
    table says the run is open-ended; nothing reads "→0"."""
    from rich.console import Console

    from hpo_slurm.reporting.views import active_runs_table, trials_table

    run = {"run_id": "t1-r2", "trial_id": 1, "job_id": "12", "state": "RUNNING", "from_length": 16, "to_length": 0,
           "reason": None, "nodes": None, "submitted_at": 1.0, "started_at": 2.0}
    trial = {"id": 1, "state": "RUNNING", "hparams": {"lr": 0.1}, "parent": None, "length_done": 16,
             "length_trained": 21, "target_length": 0, "latest_metric": 0.3, "best_metric": 0.25, "best_length": 8,
             "restarts": 0, "preemptions": 1, "checkpoint_bytes": 0, "message": None, "runs": [run]}
    console = Console(width=200, record=True)
    console.print(trials_table([trial], width=200))
    console.print(active_runs_table({"active_runs": [run], "run_counts": {"SUBMITTED": 0, "RUNNING": 1}}))
    text = console.export_text()
    assert re.search(r"│ +1 +│ RUNNING +│ 21 +│", text)
    assert "t1-r2 │ 1     │ RUNNING │ 16→open-ended" in text and "→0" not in text
