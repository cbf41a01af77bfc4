"""`hpo-slurm status NAME`: a bounded summary by default (counts, compute, best, active runs, top
trials) that agrees with the experiment database, and the trial listing on request (`--trials`)."""

from __future__ import annotations

import json
import re
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
