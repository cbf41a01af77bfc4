"""The dashboard's HTTP API, served for real by uvicorn: its answers equal what the experiment
database and the static report's readers say, the token gate, read-only routes, and crafted paths
that must not reach a file outside the experiment folders."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from dashboard_helpers import TOKEN, serving, simulate  # noqa: E402
from results_helpers import launch_example  # noqa: E402

from hpo_slurm.core.layout import ExperimentLayout  # noqa: E402
from hpo_slurm.dashboard import experiment_reads  # noqa: E402
from hpo_slurm.experiment.store import Store  # noqa: E402
from hpo_slurm.reporting import results  # noqa: E402

SECRET = "the-secret-outside-the-root"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A root with a simulated adaptive_asha search (digits, 256 trials) and a real local PBT search
    (quadratic: logs, checkpoints, parents); a secret file beside the root."""
    tmp = tmp_path_factory.mktemp("dash")
    root, pbt = launch_example(tmp, "pbt")
    simulate(root, "digits")
    (tmp / "secret.txt").write_text(SECRET)
    return root


@pytest.fixture(scope="module")
def served(root):
    with serving(root) as server:
        yield server


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_list_names_every_experiment_with_its_best(served, root):
    listed = {e["name"]: e for e in served.json("/api/experiments")}
    assert set(listed) == {"digits", "quadratic-pbt"}
    layout = ExperimentLayout(root / "digits")
    loaded = results.load(layout)
    best = results.ranked_trials(loaded)[0]
    assert listed["digits"]["best"] == {"trial_id": best["id"], "metric": best["best_metric"]}
    assert listed["digits"]["trial_count"] == len(loaded.trials) == 256
    assert listed["digits"]["state"] == "COMPLETED" and listed["digits"]["driver_alive"] is False


def test_a_page_of_trials_is_sorted_filtered_and_counted_as_the_database_says(served, root):
    trials = results.load(ExperimentLayout(root / "digits")).trials
    page = served.json("/api/e/digits/trials?sort=best_metric&order=asc&limit=25&offset=25")
    ranked = sorted(trials, key=lambda t: (t["best_metric"] is None, t["best_metric"], t["id"]))
    assert [r["id"] for r in page["rows"]] == [t["id"] for t in ranked[25:50]]
    assert page["total"] == page["matched"] == 256
    descending = served.json("/api/e/digits/trials?sort=validated_length&order=desc&limit=10")
    assert [r["validated_length"] for r in descending["rows"]] == [30] * 10
    completed = served.json("/api/e/digits/trials?states=COMPLETED&limit=250")
    assert completed["matched"] == sum(t["state"] == "COMPLETED" for t in trials) == len(completed["rows"])
    assert {r["state"] for r in completed["rows"]} == {"COMPLETED"}
    wide = served.json("/api/e/digits/trials?q=width%3D16&limit=250")  # width=16, as the table shows it
    assert wide["matched"] == sum(t["hparams"]["width"] == 16 for t in trials) > 0
    both = served.json("/api/e/digits/trials?q=width%3D16%20depth%3D3&limit=250")  # every word must match
    assert both["matched"] == sum(t["hparams"]["width"] == 16 and t["hparams"]["depth"] == 3 for t in trials) > 0
    low = served.json("/api/e/digits/trials?q=lr%3D0.000&limit=250")  # a value's start: lr below 0.001
    assert low["matched"] == sum(t["hparams"]["lr"] < 0.001 for t in trials) > 0
    one = served.json("/api/e/digits/trials?q=17")
    assert 17 in [r["id"] for r in one["rows"]]


def test_curves_are_the_reports_curves_of_the_best_trials(served, root):
    loaded = results.load(ExperimentLayout(root / "digits"))
    expected = results.validation_curves(loaded)
    shown = served.json("/api/e/digits/curves")
    best_ids = [t["id"] for t in results.ranked_trials(loaded)[:experiment_reads.CURVES_SHOWN]]
    assert [int(i) for i in shown["curves"]] == best_ids
    assert shown["best"] == best_ids[0] and shown["scored"] == 256
    for trial_id, points in shown["curves"].items():
        assert [tuple(p) for p in points] == expected[int(trial_id)]
    chosen = served.json("/api/e/digits/curves?ids=3,1")
    assert set(chosen["curves"]) == {"1", "3"}


def test_pbt_children_are_joined_to_the_length_they_started_from(served, root):
    loaded = results.load(ExperimentLayout(root / "quadratic-pbt"))
    children = {t["id"]: t for t in loaded.trials if t["parent"] is not None}
    assert children, "the PBT example clones trials"
    shown = served.json("/api/e/quadratic-pbt/curves")
    for child, (parent, start) in shown["parents"].items():
        assert children[int(child)]["parent"] == parent
        assert start == results.parent_length(children[int(child)])


def test_best_so_far_matches_the_reports_line_at_every_improvement(served, root):
    loaded = results.load(ExperimentLayout(root / "digits"))
    expected, best = [], None
    for hours, value, best_value, trial_id in results.best_so_far(loaded):
        if best is None or best_value < best:
            best = best_value
            expected.append((hours, best_value, trial_id))
    shown = served.json("/api/e/digits/best")["points"]
    assert len(shown) == len(expected) > 3
    for (hours, value, trial_id), (want_hours, want_value, want_trial) in zip(shown, expected):
        assert (value, trial_id) == (want_value, want_trial)
        assert math.isclose(hours, want_hours, rel_tol=1e-9, abs_tol=1e-12)


def test_hyperparameter_points_hold_every_scored_trial_with_log_bounds_as_values(served, root):
    data = served.json("/api/e/digits/hparams")
    params = {p["name"]: p for p in data["params"]}
    assert params["lr"] == {"name": "lr", "kind": "log", "minval": pytest.approx(1e-4), "maxval": pytest.approx(0.1)}
    assert params["width"] == {"name": "width", "kind": "categorical", "vals": ["16", "32", "64", "128"]}
    assert len(data["rows"]) == data["scored"] == 256
    trials = {t["id"]: t for t in results.load(ExperimentLayout(root / "digits")).trials}
    names = [p["name"] for p in data["params"]]
    for row in data["rows"][:20]:
        trial = trials[row[0]]
        assert row[1] == trial["best_metric"]
        assert row[2 + names.index("lr")] == trial["hparams"]["lr"]
        assert row[2 + names.index("width")] == str(trial["hparams"]["width"])


def test_a_trial_page_has_its_runs_metrics_checkpoints_and_log_tails(served, root):
    layout = ExperimentLayout(root / "quadratic-pbt")
    with Store.reading(layout.database) as store:
        runs = store.runs(1)
        lines = store.metrics(1)
    page = served.json("/api/e/quadratic-pbt/trials/1")
    assert [r["id"] for r in page["runs"]] == [r["id"] for r in runs]
    for kind in ("validation", "training"):
        mine = [(m["length"], m["metrics"]) for m in lines if m["kind"] == kind]
        assert [(m["length"], m["metrics"]) for m in page["metrics"] if m["kind"] == kind] == mine[-500:]
        assert page["metric_counts"][kind] == len(mine)
    on_disk = sorted(p.name for p in layout.checkpoints_dir(1).iterdir() if p.name.startswith("length-"))
    assert [c["name"] for c in page["checkpoints"]] == on_disk and all(c["bytes"] > 0 for c in page["checkpoints"])
    logs = served.json(f"/api/e/quadratic-pbt/trials/1/logs?run={runs[0]['id']}")
    out = [f for f in logs["files"] if f["name"].endswith("_log.out")]
    assert out and "Starting with JobEnvironment" in out[0]["text"]


def test_compare_takes_two_to_five_trials(served):
    data = served.json("/api/e/digits/compare?ids=5,2,9")
    assert [t["id"] for t in data["trials"]] == [5, 2, 9]
    assert all(t["curve"] and t["runs"] for t in data["trials"])
    for ids in ("1", "1,2,3,4,5,6"):
        status, _, body = served.request(f"/api/e/digits/compare?ids={ids}")
        assert status == 400 and b"ids" in body


@pytest.mark.parametrize("query, named", [
    ("sort=hparams", b"sort"), ("order=up", b"order"), ("limit=7", b"limit"), ("offset=-1", b"offset"),
    ("offset=x", b"offset"), ("offset=1_0", b"offset"), ("offset=%C2%B2", b"offset"), ("states=BOGUS", b"states"),
    ("states=RUNNING,running", b"states"),
])
def test_bad_query_parameters_are_400_naming_the_parameter(served, query, named):
    status, headers, body = served.request(f"/api/e/digits/trials?{query}")
    assert status == 400 and json.loads(body)["error"].startswith(named.decode())


def test_unknown_things_are_404(served):
    for path in ("/api/e/nothing-here", "/api/e/digits/trials/99999", "/e/nothing-here",
                 "/api/e/digits/trials/1/logs?run=t2-r1", "/api/e/digits/compare?ids=1,99999",
                 "/api/e/digits/trials/99999999999999999999999", "/api/e/digits/trials/99999999999999999999999/logs",
                 "/e/digits/trials/99999999999999999999999"):
        status, _, _ = served.request(path)
        assert status == 404, path


def test_trial_ids_are_ascii_digits(served):
    for path in ("/api/e/digits/compare?ids=1,%C2%B2", "/api/e/digits/curves?ids=%C2%B2", "/api/e/digits/curves?ids=1e3",
                 "/api/e/digits/curves?ids=1234567890123"):
        status, _, body = served.request(path)
        assert status == 400 and json.loads(body)["error"].startswith("ids:"), path


def test_without_the_token_nothing_is_served(served):
    for path in ("/", "/api/experiments", "/api/e/digits", "/static/common.js", "/e/digits"):
        assert served.request(path, token=None)[0] == 403, path
        assert served.request(path, token="wrong-token-0123456789")[0] == 403, path
    status, headers, _ = served.request(f"/e/digits?token={TOKEN}&x=1", token=None)
    assert status == 303 and headers["location"] == "/e/digits?x=1"
    cookie = headers["set-cookie"]
    assert f"hpo_slurm_token_{served.port}={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, body = served.request("/api/experiments", token=None,
                                     headers={"Cookie": f"hpo_slurm_token_{served.port}={TOKEN}"})
    assert status == 200 and json.loads(body)
    assert served.request("/api/experiments", token=None, headers={"Cookie": f"other={TOKEN}"})[0] == 403


def _tree(root: Path):
    return {str(p.relative_to(root)): (_digest(p), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith("-shm")}  # SQLite's shared-memory index of a WAL reader


def test_no_endpoint_writes(served, root):
    before = _tree(root)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/api/experiments", "/api/e/digits", "/api/e/digits/trials", "/static/common.js",
                     "/api/e/digits/best", "/api/e/quadratic-pbt/trials/1/logs?run=t1-r1"):
            assert served.request(path, method=method)[0] == 405, (method, path)
    for path in ("/api/experiments", "/api/e/digits", "/api/e/digits/version", "/api/e/digits/trials",
                 "/api/e/digits/curves", "/api/e/digits/best", "/api/e/digits/hparams", "/api/e/digits/compare?ids=1,2",
                 "/api/e/quadratic-pbt/trials/1", "/api/e/quadratic-pbt/trials/1/logs?run=t1-r1",
                 "/api/e/quadratic-pbt/best", "/api/e/quadratic-pbt/curves"):
        served.json(path)
    assert _tree(root) == before


@pytest.mark.parametrize("path", [
    "/api/e/..%2Fsecret.txt", "/api/e/../secret.txt", "/api/e/%2e%2e/version", "/api/e/../digits/version",
    "/api/e/..%2F..%2Fetc%2Fpasswd/version", "/e/..%2Fsecret.txt", "/static/../../secret.txt",
    "/static/..%2F..%2F..%2Fsecret.txt", "/static/%2e%2e/%2e%2e/%2e%2e/secret.txt", "/static/../app.py",
    "/static/..%2fapp.py", "/api/e/digits/trials/1/logs?run=../../../secret.txt",
    "/api/e/digits/trials/1/logs?run=..%2F..%2Fconfig.yaml", "/api/e/digits/trials/1/logs?run=/etc/passwd",
    "/api/e/digits/trials/1/logs?run=t1-r1/../../../secret.txt", "//etc/passwd", "/api/e/.hidden/version",
    "/api/e/digits%00/version",
])
def test_crafted_paths_reach_no_file_outside_the_experiments(served, path):
    status, _, body = served.request(path)
    assert status in (400, 404), (path, status)
    assert SECRET.encode() not in body and b"root:" not in body and b"import " not in body


def test_an_experiment_reached_through_a_symbolic_link_out_of_the_root_is_not_served(served, root, tmp_path):
    outside = tmp_path / "elsewhere"
    simulate(outside, "linked", config="benchmarks/configs/curves.yaml", objective="hpo_slurm.benchmarks.curves:high")
    link = root / "linked"
    os.symlink(outside / "linked", link)
    try:
        assert served.request("/api/e/linked")[0] == 404
        assert "linked" not in [e["name"] for e in served.json("/api/experiments")]
    finally:
        link.unlink()


def test_a_log_or_checkpoint_linked_from_outside_the_experiment_is_not_read(served, root, tmp_path):
    (tmp_path / "outside.log").write_text(SECRET)
    (tmp_path / "outside-checkpoint").mkdir()
    (tmp_path / "outside-checkpoint" / "hpo_checkpoint.json").write_text(SECRET)
    layout = ExperimentLayout(root / "quadratic-pbt")
    log = layout.run_dir("t2-r1") / "99999_0_log.out"
    checkpoint = layout.checkpoints_dir(2) / "length-999999999"
    os.symlink(tmp_path / "outside.log", log)
    os.symlink(tmp_path / "outside-checkpoint", checkpoint)
    try:
        status, _, body = served.request("/api/e/quadratic-pbt/trials/2/logs?run=t2-r1")
        assert status == 200 and SECRET.encode() not in body and b"99999_0_log.out" not in body
        page = served.json("/api/e/quadratic-pbt/trials/2")
        assert "length-999999999" not in [c["name"] for c in page["checkpoints"]]
    finally:
        log.unlink()
        checkpoint.unlink()


def test_a_metrics_line_with_nan_reads_as_missing_and_the_json_stays_valid(tmp_path):
    root = tmp_path / "runs"
    simulate(root, "nan", config="benchmarks/configs/curves.yaml", objective="hpo_slurm.benchmarks.curves:high")
    layout = ExperimentLayout(root / "nan")
    with sqlite3.connect(layout.database) as db:  # a trial reporting NaN beside a real value
        db.execute("INSERT INTO metrics (trial_id, run_id, kind, length, metrics, time) "
                   "VALUES (1, 't1-r1', 'validation', 999, '{\"other\": NaN, \"loss\": 0.5}', 1e12)")
        db.execute("INSERT INTO metrics (trial_id, run_id, kind, length, metrics, time) "
                   "VALUES (1, 't1-r1', 'validation', 1000, '{\"loss\": NaN}', 1e12)")
        db.execute("INSERT INTO metrics (trial_id, run_id, kind, length, metrics, time) "  # the best, unreadable
                   "VALUES (2, 't2-r1', 'validation', 1001, '{\"other\": Infinity, \"loss\": -5}', 1e12 + 1)")
    experiment = experiment_reads.Experiment.at(layout)
    metric = experiment.metric
    with serving(root) as served:
        status, _, body = served.request("/api/e/nan/curves?ids=1")
        curve = json.loads(body)["curves"]["1"]
        lines = served.json("/api/e/nan/trials/1")["metrics"]
        steps = served.json("/api/e/nan/best")["points"]
    assert status == 200 and b"NaN" not in body
    lengths = [p[0] for p in curve]
    assert metric == "loss" and 999 in lengths and 1000 not in lengths
    assert lines[-1]["metrics"] == {"loss": None} and lines[-2]["metrics"]["other"] is None
    assert steps[-1][1:] == [-5, 2] and all(step[1] > -5 for step in steps[:-1])


def test_a_dashboard_read_in_progress_never_blocks_the_drivers_commit(tmp_path):
    """WAL: while a page's read holds its snapshot open mid-stream, the driver's write transaction
    commits at once (a 50 ms busy timeout would fail it otherwise), and the read goes on seeing its
    snapshot."""
    root = tmp_path / "runs"
    simulate(root, "wal", config="benchmarks/configs/curves.yaml", objective="hpo_slurm.benchmarks.curves:high")
    layout = ExperimentLayout(root / "wal")
    writer = Store.open(layout.database)  # as the driver opens it: WAL on a local disk
    assert writer._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    writer._conn.execute("PRAGMA busy_timeout=50")
    with Store.reading(layout.database) as reader, reader.snapshot_read():
        stream = reader.run_intervals(now=2e12)
        first = next(stream)
        with writer.transaction():
            writer.insert_metrics([{"trial_id": 1, "run_id": "t1-r1", "kind": "validation", "length": 10**6,
                                    "metrics": json.dumps({"loss": -1.0}), "time": 1e12}])
            writer.insert_runs([{**writer.runs(1)[0], "id": "t1-r99", "seq": 99, "started_at": 1.5e12}])
        rest = list(stream)
    writer.close()
    assert first[0] > 0 and all(start != 1.5e12 for start, _ in rest)  # the reader's snapshot held
    with Store.reading(layout.database) as store:
        assert store.validation_curves([1], "loss")[1][-1] == (10**6, -1.0)
