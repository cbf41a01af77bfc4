"""Experiment names as Determined takes them (any text: 'vision transformer adaptive'): kept as written
for display, a safe folder derived from them (collisions numbered), and every command that takes an
experiment takes either."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from driver_helpers import cli, copy_example

REPO = Path(__file__).resolve().parents[1]


def _config(tmp: Path, name: str) -> Path:
    data = yaml.safe_load((REPO / "benchmarks/configs/curves.yaml").read_text())
    data["name"] = name
    data["searcher"]["max_trials"] = 8
    path = tmp / f"{abs(hash(name))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _simulate(tmp: Path, root: Path, name: str) -> subprocess.CompletedProcess:
    return cli("simulate", str(_config(tmp, name)), "--objective", "hpo_slurm.benchmarks.curves:high",
               "--root", str(root))


def _stored_name(folder: Path) -> str:
    with sqlite3.connect(folder / "experiment.db") as db:
        return db.execute("SELECT name FROM experiment").fetchone()[0]


def test_a_name_with_spaces_gets_a_safe_folder_and_commands_take_either(tmp_path):
    root = tmp_path / "runs"
    assert _simulate(tmp_path, root, "vision transformer adaptive").returncode == 0
    folder = root / "vision_transformer_adaptive"
    assert _stored_name(folder) == "vision transformer adaptive"
    for name in ("vision transformer adaptive", "vision_transformer_adaptive"):
        done = cli("status", name, "--root", str(root), "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["name"], summary["folder"]) == ("vision transformer adaptive", "vision_transformer_adaptive")
        assert cli("best", name, "--root", str(root)).returncode == 0
    listed = cli("status", "--root", str(root))
    assert "vision transformer adaptive (vision_transformer_adaptive)" in " ".join(listed.stdout.split())


def test_names_spelled_alike_get_numbered_folders_and_a_second_launch_is_refused(tmp_path):
    root = tmp_path / "runs"
    for name in ("vision transformer adaptive", "vision/transformer adaptive", "vision_transformer_adaptive"):
        assert _simulate(tmp_path, root, name).returncode == 0
    assert _stored_name(root / "vision_transformer_adaptive") == "vision transformer adaptive"
    assert _stored_name(root / "vision_transformer_adaptive-2") == "vision/transformer adaptive"
    # a safe name whose folder another name took is numbered too
    assert _stored_name(root / "vision_transformer_adaptive-3") == "vision_transformer_adaptive"
    done = cli("status", "vision/transformer adaptive", "--root", str(root), "--json")
    assert json.loads(done.stdout)["folder"] == "vision_transformer_adaptive-2"
    # a folder name is looked up as a folder first
    assert json.loads(cli("status", "vision_transformer_adaptive", "--root", str(root), "--json").stdout)["name"] \
        == "vision transformer adaptive"
    for name in ("vision transformer adaptive", "vision_transformer_adaptive"):
        again = _simulate(tmp_path, root, name)
        assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    assert sorted(p.name for p in root.iterdir()) == [
        "vision_transformer_adaptive", "vision_transformer_adaptive-2", "vision_transformer_adaptive-3"]


def test_a_name_that_climbs_out_of_the_root_stays_inside_it(tmp_path):
    root = tmp_path / "runs"
    assert _simulate(tmp_path, root, "../../escape/here").returncode == 0
    assert [p.name for p in root.iterdir()] == ["_.._escape_here"] and not (tmp_path / "escape").exists()
    assert cli("status", "../../escape/here", "--root", str(root)).returncode == 0


def test_launch_and_a_sweep_dry_run_take_a_name_with_spaces(tmp_path):
    example = copy_example("quadratic", tmp_path)
    root = tmp_path / "runs"
    done = cli("launch", str(example / "single.yaml"), "--root", str(root), "--executor", "local",
               "--name", "my first try", timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'my first try' (folder my_first_try) created" in done.stderr
    assert _stored_name(root / "my_first_try") == "my first try"
    assert cli("logs", "my first try", "1", "--root", str(root)).returncode == 0
    dry = cli("sweep", str(example / "grid.yaml"), "--root", str(root), "--name", "grid with spaces", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert not (root / "grid_with_spaces").exists()
