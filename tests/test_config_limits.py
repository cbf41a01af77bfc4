"""Configs whose values JSON cannot hold, or whose numbers overflow or never finish in the searchers,
are refused by ``hpo-slurm preview`` with one line naming the file and the key, exit status 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hpo_slurm.cli import cli
from hpo_slurm.config.schema import load_config, parse_config
from hpo_slurm.config.checks import MAX_TRIALS

HEAD = "entrypoint: python3 train.py\n"
RANDOM = "searcher: {name: random, metric: loss, max_trials: 4, max_length: 100}\n"
ONE_HP = "hyperparameters: {x: 1}\n"
BIG = "1" + "0" * 400  # an integer literal far past the largest float


def preview(tmp_path, monkeypatch, text: str):
    """``hpo-slurm preview search.yaml`` on ``text``, run in tmp_path."""
    (tmp_path / "search.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(cli, ["preview", "search.yaml"])


def refused(tmp_path, monkeypatch, text: str) -> str:
    """The one-line error of a refused config, without the ``hpo-slurm: search.yaml: `` prefix."""
    result = preview(tmp_path, monkeypatch, text)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and result.stdout == ""
    line = result.stderr
    assert line.count("\n") == 1 and line.startswith("hpo-slurm: search.yaml: "), line
    return line[len("hpo-slurm: search.yaml: "):-1]


JSON = "expected a JSON value (a string, number, true, false, null, list or mapping), got "


@pytest.mark.parametrize("text, message", [
    ("hyperparameters:\n  tags: !!set {a, b}\n" + RANDOM,
     "hyperparameters.tags: " + JSON + "a set (!!set); write a list instead"),
    ("hyperparameters:\n  when: {type: categorical, vals: [!!timestamp 2020-01-01, b]}\n" + RANDOM,
     "hyperparameters.when.vals[0]: " + JSON + "a timestamp (2020-01-01); quote it to pass it as a string"),
    ("hyperparameters:\n  x: {type: const, val: !!binary aGVsbG8=}\n" + RANDOM,
     "hyperparameters.x.val: " + JSON + "binary data (!!binary); drop the !!binary tag to pass the text as a "
     "string"),
    ("hyperparameters:\n  opt: {sgd: {x: {type: const, val: {1: a, '1': c}}}}\n" + RANDOM,
     "hyperparameters.opt.sgd.x.val.1: keys 1 and '1' are the same key in JSON"),
    ("hyperparameters:\n  x: {type: categorical, vals: [1, .nan]}\n" + RANDOM,
     "hyperparameters.x.vals[1]: expected a finite number, got nan; JSON has no NaN or infinity (quote it to "
     "pass it as a string)"),
    ("hyperparameters:\n  x: &a [1, *a]\n" + RANDOM,
     "hyperparameters.x[1]: expected a JSON value, got a YAML alias to a value that contains it (a cycle)"),
    (ONE_HP + "data:\n  start: !!timestamp 2020-01-01 10:30:00\n" + RANDOM,
     "data.start: " + JSON + "a timestamp (2020-01-01T10:30:00); quote it to pass it as a string"),
    (ONE_HP + "data:\n  paths: [a, {clip: -.inf}]\n" + RANDOM,
     "data.paths[1].clip: expected a finite number, got -inf; JSON has no NaN or infinity (quote it to pass it "
     "as a string)"),
    (ONE_HP + "data:\n  order: !!omap [a: 1, b: 2]\n" + RANDOM,
     "data.order[0]: " + JSON + "a pair (!!omap or !!pairs); write a mapping instead"),
    (ONE_HP + "data: &d\n  self: *d\n" + RANDOM,
     "data.self: expected a JSON value, got a YAML alias to a value that contains it (a cycle)"),
], ids=["set", "timestamp", "binary", "same-key", "nan", "hp-cycle", "data-timestamp", "data-inf", "omap",
        "data-cycle"])
def test_values_json_cannot_hold_are_refused(tmp_path, monkeypatch, text, message):
    assert refused(tmp_path, monkeypatch, HEAD + text) == message


def test_number_and_boolean_keys_become_the_strings_json_writes(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(HEAD + ONE_HP + RANDOM + "data:\n  class_weights: {0: 1.0, 2: 2.5, true: 3, null: 4, 0.5: 5}\n")
    config = load_config(str(path))
    assert config.data["class_weights"] == {"0": 1.0, "2": 2.5, "true": 3, "null": 4, "0.5": 5}


def test_aliases_that_expand_past_a_million_values_are_refused(tmp_path, monkeypatch):
    lines = ["  a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = HEAD + ONE_HP + RANDOM + "data:\n" + "\n".join(lines) + "\n"
    assert refused(tmp_path, monkeypatch, text) == (
        "data: expected at most 1,000,000 values, got more (each YAML alias counts as a copy of its anchor)")


def test_json_values_and_unquoted_dates_load(tmp_path, monkeypatch):
    text = HEAD + RANDOM + """\
hyperparameters:
  day: 2020-01-01
  opt: {type: categorical, vals: [{name: adam, betas: [0.9, 0.99]}, null, true, "2020-01-01"]}
  big: 100000000000000000000000
data: {shards: [1, 2.5, "x", {deep: [null]}], start: 2020-01-01}
"""
    result = preview(tmp_path, monkeypatch, text)
    assert result.exit_code == 0, result.output


ASHA = "searcher: {{name: async_halving, metric: loss, max_trials: 4, max_length: 100, {}}}\n"
ADAPTIVE = "searcher: {{name: adaptive_asha, metric: loss, max_trials: 4, max_length: 100, {}}}\n"
PBT = ("searcher: {{name: pbt, metric: loss, population_size: 4, num_rounds: {}, length_per_round: 2, "
       "replace_function: {{truncate_fraction: {}}}, explore_function: {{resample_probability: 0.2, "
       "perturb_factor: 0.2}}}}\n")


@pytest.mark.parametrize("text, message", [
    ("hyperparameters: {lr: {type: log, minval: -4, maxval: 400}}\n" + RANDOM,
     "hyperparameters.lr.maxval: expected base ** maxval from 1e-300 to 1e300, got 10 ** 400"),
    ("hyperparameters: {lr: {type: log, minval: -2000, maxval: 1, base: 0.5}}\n" + RANDOM,
     "hyperparameters.lr.minval: expected base ** minval from 1e-300 to 1e300, got 0.5 ** -2000"),
    (f"hyperparameters: {{lr: {{type: log, minval: 0, maxval: 1, base: {BIG}}}}}\n" + RANDOM,
     "hyperparameters.lr.base: expected a number > 0, got an integer of 401 digits"),
    (f"hyperparameters: {{x: {{type: double, minval: 0, maxval: {BIG}}}}}\n" + RANDOM,
     "hyperparameters.x.maxval: expected a number, got an integer of 401 digits"),
    ("hyperparameters: {x: {type: double, minval: -1.7e308, maxval: 1.7e308}}\n" + RANDOM,
     "hyperparameters.x.maxval: expected maxval - minval to be a finite float, got 1.7e+308 - -1.7e+308"),
    (f"hyperparameters: {{n: {{type: int, minval: 0, maxval: {BIG}, count: 3}}}}\n"
     "searcher: {name: grid, metric: loss, max_length: 100}\n",
     "hyperparameters.n.maxval: expected an integer from -9007199254740992 to 9007199254740992, got an "
     "integer of 401 digits"),
    (ONE_HP + ASHA.format("num_rungs: 2000"), "searcher.num_rungs: expected at most 64 rungs, got 2000"),
    (ONE_HP + ASHA.format("num_rungs: 3, divisor: 1e200"),
     "searcher.num_rungs: expected divisor ** (3 - 1) to be at most 1e300, got 1e+200 ** 2; lower divisor or "
     "the rungs"),
    (ONE_HP + ASHA.format(f"num_rungs: 3, divisor: {BIG}"),
     "searcher.divisor: expected a number > 1, got an integer of 401 digits"),
    (ONE_HP + ADAPTIVE.format("bracket_rungs: [3, 2000]"),
     "searcher.bracket_rungs[1]: expected at most 64 rungs, got 2000"),
    (ONE_HP + ADAPTIVE.format("max_rungs: 1000"), "searcher.max_rungs: expected at most 64 rungs, got 1000"),
    (ONE_HP + ADAPTIVE.format(f"max_length: {BIG}").replace("max_length: 100, ", ""),
     "searcher.max_length: expected at most 1,000,000,000,000,000 batches, got an integer of 401 digits"),
    (ONE_HP + PBT.format(2, BIG),
     "searcher.replace_function.truncate_fraction: expected a number from 0 to 0.5, got an integer of 401 "
     "digits"),
    (ONE_HP + RANDOM + f"slurm: {{poll_interval: {BIG}}}\n",
     "slurm.poll_interval: expected a number > 0, got an integer of 401 digits"),
    (ONE_HP + RANDOM + f"slurm: {{time: {BIG}}}\n",
     "slurm.time: expected a time limit of at most 2,147,483,647 minutes, got an integer of 401 digits"),
    (ONE_HP + RANDOM + "slurm: {cpus_per_task: '\u00b2'}\n",
     "slurm.cpus_per_task: expected a positive integer, got '\u00b2'"),
    (ONE_HP + RANDOM + f"min_validation_period: {{records: {BIG}}}\n",
     "min_validation_period.records: expected at most 1,000,000,000,000,000 records, got an integer of 401 "
     "digits"),
], ids=["log-max", "log-min", "log-base", "double-int", "double-span", "int-bound", "num-rungs", "divisor-power",
        "divisor-int", "bracket-rungs", "max-rungs", "max-length", "truncate", "poll", "time", "cpus", "period"])
def test_numbers_that_overflow_are_refused(tmp_path, monkeypatch, text, message):
    assert refused(tmp_path, monkeypatch, HEAD + text) == message


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text, message", [
    # the grid searcher builds every point up front
    ("hyperparameters:\n  a: {type: double, minval: 0, maxval: 1, count: 100000}\n"
     "  b: {type: int, minval: 0, maxval: 1000000000, count: 100000}\n"
     "searcher: {name: grid, metric: loss, max_length: 100}\n",
     "searcher: grid search over 10,000,000,000 points (one trial each); expected at most 10,000,000: lower "
     "the hyperparameters' counts or categorical vals"),
    ("hyperparameters:\n" + "".join(f"  h{i}: {{type: categorical, vals: [a, b, c]}}\n" for i in range(60))
     + "searcher: {name: grid, metric: loss, max_length: 100}\n",
     "searcher: grid search over 4.2e+28 points (one trial each); expected at most 10,000,000: lower the "
     "hyperparameters' counts or categorical vals"),
    # preview simulates every trial; adaptive_asha counts rungs one power of divisor at a time
    (ONE_HP + RANDOM.replace("max_trials: 4", "max_trials: 1000000000000"),
     "searcher.max_trials: expected at most 10,000,000 trials, got 1000000000000"),
    (ONE_HP + ADAPTIVE.format("divisor: 1.00000001").replace("max_length: 100", "max_length: 1000000000000"),
     "searcher.divisor: expected a number >= 1.001, got 1.00000001"),
    (ONE_HP + PBT.format(10**15, 0.25),
     "searcher.num_rounds: expected at most 1,000,000,000,000,000 batches (num_rounds x length_per_round, the "
     "longest a trial trains), got 2000000000000000"),
    (ONE_HP + PBT.format(10**9, 0.25).replace("population_size: 4", "population_size: 40"),
     "searcher.num_rounds: expected at most 10,000,000 trials (population_size + (num_rounds - 1) x the "
     "trials replaced each round), got 10000000030"),
], ids=["grid", "grid-categorical", "max-trials", "divisor-near-1", "pbt-length", "pbt-trials"])
def test_searches_too_large_to_finish_are_refused(tmp_path, monkeypatch, text, message):
    assert refused(tmp_path, monkeypatch, HEAD + text) == message


def test_yaml_the_loader_cannot_build_is_refused(tmp_path, monkeypatch):
    deep = HEAD + ONE_HP + RANDOM + "data: {a: " + "[" * 3000 + "]" * 3000 + "}\n"
    assert refused(tmp_path, monkeypatch, deep) == "cannot read the file: its YAML nests too deeply"
    huge = HEAD + RANDOM + "hyperparameters: {x: " + "9" * 5000 + "}\n"
    assert refused(tmp_path, monkeypatch, huge) == (
        "line 3, column 22: not valid YAML: an integer of 5000 digits is too long")
    nested = HEAD + ONE_HP + RANDOM + "data: {a: " + "[" * 150 + "]" * 150 + "}\n"
    assert refused(tmp_path, monkeypatch, nested) == (
        "data.a" + "[0]" * 99 + ": expected a value nested at most 100 levels deep")
    hps = HEAD + RANDOM + "hyperparameters: " + "{a: " * 330 + "1" + "}" * 330 + "\n"
    assert refused(tmp_path, monkeypatch, hps) == (
        "hyperparameters" + ".a" * 100 + ": expected hyperparameters nested at most 100 levels deep")


def test_limits_themselves_are_accepted():
    def config(hps, **searcher):
        return parse_config({"entrypoint": "x", "hyperparameters": hps,
                             "searcher": {"metric": "loss", "max_length": 100, **searcher}}, "search.yaml")

    log = {"lr": {"type": "log", "minval": -300, "maxval": 300}, "n": {"type": "int", "minval": -2**53,
                                                                        "maxval": 2**53}}
    assert config(log, name="random", max_trials=MAX_TRIALS).searcher.max_trials == MAX_TRIALS
    grid = {"a": {"type": "double", "minval": 0, "maxval": 1, "count": 10_000}, "b": {"type": "categorical",
                                                                                        "vals": list(range(1000))}}
    assert config(grid, name="grid").searcher.max_trials == MAX_TRIALS
    asha = config({}, name="async_halving", max_trials=4, num_rungs=64, divisor=2).searcher
    assert (asha.num_rungs, asha.divisor) == (64, 2.0)
    adaptive = config({}, name="adaptive_asha", max_trials=4, max_rungs=64, bracket_rungs=[64, 2], divisor=1.001)
    assert adaptive.searcher.bracket_rungs == (64, 2)
