"""The store's reads for large experiments (store_reads.py) against a plain Python reading of the same
rows: the steps of the best-so-far line in both directions, with ties, booleans, text and rows
SQLite cannot read; pages of trials with NULLs last."""

from __future__ import annotations

import random

import pytest

from hpo_slurm.experiment.rows import new_metric_row, new_trial_row
from hpo_slurm.dashboard.best_so_far import BestSoFarLines, merge_steps
from hpo_slurm.experiment.store import Store


def _steps(rows, smaller):
    """The reference: scan every validation in (time, ingestion) order, keep each strict improvement."""
    steps, best = [], None
    for moment, value, trial_id in rows:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
            continue
        if best is None or (value < best if smaller else value > best):
            best = value
            steps.append((moment, float(value), trial_id))
    return steps


def _rows(seed: int, count: int):
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        value = rng.choice([rng.randint(-5, 5), rng.random() * 10 - 5, True, "text", None, float("nan"), float("inf")])
        rows.append((float(rng.randint(0, 200)), value, index % 7))  # many equal times: the row id breaks ties
    return rows


def _in_time_order(rows):
    return [rows[i] for i in sorted(range(len(rows)), key=lambda i: (rows[i][0], i))]


@pytest.mark.parametrize("smaller", [True, False])
def test_the_best_so_far_line_from_candidates_is_the_strict_improvements_in_time_order(tmp_path, smaller):
    store = Store.open(tmp_path / "experiment.db")
    rows = _rows(4, 600)
    with store.transaction():
        store.insert_metrics([new_metric_row(trial, "r", "validation", 1, {"m": v, "other": 1}, t) for t, v, trial in rows])
        store.insert_metrics([new_metric_row(0, "r", "training", 1, {"m": -100.0 if smaller else 100.0}, 0.0)])
    candidates, last_id = store.best_candidates("m", smaller)
    store.close()
    line = [(t, v, trial) for t, _, v, trial in merge_steps([], candidates, smaller)]
    assert last_id == 601 and line == _steps(_in_time_order(rows), smaller) and len(line) >= 3


@pytest.mark.parametrize("smaller", [True, False])
def test_the_line_kept_between_requests_follows_a_growing_table(tmp_path, smaller):
    """Rows arrive in batches whose times reach back before earlier batches' (late reports): after each,
    the kept line equals the line computed from scratch."""
    store = Store.open(tmp_path / "experiment.db")
    with store.transaction():
        store.create_experiment(name="e", uid="u1", state="RUNNING", searcher="random", executor="local",
                                config="", created_at=0.0)
    lines = BestSoFarLines()
    rows = _rows(9, 800)
    for start in range(0, 800, 160):
        batch = rows[start:start + 160]
        with store.transaction():
            store.insert_metrics([new_metric_row(trial, "r", "validation", 1, {"m": v}, t) for t, v, trial in batch])
        kept = lines.steps(tmp_path / "experiment.db", "m", smaller)
        assert [(t, v, trial) for t, _, v, trial in kept] == _steps(_in_time_order(rows[:start + 160]), smaller)
    store.close()


def test_a_page_of_trials_puts_trials_without_a_value_last_in_either_order(tmp_path):
    store = Store.open(tmp_path / "experiment.db")
    with store.transaction():
        store.insert_trials([new_trial_row(i, {"x": i}, None, None, 0.0) for i in range(1, 7)])
        store.update_trials([(2, {"best_metric": 0.5}), (4, {"best_metric": 0.1}), (5, {"best_metric": 0.9})])
    for descending, expected in ((False, [4, 2, 5, 1, 3, 6]), (True, [5, 2, 4, 1, 3, 6])):
        matched, rows = store.trial_page("best_metric", descending, limit=10)
        assert matched == 6 and [r["id"] for r in rows] == expected
    assert [r["id"] for r in store.trial_page("id", True, limit=3)[1]] == [6, 5, 4]
    assert store.trial_page("id", text='"x": 3')[1][0]["id"] == 3
    store.close()
