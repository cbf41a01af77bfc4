"""`hpo-slurm best`, `export`, `tensorboard` and the shell completion of experiment names, on a real
PBT search (children start from their parents' checkpoints), plus their answers to bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import click
import pytest
import yaml

from hpo_slurm.experiment import folder as experiment
from hpo_slurm.reporting import plots, results
from hpo_slurm.cli.completion import complete_experiment_names
from hpo_slurm.config.checks import Checker
from hpo_slurm.config.hyperparameters import parse_hyperparameters
from hpo_slurm.config.space import Const
from results_helpers import invoke, launch_example, tfrecords


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """(root, name, Results) of examples/quadratic/pbt.yaml run to the end: 6 trials, 2 of them children."""
    root, name = launch_example(tmp_path_factory.mktemp("pbt"), "pbt")
    return root, name, results.load(experiment.find(root, name))


def test_best_prints_a_const_hyperparameters_block_and_the_checkpoint(search):
    root, name, res = search
    done = invoke("best", name, "--root", str(root))
    assert done.exit_code == 0, done.output
    best = results.ranked_trials(res)[0]
    document = yaml.safe_load(done.stdout)  # the whole output is YAML: the facts are comments
    assert list(document) == ["hyperparameters"]
    block = document["hyperparameters"]
    assert list(block) == ["optimizer", "layers", "activation"]  # the config's order, not the database's
    assert block == best["hparams"]
    space = parse_hyperparameters(Checker("best"), block)  # what Determined and hpo-slurm read back
    assert all(isinstance(param, Const) for _, param in space.leaves())
    lines = done.stdout.splitlines()
    assert lines[0] == (f"# best trial of {name}: trial {best['id']} ({best['state']}), "
                        f"found by {res.config.searcher.name} with random sampling")
    checkpoint = res.layout.checkpoints_dir(best["id"]) / f"length-{best['best_length']:09d}"
    assert f"# checkpoint: {checkpoint}" in lines


def test_best_json_and_the_fallback_to_the_latest_checkpoint(search, tmp_path):
    root, name, res = search
    found = json.loads(invoke("best", name, "--root", str(root), "--json").stdout)
    best = results.ranked_trials(res)[0]
    assert found["trial_id"] == best["id"] and found["metric"] == best["best_metric"]
    assert found["checkpoint_at_best"] is True and os.path.isdir(found["checkpoint"])
    assert found["unit"] == "batches" and found["length"] == best["best_length"]
    # a copy whose checkpoints were all collected but an earlier one: that one is given, and said so
    copy = tmp_path / "runs"
    shutil.copytree(root / name, copy / name)
    kept = sorted((copy / name / "trials" / str(best["id"]) / "checkpoints").glob("length-*"))
    assert kept and best["best_length"] > 1
    earlier = kept[-1].with_name("length-000000001")
    shutil.copytree(kept[-1], earlier)
    (earlier / "hpo_checkpoint.json").write_text(json.dumps({"length": 1}))
    for folder in kept:
        shutil.rmtree(folder)
    found = json.loads(invoke("best", name, "--root", str(copy), "--json").stdout)
    assert found["checkpoint_at_best"] is False and found["checkpoint"].endswith("length-000000001")
    assert "the best length's checkpoint is gone" in invoke("best", name, "--root", str(copy)).stdout


def test_export_trials_csv_flattens_hyperparameters(search):
    root, name, res = search
    done = invoke("export", name, "--root", str(root), "--format", "csv")
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [int(r["id"]) for r in rows] == [t["id"] for t in res.trials]
    for row, trial in zip(rows, res.trials):
        assert float(row["hparams.optimizer.lr"]) == trial["hparams"]["optimizer"]["lr"]
        assert row["hparams.activation"] == trial["hparams"]["activation"]
        assert row["parent"] == ("" if trial["parent"] is None else str(trial["parent"]))
    assert sum(1 for r in rows if r["parent"]) == 2


def test_export_json_jsonl_and_pandas_agree(search, tmp_path):
    root, name, res = search
    out = tmp_path / "metrics.jsonl"
    done = invoke("export", name, "--root", str(root), "--what", "metrics", "--format", "jsonl", "--out", str(out))
    assert done.exit_code == 0 and "rows written" in done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(res.metrics)
    assert {line["kind"] for line in lines} == {"training", "validation"}
    runs = json.loads(invoke("export", name, "--root", str(root), "--what", "runs", "--format", "json").stdout)
    assert [r["id"] for r in runs] == [r["id"] for r in res.runs] and all(r["state"] == "SUCCEEDED" for r in runs)
    pandas = pytest.importorskip("pandas")
    trials_csv = tmp_path / "trials.csv"
    invoke("export", name, "--root", str(root), "--out", str(trials_csv))
    trials_json = json.loads(invoke("export", name, "--root", str(root), "--format", "json").stdout)
    from_csv, from_json = pandas.read_csv(trials_csv), pandas.json_normalize(trials_json)
    assert list(from_csv.columns) == list(from_json.columns)
    assert list(from_csv["hparams.optimizer.lr"]) == pytest.approx(list(from_json["hparams.optimizer.lr"]))


def test_export_runs_carry_job_hours_and_gpu_hours_times_slots_per_trial(search, tmp_path):
    """Each exported run has its wall hours and its GPU-hours; the same runs with 4 GPUs per trial (a
    trial of 4 ranks) count 4 GPU-hours per job hour, and the CPU-only example counts none."""
    root, name, res = search
    shutil.copytree(root / name, tmp_path / name)
    config = tmp_path / name / "config.yaml"
    config.write_text(config.read_text().replace("slots_per_trial: 0", "slots_per_trial: 4"))
    cpu = json.loads(invoke("export", name, "--root", str(root), "--what", "runs", "--format", "json").stdout)
    gpu = json.loads(invoke("export", name, "--root", str(tmp_path), "--what", "runs", "--format", "json").stdout)
    assert len(cpu) == len(gpu) == len(res.runs) > 0
    for run, c, g in zip(res.runs, cpu, gpu):
        assert c["job_hours"] == g["job_hours"] == pytest.approx((run["ended_at"] - run["started_at"]) / 3600)
        assert c["gpu_hours"] == 0 and g["gpu_hours"] == pytest.approx(4 * g["job_hours"]) and g["job_hours"] > 0
    rows = list(csv.DictReader(io.StringIO(
        invoke("export", name, "--root", str(tmp_path), "--what", "runs", "--format", "csv").stdout)))
    assert list(rows[0])[-2:] == ["job_hours", "gpu_hours"]
    assert [float(r["gpu_hours"]) for r in rows] == pytest.approx([g["gpu_hours"] for g in gpu])


def test_tensorboard_event_files_hold_every_metric(search, tmp_path):
    root, name, res = search
    out = tmp_path / "tb"
    for _ in range(2):  # exporting again replaces the files
        done = invoke("tensorboard", name, "--root", str(root), "--out", str(out))
        assert done.exit_code == 0, done.output
    folders = sorted(p.name for p in out.iterdir())
    assert folders == sorted(f"trial-{t['id']}" for t in res.trials)
    for folder in out.iterdir():
        (event_file,) = folder.iterdir()
        records = list(tfrecords(event_file))  # CRCs checked
        trial_id = int(folder.name.split("-")[1])
        assert len(records) == 1 + sum(len(m["metrics"]) for m in res.metrics if m["trial_id"] == trial_id)
        assert b"brain.Event:2" in records[0]
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    child = next(t for t in res.trials if t["parent"])
    reader = accumulator.EventAccumulator(str(out / f"trial-{child['id']}"))
    reader.Reload()
    assert set(reader.Tags()["scalars"]) == {"training/loss", "validation/validation_loss"}
    seen = [(e.step, e.value) for e in reader.Scalars("validation/validation_loss")]
    expected = results.validation_curves(res)[child["id"]]
    assert [s for s, _ in seen] == [n for n, _ in expected]
    assert [v for _, v in seen] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_pbt_children_are_joined_to_their_parents_in_the_learning_curves(search):
    pytest.importorskip("matplotlib")
    _, _, res = search
    ax = plots.learning_curves_figure(res).axes[0]
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == sum(1 for t in res.trials if t["parent"]) == 2
    assert any("parent's checkpoint" in t.get_text() for t in ax.get_legend().get_texts())
    assert ax.get_xscale() == "linear"  # rounds of 16: 16, 32, 48


@pytest.mark.parametrize("args, message", [
    (["best", "nope"], "no experiment named 'nope'"),
    (["plot", "nope"], "no experiment named 'nope'"),
    (["report", "nope"], "no experiment named 'nope'"),
    (["tensorboard", "nope"], "no experiment named 'nope'"),
    (["export", "nope"], "no experiment named 'nope'"),
    (["export", "{name}", "--format", "xml"], "--format 'xml': expected one of csv, json, jsonl"),
    (["export", "{name}", "--what", "jobs"], "--what 'jobs': expected one of trials, runs, metrics"),
])
def test_bad_input_is_one_line_and_exit_2(search, args, message):
    root, name, _ = search
    done = invoke(*[a.format(name=name) for a in args], "--root", str(root))
    assert done.exit_code == 2
    assert done.stderr == f"hpo-slurm: {message}" + (f" in {root}\n" if "no experiment" in message else "\n")
    assert done.stdout == ""


@pytest.mark.parametrize("command", ["export", "report", "plot", "tensorboard"])
def test_an_unusable_out_path_is_one_line_and_creates_nothing(search, tmp_path, command):
    root, name, _ = search
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    is_file = command in ("export", "report")
    unusable = [a_file / "x.out", tmp_path / "missing" / "x.out"] if is_file else [a_file, a_file / "sub"]
    if is_file:
        unusable.append(tmp_path)  # a folder where a file is wanted
    for out in unusable:
        done = invoke(command, name, "--root", str(root), "--out", str(out))
        assert done.exit_code == 2, (out, done.output)
        assert done.stderr.startswith("hpo-slurm: ") and done.stderr.count("\n") == 1, done.stderr
        assert "--out" in done.stderr and str(out) in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no folder made on the way


def test_completion_lists_experiment_names(search, tmp_path, monkeypatch):
    root, name, _ = search
    ctx = click.Context(click.Command("x"))
    ctx.params = {"root": str(root)}
    assert [c.value for c in complete_experiment_names(ctx, None, "")] == [name]
    assert complete_experiment_names(ctx, None, "zzz") == []
    ctx.params = {}
    monkeypatch.setenv("HPO_SLURM_ROOT", str(root))
    assert [c.value for c in complete_experiment_names(ctx, None, name[:5])] == [name]
    monkeypatch.setenv("HPO_SLURM_ROOT", str(tmp_path / "missing"))
    assert complete_experiment_names(ctx, None, "") == []
    # through the shell protocol, as bash asks
    env = {**os.environ, "_HPO_SLURM_COMPLETE": "bash_complete", "COMP_WORDS": f"hpo-slurm best {name[:4]}",
           "COMP_CWORD": "2", "HPO_SLURM_ROOT": str(root)}
    done = subprocess.run([sys.executable, "-m", "hpo_slurm.cli"], env=env, capture_output=True, text=True)
    assert done.stdout.split() == [f"plain,{name}"]
    env.update(COMP_WORDS="hpo-slurm ten", COMP_CWORD="1")
    done = subprocess.run([sys.executable, "-m", "hpo_slurm.cli"], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["plain,tensorboard"]
