"""The digits-MLP table benchmark (hpo_slurm.benchmarks.digits): a table of real training runs that
covers its config's grid, looked up exactly on the grid and by nearest value in between."""

from __future__ import annotations

import gzip
import json
import math
from importlib import resources
from pathlib import Path

import pytest
import yaml

from hpo_slurm.benchmarks import digits
from hpo_slurm.benchmarks.ranks import spearman
from hpo_slurm.config.schema import load_config
from hpo_slurm.core.rng import Rng
from hpo_slurm.engine.simulation import simulate

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "benchmarks" / "configs" / "digits.yaml"
OBJECTIVE = "hpo_slurm.benchmarks.digits:objective"


@pytest.fixture(scope="module")
def raw():
    data = resources.files("hpo_slurm.benchmarks").joinpath("data", digits.TABLE).read_bytes()
    return json.loads(gzip.decompress(data))


def grid_points():
    return load_config(str(CONFIG)).hyperparameters.grid()


def test_table_has_at_least_500_configurations_of_at_least_30_epochs(raw):
    assert raw["epochs"] >= 30
    assert len(raw["configs"]) >= 500
    keys = {tuple(row[name] for name in digits.NAMES) for row in raw["configs"]}
    assert len(keys) == len(raw["configs"])  # no configuration twice
    for row in raw["configs"]:
        assert len(row["loss"]) == len(row["seconds"]) == raw["epochs"]
        assert all(math.isfinite(v) and v > 0 for v in (row["loss0"], *row["loss"]))
        assert all(math.isfinite(v) and v > 0 for v in row["seconds"])
    assert len(digits.load()) == len(raw["configs"])


def test_every_point_of_the_config_s_grid_is_in_the_table(raw):
    points = grid_points()
    assert len(points) == len(raw["configs"])
    table = {tuple(row[name] for name in digits.NAMES): row for row in raw["configs"]}
    for point in points:
        mapped = digits.config_of(point)
        # the config's log grid (10 ** linspace) is the table's lr up to its 6 stored digits
        assert mapped == pytest.approx({name: point[name] for name in digits.NAMES}, rel=1e-5)
        assert table[tuple(mapped[name] for name in digits.NAMES)]["lr"] == mapped["lr"]


def test_objective_returns_the_table_s_values_on_the_grid(raw):
    for row in raw["configs"][::37]:
        hparams = {name: row[name] for name in digits.NAMES}
        for epoch in (1, 5, 30):
            result = digits.objective(hparams, epoch)
            assert result["loss"] == row["loss"][epoch - 1]
            assert result["seconds"] == pytest.approx(sum(row["seconds"][:epoch]))
        assert digits.objective(hparams, 0) == {"loss": row["loss0"], "seconds": 0.0}
        assert digits.objective(hparams, 1000) == digits.objective(hparams, raw["epochs"])  # clamped


def test_off_grid_values_map_to_the_nearest_grid_value():
    base = {"lr": 1e-3, "width": 64, "depth": 2, "weight_decay": 1e-4, "batch_size": 32}
    cases = [
        ({"lr": 1e-3}, {"lr": 0.000719686}),           # lr grid: ..., 2.6827e-4, 7.19686e-4, 1.9307e-3, ...
        ({"lr": 1.17e-3}, {"lr": 0.000719686}),        # their log midpoint is 1.1788e-3
        ({"lr": 1.19e-3}, {"lr": 0.0019307}),
        ({"lr": 1e-6}, {"lr": 0.0001}), ({"lr": 0.5}, {"lr": 0.1}),
        ({"width": 45}, {"width": 32}), ({"width": 46}, {"width": 64}), ({"width": 500}, {"width": 128}),
        ({"depth": 1.4}, {"depth": 1}), ({"depth": 2.6}, {"depth": 3}),
        ({"weight_decay": 2e-3}, {"weight_decay": 0.01}), ({"weight_decay": 5e-4}, {"weight_decay": 1e-4}),
        ({"weight_decay": 2e-5}, {"weight_decay": 1e-4}), ({"weight_decay": 5e-6}, {"weight_decay": 0.0}),
        ({"weight_decay": -1.0}, {"weight_decay": 0.0}),
        ({"batch_size": 60}, {"batch_size": 32}), ({"batch_size": 70}, {"batch_size": 128}),
    ]
    for change, expected in cases:
        mapped = digits.config_of({**base, **change})
        on_grid = {**digits.config_of(base), **expected}
        assert all(mapped[name] in digits.load().grid[name] for name in digits.NAMES)
        assert mapped == pytest.approx(on_grid, rel=1e-5), change
        assert digits.objective({**base, **change}, 7) == digits.objective(mapped, 7)


def test_lr_maps_to_the_nearest_grid_value_in_log_space():
    grid = digits.load().grid["lr"]
    base = {"lr": 1e-3, "width": 64, "depth": 2, "weight_decay": 1e-4, "batch_size": 32}
    for low, high in zip(grid, grid[1:]):
        middle = math.sqrt(low * high)
        assert digits.config_of({**base, "lr": middle * 0.999})["lr"] == low
        assert digits.config_of({**base, "lr": middle * 1.001})["lr"] == high


def test_seconds_are_cumulative_and_increasing_losses_finite():
    for point in grid_points()[::11]:
        results = [digits.objective(point, epoch) for epoch in range(0, 31)]
        seconds = [r["seconds"] for r in results]
        assert seconds[0] == 0.0
        assert all(b > a for a, b in zip(seconds, seconds[1:]))
        assert all(math.isfinite(r["loss"]) for r in results)
        # a continued run costs seconds(b) - seconds(a): what the simulator charges
        assert seconds[30] - seconds[10] == pytest.approx(sum(seconds[i + 1] - seconds[i] for i in range(10, 30)))


def test_random_samples_of_the_config_look_up_and_training_helps():
    space = load_config(str(CONFIG)).hyperparameters
    rng = Rng(3)
    samples = [space.sample(rng) for _ in range(300)]
    final = [digits.objective(s, 30)["loss"] for s in samples]
    early = [digits.objective(s, 1)["loss"] for s in samples]
    assert all(math.isfinite(v) for v in final)
    assert spearman(early, final) > 0  # early losses say something about final ones
    points = grid_points()
    untrained = sorted(digits.objective(p, 0)["loss"] for p in points)
    best = sorted(digits.objective(p, 30)["loss"] for p in points)
    assert best[0] < 0.2 < untrained[0]  # the best configurations really learned the digits


def test_objective_needs_neither_torch_nor_numpy():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
            "from hpo_slurm.benchmarks.digits import objective\n"
            "print(objective({'lr': 1e-3, 'width': 64, 'depth': 2, 'weight_decay': 0.0, 'batch_size': 32}, 30))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "loss" in out


def test_a_short_simulate_run_completes(tmp_path):
    data = yaml.safe_load(CONFIG.read_text())
    data["searcher"]["max_trials"] = 48
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = simulate(path, OBJECTIVE, tmp_path / "runs", workers=8, seed=1)
    assert result["best"]["length"] == 30
    assert math.isfinite(result["best"]["metric"])
    final = {digits.objective(p, 30)["loss"] for p in grid_points()}
    assert result["best"]["metric"] in final  # a value of the table
