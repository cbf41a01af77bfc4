"""load_config / parse_config: Determined's configs load, every bad input is one precise line."""

from __future__ import annotations

import copy
import os
import shlex

import pytest

from hpo_slurm.config.schema import (
    CheckpointStorage,
    ExperimentConfig,
    SearcherConfig,
    SlurmConfig,
    check_name,
    is_folder_name,
    safe_spelling,
    load_config,
    parse_config,
)
from hpo_slurm.core.errors import ConfigError, UserError
from hpo_slurm.core.rng import Rng
from hpo_slurm.config.space import Categorical, Const, Double, Int, Log, Nested

# Determined's examples/tutorials/mnist_pytorch/adaptive.yaml, plus keys hpo-slurm ignores.
MNIST_ADAPTIVE = """\
name: mnist_pytorch_adaptive_search
hyperparameters:
  global_batch_size: 64
  learning_rate:
    type: double
    minval: .0001
    maxval: 1.0
  n_filters1:
    type: int
    minval: 8
    maxval: 64
  n_filters2:
    type: int
    minval: 8
    maxval: 72
  dropout1:
    type: double
    minval: .2
    maxval: .8
  dropout2:
    type: double
    minval: .2
    maxval: .8
searcher:
  name: adaptive_asha
  metric: validation_loss
  smaller_is_better: true
  max_trials: 16
  max_length:
    batches: 937
entrypoint: python3 train.py
environment:
  image: determinedai/environments:cuda-11.8-pytorch-2.0-gpu-0.26.0
bind_mounts:
  - host_path: /data
    container_path: /data
workspace: research
project: mnist
labels: [mnist, asha]
"""

# Determined's const.yaml (a single trial).
MNIST_CONST = """\
name: mnist_pytorch_const
hyperparameters:
  learning_rate: 1.0
  n_filters1: 32
  n_filters2: 64
  dropout1: 0.25
  dropout2: 0.5
searcher:
  name: single
  metric: validation_loss
  max_length:
    epochs: 1
  smaller_is_better: true
records_per_epoch: 60000
entrypoint: python3 -m determined.launch.torch_distributed python3 train.py
"""


def minimal(**overrides):
    """A valid config as a dict; keyword arguments replace top-level keys (None deletes)."""
    data = {
        "entrypoint": "python3 train.py",
        "hyperparameters": {"lr": {"type": "log", "minval": -4, "maxval": -1}},
        "searcher": {"name": "random", "metric": "loss", "max_trials": 4, "max_length": 100},
    }
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def searcher(**fields):
    return {"name": "random", "metric": "loss", "max_trials": 4, "max_length": 100, **fields}


def parse(data, source="search.yaml", **kwargs) -> ExperimentConfig:
    return parse_config(data, source, **kwargs)


def error(data, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path, so a config given as "search.yaml" is named exactly that in messages."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder, text, name="search.yaml") -> str:
    (folder / name).write_text(text, encoding="utf-8")
    return name


def load_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value)
    return str(info.value)


# ----------------------------------------------------------------------------------------------
# Determined's own configs
# ----------------------------------------------------------------------------------------------

def test_determined_adaptive_example_loads_with_one_warning_per_ignored_key(in_tmp):
    config = load_config(write(in_tmp, MNIST_ADAPTIVE, "adaptive.yaml"))
    assert config.source == "adaptive.yaml"
    assert config.name == "mnist_pytorch_adaptive_search"
    assert config.entrypoint == "python3 train.py"
    assert config.hyperparameters == Nested((
        ("global_batch_size", Const(64)),
        ("learning_rate", Double(0.0001, 1.0)),
        ("n_filters1", Int(8, 64)),
        ("n_filters2", Int(8, 72)),
        ("dropout1", Double(0.2, 0.8)),
        ("dropout2", Double(0.2, 0.8)),
    ))
    assert config.searcher == SearcherConfig(
        name="adaptive_asha", metric="validation_loss", smaller_is_better=True, max_length=937,
        unit="batches", max_trials=16)
    assert config.warnings == (
        "adaptive.yaml: environment: not used by hpo-slurm (load modules, activate environments and "
        "export variables in slurm.setup), ignored",
        "adaptive.yaml: bind_mounts: not used by hpo-slurm (Slurm jobs see the cluster's filesystems "
        "as they are), ignored",
        "adaptive.yaml: workspace: not used by hpo-slurm, ignored",
        "adaptive.yaml: project: not used by hpo-slurm, ignored",
        "adaptive.yaml: labels: not used by hpo-slurm, ignored",
    )
    assert config.raw["bind_mounts"] == [{"host_path": "/data", "container_path": "/data"}]


def test_determined_const_example_loads(in_tmp):
    config = load_config(write(in_tmp, MNIST_CONST))
    assert config.searcher.name == "single"
    assert (config.searcher.max_length, config.searcher.unit, config.searcher.max_trials) == (1, "epochs", 1)
    assert config.records_per_epoch == 60000
    assert config.hyperparameters.sample(Rng(1)) == {
        "learning_rate": 1.0, "n_filters1": 32, "n_filters2": 64, "dropout1": 0.25, "dropout2": 0.5}
    assert config.warnings == ()


def test_determined_038_asha_time_metric_and_max_time_give_the_length():
    config = parse(minimal(searcher={"name": "adaptive_asha", "metric": "loss", "max_trials": 8,
                                     "time_metric": "batches", "max_time": 937}))
    assert (config.searcher.max_length, config.searcher.unit) == (937, "batches")


def test_time_metric_must_be_a_length_unit_and_agree_with_max_length():
    assert error(minimal(searcher=searcher(max_length=None, time_metric="val_steps", max_time=5))) == (
        "search.yaml: searcher.time_metric: hpo-slurm measures training length in batches, records or "
        "epochs, got 'val_steps'")
    assert error(minimal(searcher=searcher(max_length=10, time_metric="batches", max_time=5))) == (
        "search.yaml: searcher.max_time: batches 5 disagrees with max_length (batches 10); keep one of them")
    assert parse(minimal(searcher=searcher(max_length=5, time_metric="batches", max_time=5))).searcher.max_length == 5


@pytest.mark.parametrize("name", ["single", "random", "grid"])
def test_searchers_that_never_stop_a_trial_early_may_leave_out_max_length(name):
    """Determined 0.38: single, random and grid trials train as long as their own code decides."""
    hps = {"lr": {"type": "double", "minval": 0.1, "maxval": 0.3, "count": 3}}
    fields = {"max_trials": 2} if name == "random" else {}
    s = parse(minimal(hyperparameters=hps, searcher={"name": name, "metric": "loss", **fields})).searcher
    assert (s.max_length, s.unit, s.open_ended, s.train_length) == (None, "batches", True, 0)
    given = parse(minimal(hyperparameters=hps, searcher={"name": name, "metric": "loss", "max_length": 9, **fields}))
    assert (given.searcher.max_length, given.searcher.open_ended, given.searcher.train_length) == (9, False, 9)


def test_time_metric_alone_names_the_unit_of_an_open_ended_search():
    s = parse(minimal(searcher={"name": "single", "metric": "loss", "time_metric": "epochs"})).searcher
    assert (s.max_length, s.unit) == (None, "epochs")
    assert error(minimal(searcher={"name": "single", "metric": "loss", "time_metric": "val_steps"})) == (
        "search.yaml: searcher.time_metric: hpo-slurm measures training length in batches, records or "
        "epochs, got 'val_steps'")
    assert error(minimal(searcher={"name": "random", "metric": "loss", "max_trials": 3, "max_time": 50})) == (
        "search.yaml: searcher.time_metric: missing required key; max_time needs time_metric: batches, "
        "records or epochs")
    # with a max_length, time_metric still needs its max_time, as before
    assert error(minimal(searcher=searcher(time_metric="batches"))) == (
        "search.yaml: searcher.max_time: missing required key")


@pytest.mark.parametrize("section, message", [
    ({"name": "adaptive_asha", "max_trials": 4}, "searcher.max_length: missing required key; the training "
     "length of a trial, e.g. max_length: {batches: 1000} (or time_metric: batches with max_time: 1000)"),
    ({"name": "adaptive_asha", "max_trials": 4, "time_metric": "batches"}, "searcher.max_time: missing required key"),
    ({"name": "async_halving", "max_trials": 4, "num_rungs": 2}, "searcher.max_length: missing required key; the "
     "training length of a trial, e.g. max_length: {batches: 1000} (or time_metric: batches with max_time: 1000)"),
    ({"name": "pbt", "population_size": 4, "num_rounds": 2, "replace_function": {"truncate_fraction": 0.25},
      "explore_function": {"resample_probability": 0.2, "perturb_factor": 0.1}},
     "searcher.length_per_round: missing required key"),
])
def test_searchers_that_stop_trials_early_still_need_their_lengths(section, message):
    assert error(minimal(searcher={"metric": "loss", **section})) == f"search.yaml: {message}"


def test_defaults(in_tmp):
    config = load_config(write(in_tmp, """\
entrypoint: model_def:MNistTrial
searcher: {name: adaptive_asha, metric: loss, max_trials: 10, max_length: 100}
""", "my-search.v2.yaml"))
    assert config.name == "my-search.v2"
    assert config.entrypoint == "model_def:MNistTrial"
    assert config.hyperparameters == Nested(())
    assert config.description == ""
    assert (config.max_restarts, config.seed, config.slots_per_trial, config.records_per_epoch) == (5, 0, 1, 0)
    assert config.checkpoint_storage == CheckpointStorage(save_trial_best=1, save_trial_latest=1,
                                                          save_experiment_best=0)
    assert config.slurm == SlurmConfig()
    assert config.slurm.signal_delay_s == 120 and config.slurm.poll_interval_s == 10.0
    s = config.searcher
    assert (s.smaller_is_better, s.max_concurrent_trials, s.mode, s.divisor, s.max_rungs) == (
        True, 16, "standard", 4.0, 5)
    assert (s.bracket_rungs, s.stop_once) == (None, False)
    assert config.data == {} and config.warnings == ()
    assert (config.min_validation_period, config.min_checkpoint_period) == (None, None)
    assert config.perform_initial_validation is False


def test_every_setting_is_read():
    config = parse(minimal(
        name="exp1", description="a test", max_restarts=0, reproducibility={"experiment_seed": 42},
        resources={"slots_per_trial": 2}, records_per_epoch=500, data={"url": "s3://x", "secrets": {"k": 1}},
        checkpoint_storage={"save_trial_best": 3, "save_trial_latest": 0, "save_experiment_best": 2},
        min_validation_period={"batches": 50}, min_checkpoint_period={"epochs": 1},
        perform_initial_validation=True,
        searcher={"name": "adaptive_asha", "metric": "acc", "smaller_is_better": False, "max_trials": 64,
                  "max_length": {"records": 6400}, "max_concurrent_trials": 0, "mode": "aggressive",
                  "divisor": 3, "max_rungs": 3, "bracket_rungs": [3, 2], "stop_once": True}))
    assert (config.name, config.description, config.max_restarts, config.seed) == ("exp1", "a test", 0, 42)
    assert (config.slots_per_trial, config.records_per_epoch) == (2, 500)
    assert config.data == {"url": "s3://x", "secrets": {"k": 1}}
    assert config.checkpoint_storage == CheckpointStorage(3, 0, 2)
    assert config.min_validation_period == (50, "batches")
    assert config.min_checkpoint_period == (1, "epochs")
    assert config.perform_initial_validation is True
    assert config.searcher == SearcherConfig(
        name="adaptive_asha", metric="acc", smaller_is_better=False, max_length=6400, unit="records",
        max_trials=64, max_concurrent_trials=0, mode="aggressive", divisor=3.0, max_rungs=3,
        bracket_rungs=(3, 2), stop_once=True)


def test_raw_and_data_are_copies():
    data = minimal(data={"a": [1]})
    config = parse(data)
    data["data"]["a"].append(2)
    assert config.data == {"a": [1]} and config.raw["data"] == {"a": [1]}


def test_entrypoint_list_is_shell_joined():
    config = parse(minimal(entrypoint=["python3", "train.py", "--out", "my dir"]))
    assert config.entrypoint == "python3 train.py --out 'my dir'"
    assert shlex.split(config.entrypoint) == ["python3", "train.py", "--out", "my dir"]


def test_yaml_1_2_scalars_as_determined_reads_them(in_tmp):
    config = load_config(write(in_tmp, """\
entrypoint: python3 train.py
hyperparameters:
  lr: {type: double, minval: 1e-5, maxval: 1.0E-1}
  flag: on
  mode: no
  day: 2024-01-01
  octal: 010
searcher: {name: single, metric: loss, max_length: 10}
slurm: {time: 1:30:00}
"""))
    assert config.hyperparameters.items[0] == ("lr", Double(1e-5, 0.1))
    assert config.hyperparameters.sample(Rng(0))["flag"] == "on"
    assert config.raw["hyperparameters"]["mode"] == "no"
    assert config.raw["hyperparameters"]["day"] == "2024-01-01"
    assert config.raw["hyperparameters"]["octal"] == 10
    assert config.slurm.time_minutes == 90  # YAML 1.1 would read 1:30:00 as 5400


# ----------------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------------

def test_hyperparameter_forms_and_nesting_to_depth_three():
    config = parse(minimal(hyperparameters={
        "batch": {"type": "const", "val": 32},
        "layers": [64, 32],
        "none": None,
        "empty": {},
        "optimizer": {
            "name": {"type": "categorical", "vals": ["adam", "sgd"]},
            "lr": {"type": "log", "minval": -5, "maxval": -1, "base": 2, "count": 3},
            "schedule": {
                "warmup": {"type": "int", "minval": 0, "maxval": 10, "count": 2},
                "decay": {"type": "double", "minval": 0.1, "maxval": 0.9},
                "kind": {"type": {"type": "const", "val": "cosine"}},
            },
        },
    }))
    space = config.hyperparameters
    assert [path for path, _ in space.leaves()] == [
        ("batch",), ("layers",), ("none",), ("empty",), ("optimizer", "name"), ("optimizer", "lr"),
        ("optimizer", "schedule", "warmup"), ("optimizer", "schedule", "decay"),
        ("optimizer", "schedule", "kind", "type"),
    ]
    leaves = dict(space.leaves())
    assert leaves[("batch",)] == Const(32)
    assert leaves[("layers",)] == Const([64, 32])
    assert leaves[("none",)] == Const(None)
    assert leaves[("empty",)] == Const({})
    assert leaves[("optimizer", "name")] == Categorical(("adam", "sgd"))
    assert leaves[("optimizer", "lr")] == Log(-5.0, -1.0, 2.0, 3)
    assert leaves[("optimizer", "schedule", "warmup")] == Int(0, 10, 2)
    sample = space.sample(Rng(7))
    assert set(sample["optimizer"]["schedule"]) == {"warmup", "decay", "kind"}
    assert sample["optimizer"]["schedule"]["kind"] == {"type": "cosine"}
    assert 0 <= sample["optimizer"]["schedule"]["warmup"] <= 10


@pytest.mark.parametrize("spec, path, message", [
    ({"type": "logarithmic", "minval": -4, "maxval": -1}, "hyperparameters.lr.type",
     "unknown hyperparameter type 'logarithmic'; did you mean 'log'?"),
    ({"type": "float", "minval": 0, "maxval": 1}, "hyperparameters.lr.type",
     "unknown hyperparameter type 'float'; did you mean 'double'?"),
    ({"type": "adam"}, "hyperparameters.lr.type",
     "unknown hyperparameter type 'adam'; expected one of const, int, double, log, categorical (a nested "
     "hyperparameter named 'type' is written type: {type: const, val: ...})"),
    ({"type": "int", "minval": True, "maxval": 5}, "hyperparameters.lr.minval",
     "expected an integer, got true"),
    ({"type": "int", "minval": 0.5, "maxval": 5}, "hyperparameters.lr.minval",
     "expected an integer, got 0.5"),
    ({"type": "double", "minval": "0", "maxval": 5}, "hyperparameters.lr.minval",
     "expected a number, got '0'"),
    ({"type": "int", "minval": 5, "maxval": 5}, "hyperparameters.lr.maxval",
     "expected an integer greater than minval (5), got 5"),
    ({"type": "double", "minval": 1, "maxval": 0.5}, "hyperparameters.lr.maxval",
     "expected a number greater than minval (1), got 0.5"),
    ({"type": "int", "minval": 1}, "hyperparameters.lr.maxval", "missing required key"),
    ({"type": "double", "minval": 0, "maxval": 1, "count": 0}, "hyperparameters.lr.count",
     "expected a positive integer, got 0"),
    ({"type": "log", "minval": -4, "maxval": -1, "base": 1}, "hyperparameters.lr.base",
     "expected a number > 0 other than 1, got 1"),
    ({"type": "categorical", "vals": []}, "hyperparameters.lr.vals", "expected a non-empty list, got a list"),
    ({"type": "categorical", "vals": "abc"}, "hyperparameters.lr.vals", "expected a non-empty list, got 'abc'"),
    ({"type": "const"}, "hyperparameters.lr.val", "missing required key"),
    ({"type": "double", "minval": 0, "max": 1}, "hyperparameters.lr.max",
     "unknown key; did you mean 'maxval'?"),
])
def test_bad_hyperparameters(spec, path, message):
    assert error(minimal(hyperparameters={"lr": spec})) == f"search.yaml: {path}: {message}"


def test_bad_hyperparameter_deep_in_a_tree_names_its_path():
    hps = {"optimizer": {"adam": {"beta": {"type": "double", "minval": 0.9, "maxvall": 0.99}}}}
    assert error(minimal(hyperparameters=hps)) == (
        "search.yaml: hyperparameters.optimizer.adam.beta.maxvall: unknown key; did you mean 'maxval'?")
    assert error(minimal(hyperparameters=[1, 2])) == "search.yaml: hyperparameters: expected a mapping, got a list"


# ----------------------------------------------------------------------------------------------
# Searchers
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ({"batches": 937}, (937, "batches")),
    ({"records": 60000}, (60000, "records")),
    ({"epochs": 3}, (3, "epochs")),
    (500, (500, "batches")),
])
def test_max_length_forms(value, expected):
    s = parse(minimal(searcher=searcher(max_length=value))).searcher
    assert (s.max_length, s.unit) == expected


@pytest.mark.parametrize("value, message", [
    ({"epoch": 3}, "searcher.max_length.epoch: unknown key; did you mean 'epochs'?"),
    ({"batches": 0}, "searcher.max_length.batches: expected a positive integer, got 0"),
    ({"batches": 1, "epochs": 1}, "searcher.max_length: expected exactly one of batches, records or epochs, got 2 keys"),
    (-5, "searcher.max_length: expected a positive integer, got -5"),
    ("937", "searcher.max_length: expected a length such as {batches: 1000}, {epochs: 3} or an integer "
            "number of batches, got '937'"),
])
def test_bad_max_length(value, message):
    assert error(minimal(searcher=searcher(max_length=value))) == f"search.yaml: {message}"


def test_grid_max_trials_is_the_grid_size():
    hps = {"a": {"type": "int", "minval": 1, "maxval": 3, "count": 10},  # 3 integers only
           "b": {"type": "double", "minval": 0, "maxval": 1, "count": 4},
           "c": {"type": "categorical", "vals": ["x", "y"]},
           "d": {"nested": {"type": "log", "minval": -3, "maxval": -1, "count": 5}},
           "e": 7}
    config = parse(minimal(hyperparameters=hps, searcher={"name": "grid", "metric": "loss", "max_length": 10}))
    assert config.searcher.max_trials == 3 * 4 * 2 * 5 == config.hyperparameters.grid_size()
    assert parse(minimal(hyperparameters=hps, searcher={
        "name": "grid", "metric": "loss", "max_length": 10, "max_trials": 120})).searcher.max_trials == 120


def test_grid_errors_name_the_hyperparameter():
    hps = {"opt": {"lr": {"type": "double", "minval": 0, "maxval": 1}}}
    assert error(minimal(hyperparameters=hps, searcher={"name": "grid", "metric": "loss", "max_length": 1})) == (
        "search.yaml: hyperparameters.opt.lr.count: missing; grid search needs a count on every int, double "
        "and log hyperparameter")
    hps = {"c": {"type": "categorical", "vals": [1, 2, 3]}}
    assert error(minimal(hyperparameters=hps, searcher={
        "name": "grid", "metric": "loss", "max_length": 1, "max_trials": 5})) == (
        "search.yaml: searcher.max_trials: grid search trains every point of the grid (3 trials); remove "
        "max_trials or set it to 3, got 5")


def test_pbt_config():
    config = parse(minimal(searcher={
        "name": "pbt", "metric": "loss", "population_size": 10, "num_rounds": 5,
        "length_per_round": {"epochs": 2},
        "replace_function": {"truncate_fraction": 0.3},
        "explore_function": {"resample_probability": 0.2, "perturb_factor": 0.1},
    }))
    assert config.searcher == SearcherConfig(
        name="pbt", metric="loss", max_length=10, unit="epochs", max_trials=10 + 4 * 3,
        population_size=10, num_rounds=5, length_per_round=2, truncate_fraction=0.3,
        resample_probability=0.2, perturb_factor=0.1)


@pytest.mark.parametrize("change, message", [
    ({"population_size": 0}, "searcher.population_size: expected a positive integer, got 0"),
    ({"num_rounds": None}, "searcher.num_rounds: missing required key"),
    ({"length_per_round": {"steps": 2}}, "searcher.length_per_round.steps: unknown key; expected one of "
                                         "batches, epochs, records"),
    ({"replace_function": {"truncate_fraction": 0.6}},
     "searcher.replace_function.truncate_fraction: expected a number from 0 to 0.5, got 0.6"),
    ({"explore_function": {"resample_probability": 0.2}},
     "searcher.explore_function.perturb_factor: missing required key"),
    ({"max_length": 100}, "searcher.max_length: not used by the pbt searcher: a trial trains num_rounds x "
                          "length_per_round"),
])
def test_bad_pbt(change, message):
    pbt = {"name": "pbt", "metric": "loss", "population_size": 4, "num_rounds": 2, "length_per_round": 10,
           "replace_function": {"truncate_fraction": 0.25},
           "explore_function": {"resample_probability": 0.2, "perturb_factor": 0.1}}
    pbt.update(change)
    pbt = {k: v for k, v in pbt.items() if v is not None}
    assert error(minimal(searcher=pbt)) == f"search.yaml: {message}"


def test_async_halving():
    s = parse(minimal(searcher={"name": "async_halving", "metric": "loss", "num_rungs": 3, "max_trials": 9,
                                "max_length": 81, "divisor": 3})).searcher
    assert (s.num_rungs, s.max_trials, s.divisor, s.max_length) == (3, 9, 3.0, 81)
    assert error(minimal(searcher={"name": "async_halving", "metric": "loss", "max_trials": 9,
                                   "max_length": 81})) == "search.yaml: searcher.num_rungs: missing required key"


@pytest.mark.parametrize("fields, message", [
    ({"max_trials": -3}, "searcher.max_trials: expected a positive integer, got -3"),
    ({"max_trials": None}, "searcher.max_trials: missing required key"),
    ({"metric": None}, "searcher.metric: missing required key; the validation metric to optimize"),
    ({"metric": ""}, "searcher.metric: expected a metric name, got ''"),
    ({"name": None}, "searcher.name: missing required key"),
    ({"name": "adaptive_ash"}, "searcher.name: unknown searcher 'adaptive_ash'; did you mean 'adaptive_asha'?"),
    ({"name": "adaptive_simple"}, "searcher.name: unknown searcher 'adaptive_simple'; did you mean "
                                  "'adaptive_asha'?"),
    ({"name": "bayesian"}, "searcher.name: unknown searcher 'bayesian'; expected one of single, grid, random, "
                           "adaptive_asha, async_halving, pbt"),
    ({"smaller_is_better": "yes"}, "searcher.smaller_is_better: expected true or false, got 'yes'"),
    ({"smaller_is_better": 1}, "searcher.smaller_is_better: expected true or false, got 1"),
    ({"max_concurrent_trials": -1}, "searcher.max_concurrent_trials: expected a non-negative integer, got -1"),
    ({"max_trails": 4}, "searcher.max_trails: unknown key; did you mean 'max_trials'?"),
    ({"num_rungs": 4}, "searcher.num_rungs: not used by the random searcher (a setting of async_halving)"),
])
def test_bad_searcher(fields, message):
    s = {k: v for k, v in searcher(**fields).items() if v is not None}
    assert error(minimal(searcher=s)) == f"search.yaml: {message}"


@pytest.mark.parametrize("fields, message", [
    ({"divisor": 1}, "searcher.divisor: expected a number > 1, got 1"),
    ({"divisor": True}, "searcher.divisor: expected a number > 1, got true"),
    ({"max_rungs": 0}, "searcher.max_rungs: expected a positive integer, got 0"),
    ({"mode": "agressive"}, "searcher.mode: unknown mode 'agressive'; did you mean 'aggressive'?"),
    ({"bracket_rungs": [3, 0]}, "searcher.bracket_rungs[1]: expected a positive integer, got 0"),
    ({"bracket_rungs": 3}, "searcher.bracket_rungs: expected a list of positive integers, got 3"),
    ({"stop_once": "true"}, "searcher.stop_once: expected true or false, got 'true'"),
    ({"max_length": None}, "searcher.max_length: missing required key; the training length of a trial, e.g. "
                           "max_length: {batches: 1000} (or time_metric: batches with max_time: 1000)"),
])
def test_bad_adaptive_asha(fields, message):
    s = {k: v for k, v in searcher(name="adaptive_asha", **fields).items() if v is not None}
    assert error(minimal(searcher=s)) == f"search.yaml: {message}"


def test_single_runs_one_trial():
    s = {"name": "single", "metric": "loss", "max_length": 5}
    assert parse(minimal(searcher=s)).searcher.max_trials == 1
    assert parse(minimal(searcher={**s, "max_trials": 1})).searcher.max_trials == 1
    assert error(minimal(searcher={**s, "max_trials": 2})) == (
        "search.yaml: searcher.max_trials: expected an integer from 1 to 1, got 2")


def test_integral_floats_count_as_integers_like_json_schema():
    assert parse(minimal(searcher=searcher(max_trials=1e3))).searcher.max_trials == 1000


def test_ignored_searcher_and_resources_keys_warn_once_each():
    config = parse(minimal(
        searcher=searcher(source_trial_id=12),
        resources={"slots_per_trial": 4, "resource_pool": "a100", "priority": 10},
    ))
    assert config.slots_per_trial == 4
    assert config.warnings == (
        "search.yaml: searcher.source_trial_id: not used by hpo-slurm (trials start from scratch), ignored",
        "search.yaml: resources.resource_pool: not used by hpo-slurm (Slurm partitions are set with "
        "slurm.partition), ignored",
        "search.yaml: resources.priority: not used by hpo-slurm (use slurm.qos), ignored",
    )


# ----------------------------------------------------------------------------------------------
# Unknown keys, required keys, wrong types
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    (minimal(searchr={}), "searchr: unknown key; did you mean 'searcher'?"),
    (minimal(enviroment={}), "enviroment: unknown key; did you mean 'environment'?"),
    (minimal(frobnicate=1), "frobnicate: unknown key"),
    (minimal(slurm={"partiton": "gpu"}), "slurm.partiton: unknown key; did you mean 'partition'?"),
    (minimal(resources={"slots_per_trail": 1}), "resources.slots_per_trail: unknown key; did you mean "
                                                "'slots_per_trial'?"),
    (minimal(checkpoint_storage={"save_trial_bset": 1}), "checkpoint_storage.save_trial_bset: unknown key; did "
                                                         "you mean 'save_trial_best'?"),
    (minimal(reproducibility={"experiment_sead": 1}), "reproducibility.experiment_sead: unknown key; did you "
                                                      "mean 'experiment_seed'?"),
])
def test_unknown_keys_suggest_the_nearest_known_key(data, message):
    assert error(data) == f"search.yaml: {message}"


@pytest.mark.parametrize("data, message", [
    (minimal(searcher=None), "searcher: missing required key"),
    (minimal(entrypoint=None), "entrypoint: missing required key; the command that trains one trial, e.g. "
                               "entrypoint: python3 train.py"),
    (minimal(entrypoint=""), "entrypoint: expected a command such as 'python3 train.py', got ''"),
    (minimal(entrypoint=[]), "entrypoint: expected a command or a non-empty list of arguments, got an empty list"),
    (minimal(entrypoint=["python3", 3]), "entrypoint[1]: expected a string, got 3"),
    (minimal(entrypoint="python3 a.py\npython3 b.py"), "entrypoint: expected a command such as 'python3 "
                                                       "train.py' on one line, got 'python3 a.py\\npython3 b.py'"),
    (minimal(max_restarts=-1), "max_restarts: expected a non-negative integer, got -1"),
    (minimal(max_restarts="five"), "max_restarts: expected a non-negative integer, got 'five'"),
    (minimal(reproducibility={"experiment_seed": -1}), "reproducibility.experiment_seed: expected an integer "
                                                       "from 0 to 4294967295, got -1"),
    (minimal(resources={"slots_per_trial": True}), "resources.slots_per_trial: expected a non-negative integer, "
                                                   "got true"),
    (minimal(records_per_epoch=-5), "records_per_epoch: expected a non-negative integer, got -5"),
    (minimal(checkpoint_storage={"save_trial_latest": -1}), "checkpoint_storage.save_trial_latest: expected a "
                                                            "non-negative integer, got -1"),
    (minimal(data=[1]), "data: expected a mapping, got a list"),
    (minimal(description=["x"]), "description: expected a non-empty string, got a list"),
    (minimal(perform_initial_validation="no"), "perform_initial_validation: expected true or false, got 'no'"),
    (minimal(min_validation_period={"batches": -1}), "min_validation_period.batches: expected a non-negative "
                                                     "integer, got -1"),
    (minimal(searcher=[1]), "searcher: expected a mapping, got a list"),
    ({**minimal(), 3: "x"}, "3: expected a string key, got 3"),
])
def test_missing_keys_and_wrong_types(data, message):
    assert error(data) == f"search.yaml: {message}"


def test_checkpoint_storage_backends_warn_that_checkpoints_live_in_the_experiment_folder():
    config = parse(minimal(checkpoint_storage={"type": "shared_fs", "host_path": "/mnt", "storage_path": "ckpt",
                                               "save_trial_best": 2}))
    assert config.checkpoint_storage == CheckpointStorage(save_trial_best=2)
    assert config.warnings == ("search.yaml: checkpoint_storage: type, host_path, storage_path not used by "
                               "hpo-slurm (checkpoints live in the experiment folder), ignored",)


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "exp_1", "Exp-2.b", "_x", "9lives", "x" * 100])
def test_safe_names(name):
    assert check_name(name, "--name", "") == name
    assert parse(minimal(name=name)).name == name


@pytest.mark.parametrize("name", ["my exp", "vision transformer adaptive", ".hidden", "a/b", "../up/x", "x" * 101,
                                  "résumé – 3 ✓"])
def test_any_text_names_an_experiment_as_in_determined(name):
    """The folder gets a safe spelling (experiment.folder.folder_for); the name is kept as written."""
    assert parse(minimal(name=name)).name == name


@pytest.mark.parametrize("name, message", [
    ("", "expected the experiment's name as text, got ''"),
    ("   ", "expected the experiment's name as text, got '   '"),
    (12, "expected the experiment's name as text, got 12"),
    ("two\nlines", "expected a name without control characters (newlines, tabs), got 'two\\nlines'"),
    ("x" * 257, "expected at most 256 characters, got 257"),
])
def test_names_that_cannot_name_an_experiment(name, message):
    assert error(minimal(name=name)) == f"search.yaml: name: {message}"


def test_folder_names_stay_safe():
    with pytest.raises(ConfigError, match="^--name: expected a name"):
        check_name("my exp", "--name", "")
    assert safe_spelling("vision transformer adaptive") == "vision_transformer_adaptive"
    assert safe_spelling("../up/x") == "_up_x" and safe_spelling("..") == "experiment"
    assert is_folder_name(safe_spelling("a" * 300 + "/b")) and not is_folder_name("a b")


def test_default_name_comes_from_the_file_name(in_tmp):
    assert load_config(write(in_tmp, MNIST_CONST.replace("name: mnist_pytorch_const\n", ""), "const.yaml")).name \
        == "const"
    path = write(in_tmp, MNIST_CONST.replace("name: mnist_pytorch_const\n", ""), "my search.yaml")
    assert load_config(path).name == "my search"


# ----------------------------------------------------------------------------------------------
# The file itself
# ----------------------------------------------------------------------------------------------

def test_missing_file(in_tmp):
    assert load_error("nope.yaml") == "nope.yaml: no such file"


def test_directory(in_tmp):
    (in_tmp / "dir.yaml").mkdir()
    assert load_error("dir.yaml") == "dir.yaml: is a directory, expected a YAML file"


def test_unreadable_file(in_tmp, monkeypatch):
    import hpo_slurm.config.schema as config_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    path = write(in_tmp, MNIST_CONST)
    monkeypatch.setattr(config_module, "open", refuse, raising=False)
    assert load_error(path) == "search.yaml: cannot read the file: permission denied"


def test_not_utf8(in_tmp):
    (in_tmp / "search.yaml").write_bytes(b"name: caf\xe9\n")
    assert load_error("search.yaml") == "search.yaml: cannot read the file: not UTF-8 text"


def test_yaml_syntax_error_names_the_line(in_tmp):
    path = write(in_tmp, "name: x\nsearcher:\n  name: single\n  metric: [loss\nentrypoint: a\n")
    assert load_error(path).startswith("search.yaml: line 5, column 11: not valid YAML: ")
    path = write(in_tmp, "name: x\nentrypoint: a: b\n")
    assert load_error(path) == "search.yaml: line 2, column 14: not valid YAML: mapping values are not allowed here"


def test_duplicate_keys_are_an_error(in_tmp):
    path = write(in_tmp, "searcher: {name: single}\nentrypoint: a\nsearcher: {name: grid}\n")
    assert load_error(path) == "search.yaml: line 3, column 1: not valid YAML: duplicate key 'searcher'"


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "expected a mapping of config keys at the top level, got a list"),
    ("just a string\n", "expected a mapping of config keys at the top level, got 'just a string'"),
    ("", "the file is empty; expected a mapping of config keys"),
    ("# only a comment\n", "the file is empty; expected a mapping of config keys"),
])
def test_yaml_that_is_not_a_mapping(in_tmp, text, message):
    assert load_error(write(in_tmp, text)) == f"search.yaml: {message}"


def test_config_errors_are_user_errors_with_parts(in_tmp):
    with pytest.raises(UserError) as info:
        parse(minimal(searcher=searcher(max_trials=-3)))
    assert (info.value.source, info.value.path, info.value.detail) == (
        "search.yaml", "searcher.max_trials", "expected a positive integer, got -3")


# ----------------------------------------------------------------------------------------------
# The slurm: section
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, minutes", [
    (90, 90), ("90", 90), ("10:30", 11), ("10:00", 10), ("1:30:00", 90), ("48:00:00", 2880),
    ("00:00:01", 1), ("2-0", 2880), ("1-12:30", 2190), ("1-00:00:01", 1441), (" 1-0:0:0 ", 1440),
])
def test_slurm_time_formats(value, minutes):
    assert parse(minimal(slurm={"time": value})).slurm.time_minutes == minutes


@pytest.mark.parametrize("value, message", [
    ("1:75:00", 'expected a Slurm time limit (minutes, "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS"), '
                "got '1:75:00'"),
    ("1-25", 'expected a Slurm time limit (minutes, "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS"), '
             "got '1-25'"),
    ("2h", 'expected a Slurm time limit (minutes, "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS"), '
           "got '2h'"),
    (1.5, 'expected a Slurm time limit (minutes, "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or "D-HH:MM:SS"), '
          "got 1.5"),
    (0, "expected a time limit of at least 1 minute, got 0"),
    ("0:00", "expected a time limit of at least 1 minute, got '0:00'"),
])
def test_bad_slurm_time(value, message):
    assert error(minimal(slurm={"time": value})) == f"search.yaml: slurm.time: {message}"


def test_slurm_settings():
    config = parse(minimal(slurm={
        "partition": "gpu", "account": "proj42", "qos": "normal", "time": "4:00:00", "cpus_per_task": 8,
        "mem": "32g", "constraint": "a100&nvlink", "gpu_type": "a100_3g.20gb",
        "extra_args": {"exclusive": True, "mail-type": "END", "nice": 10},
        "setup": "module load cuda/12.1\n\nsource ~/venv/bin/activate\n",
        "signal_delay": 300, "poll_interval": 2.5,
    }))
    assert config.slurm == SlurmConfig(
        partition="gpu", account="proj42", qos="normal", time_minutes=240, cpus_per_task=8, mem="32G",
        constraint="a100&nvlink", gpu_type="a100_3g.20gb",
        extra_args=(("exclusive", ""), ("mail-type", "END"), ("nice", "10")),
        setup=("module load cuda/12.1", "source ~/venv/bin/activate"), signal_delay_s=300, poll_interval_s=2.5)


@pytest.mark.parametrize("value, mem", [("16G", "16G"), ("4000M", "4000M"), ("500K", "500K"), ("2t", "2T"),
                                        ("4000", "4000M"), (4000, "4000M"), (0, "0M")])
def test_slurm_mem(value, mem):
    assert parse(minimal(slurm={"mem": value})).slurm.mem == mem


def test_setup_as_a_list_splits_embedded_newlines():
    config = parse(minimal(slurm={"setup": ["module purge", "module load a\nmodule load b", "  "]}))
    assert config.slurm.setup == ("module purge", "module load a", "module load b")


def test_determined_sbatch_args_become_settings_and_extra_args():
    config = parse(minimal(slurm={"sbatch_args": ["--time=02:00:00", "--account proj", "--exclusive",
                                                  "--cpus-per-task=6", "--mail-type=END,FAIL"],
                                  "slots_per_node": 4, "gpu_type": "a100"}))
    assert (config.slurm.time_minutes, config.slurm.account, config.slurm.cpus_per_task) == (120, "proj", 6)
    assert config.slurm.extra_args == (("exclusive", ""), ("mail-type", "END,FAIL"))
    assert config.slurm.gpu_type == "a100"
    assert config.slurm.gpus_per_node == 4  # Determined's slots_per_node is slurm.gpus_per_node
    assert config.warnings == ()


@pytest.mark.parametrize("slurm, message", [
    ({"mem": "16 GB"}, "slurm.mem: expected a memory size such as \"16G\", \"4000M\" or an integer of megabytes, "
                       "got '16 GB'"),
    ({"mem": -1}, "slurm.mem: expected a memory size such as \"16G\", \"4000M\" or an integer of megabytes, "
                  "got -1"),
    ({"cpus_per_task": 0}, "slurm.cpus_per_task: expected a positive integer, got 0"),
    ({"partition": "gpu a100"}, "slurm.partition: expected a value without spaces, got 'gpu a100'"),
    ({"gpu_type": "a100:2"}, "slurm.gpu_type: expected a GPU type of letters, digits, '_', '-' and '.', "
                             "got 'a100:2'"),
    ({"extra_args": {"Mail_Type": "END"}}, "slurm.extra_args.Mail_Type: expected an sbatch option name of "
                                           "lowercase letters, digits and '-', got 'Mail_Type'"),
    ({"extra_args": {"comment": "a\nb"}}, "slurm.extra_args.comment: expected a string, a number or true on one "
                                          "line, got 'a\\nb'"),
    ({"extra_args": {"exclusive": False}}, "slurm.extra_args.exclusive: expected a string, a number or true, "
                                           "got false"),
    ({"extra_args": {"time": "1:00:00"}}, "slurm.extra_args.time: set slurm.time instead of an extra --time"),
    ({"extra_args": {"array": "0-9"}}, "slurm.extra_args.array: --array cannot be set here; hpo-slurm sets it "
                                       "for every job"),
    ({"extra_args": {"gres": "gpu:2"}}, "slurm.extra_args.gres: --gres=gpu:2 asks for GPUs; set "
                                        "resources.slots_per_trial (and slurm.gpu_type) instead"),
    ({"sbatch_args": ["--chdir=/scratch"]}, "slurm.sbatch_args[0]: --chdir cannot be set here; hpo-slurm sets the "
                                            "jobs' working folder (their log paths are relative to it)"),
    ({"extra_args": {"no-requeue": True}}, "slurm.extra_args.no-requeue: --no-requeue cannot be set here; preempted "
                                           "jobs must requeue to resume from their checkpoints"),
    ({"extra_args": ["--exclusive"]}, "slurm.extra_args: expected a mapping, got a list"),
    ({"sbatch_args": ["-p gpu"]}, "slurm.sbatch_args[0]: expected a long sbatch option such as "
                                  "'--mail-type=END', got '-p gpu'"),
    ({"sbatch_args": ["--time=1:00:00"], "time": 30}, "slurm.sbatch_args[0]: --time is also set by slurm.time; "
                                                       "keep one"),
    ({"sbatch_args": ["--nice=1"], "extra_args": {"nice": 2}}, "slurm.sbatch_args[0]: --nice is also set by "
                                                                "slurm.extra_args.nice; keep one"),
    ({"setup": 5}, "slurm.setup: expected a shell line or a list of shell lines, got 5"),
    ({"setup": ["ok", 5]}, "slurm.setup[1]: expected a shell line, got 5"),
    ({"signal_delay": 5}, "slurm.signal_delay: expected an integer from 10 to 65535, got 5"),
    ({"signal_delay": 600, "time": 10}, "slurm.signal_delay: expected fewer seconds than the time limit "
                                        "(600 s), got 600"),
    ({"poll_interval": 0}, "slurm.poll_interval: expected a number > 0, got 0"),
    ({"array_template": "missing.sbatch"}, "slurm.array_template: no such file: /nowhere/missing.sbatch"),
    ("gpu", "slurm: expected a mapping, got 'gpu'"),
])
def test_bad_slurm(slurm, message):
    assert error(minimal(slurm=slurm), base_dir="/nowhere") == f"search.yaml: {message}"


def test_array_template_resolves_against_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "array.sbatch").write_text("#!/bin/bash\n")
    write(tmp_path / "configs", MNIST_CONST + "slurm:\n  array_template: array.sbatch\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(os.path.join("configs", "search.yaml"))
    assert config.source == os.path.join("configs", "search.yaml")
    assert config.slurm.array_template == str(tmp_path / "configs" / "array.sbatch")


def test_config_objects_are_frozen():
    config = parse(minimal())
    with pytest.raises(Exception):
        config.name = "other"  # type: ignore[misc]
    assert copy.deepcopy(config) == config



def test_keys_a_determined_pytorch_trial_reads_are_checked_not_ignored():
    config = parse(minimal(checkpoint_policy="all", optimizations={"aggregation_frequency": 2},
                        scheduling_unit=25))
    assert config.warnings == () and config.scheduling_unit == 25
    assert config.raw["checkpoint_policy"] == "all" and config.raw["optimizations"]["aggregation_frequency"] == 2
    assert error(minimal(checkpoint_policy="sometimes")) == (
        "search.yaml: checkpoint_policy: unknown checkpoint policy 'sometimes'; expected one of best, all, none")
    assert error(minimal(optimizations={"aggregation_frequency": 0})) == (
        "search.yaml: optimizations.aggregation_frequency: expected a positive integer, got 0")
    assert error(minimal(scheduling_unit=0)) == "search.yaml: scheduling_unit: expected a positive integer, got 0"
    mixed = parse(minimal(optimizations={"mixed_precision": "O1"}))
    assert mixed.warnings == ("search.yaml: optimizations.mixed_precision: not used by hpo-slurm, ignored",)
