"""``searcher.sampler`` and ``searcher.tpe``: read with BOHB's defaults, bad values one line naming the key."""

from __future__ import annotations

import pytest

from hpo_slurm.config.sampler_section import SamplerConfig
from hpo_slurm.config.schema import parse_config
from hpo_slurm.core.errors import ConfigError

SPACE = {"lr": {"type": "log", "minval": -4, "maxval": -1}}


def config(**searcher):
    data = {"entrypoint": "python3 train.py", "hyperparameters": SPACE,
            "searcher": {"name": "random", "metric": "loss", "max_trials": 4, "max_length": 100, **searcher}}
    return parse_config(data, "search.yaml")


def error(**searcher) -> str:
    with pytest.raises(ConfigError) as info:
        config(**searcher)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_random_sampling_is_the_default():
    assert config().searcher.sampler == SamplerConfig(name="random")


def test_tpe_takes_bohb_s_defaults_and_every_option():
    assert config(sampler="tpe").searcher.sampler == SamplerConfig(
        name="tpe", top_n_percent=15.0, num_samples=64, random_fraction=1 / 3, bandwidth_factor=3.0,
        min_bandwidth=1e-3, min_std=0.1, min_points_in_model=None, max_points_in_model=512)
    options = dict(top_n_percent=20, num_samples=32, random_fraction=0, bandwidth_factor=2,
                   min_bandwidth=0.01, min_std=0, min_points_in_model=5, max_points_in_model=100)
    assert config(sampler="tpe", tpe=options).searcher.sampler == SamplerConfig(name="tpe", **options)


@pytest.mark.parametrize("name", ["adaptive_asha", "async_halving", "pbt"])
def test_every_searcher_that_samples_takes_a_sampler(name):
    extra = {"adaptive_asha": {}, "async_halving": {"num_rungs": 3},
             "pbt": {"population_size": 4, "num_rounds": 2, "length_per_round": 10,
                     "replace_function": {"truncate_fraction": 0.5},
                     "explore_function": {"resample_probability": 0.2, "perturb_factor": 0.2}}}[name]
    fields = {"name": name, "sampler": "tpe", **extra}
    if name == "pbt":
        data = {"entrypoint": "x", "hyperparameters": SPACE, "searcher": {"metric": "loss", **fields}}
    else:
        data = {"entrypoint": "x", "hyperparameters": SPACE,
                "searcher": {"metric": "loss", "max_trials": 8, "max_length": 100, **fields}}
    assert parse_config(data, "search.yaml").searcher.sampler.name == "tpe"


@pytest.mark.parametrize("fields, message", [
    ({"sampler": "bayes"}, "search.yaml: searcher.sampler: "),
    ({"sampler": "tpe", "tpe": {"top_n_percent": 0}}, "search.yaml: searcher.tpe.top_n_percent: expected"),
    ({"sampler": "tpe", "tpe": {"top_n_percent": 80}}, "search.yaml: searcher.tpe.top_n_percent: expected"),
    ({"sampler": "tpe", "tpe": {"num_samples": 0}}, "search.yaml: searcher.tpe.num_samples: expected"),
    ({"sampler": "tpe", "tpe": {"random_fraction": 1.5}}, "search.yaml: searcher.tpe.random_fraction: expected"),
    ({"sampler": "tpe", "tpe": {"bandwidth_factor": -1}}, "search.yaml: searcher.tpe.bandwidth_factor: expected"),
    ({"sampler": "tpe", "tpe": {"min_bandwidth": 0}}, "search.yaml: searcher.tpe.min_bandwidth: expected"),
    ({"sampler": "tpe", "tpe": {"min_std": -0.1}}, "search.yaml: searcher.tpe.min_std: expected"),
    ({"sampler": "tpe", "tpe": {"min_points_in_model": "many"}}, "search.yaml: searcher.tpe.min_points_in_model: expected"),
    ({"sampler": "tpe", "tpe": {"max_points_in_model": 2}}, "search.yaml: searcher.tpe.max_points_in_model: expected"),
    ({"sampler": "tpe", "tpe": {"gama": 0.2}}, "search.yaml: searcher.tpe.gama: "),
    ({"sampler": "tpe", "tpe": [1, 2]}, "search.yaml: searcher.tpe: expected a mapping"),
    ({"tpe": {"num_samples": 8}}, "search.yaml: searcher.tpe: TPE's options need `sampler: tpe`"),
])
def test_bad_sampler_settings_name_the_key(fields, message):
    assert error(**fields).startswith(message)


def test_searchers_that_do_not_sample_refuse_a_sampler():
    data = {"entrypoint": "x", "hyperparameters": {"lr": {"type": "double", "minval": 0, "maxval": 1}},
            "searcher": {"name": "single", "metric": "loss", "max_length": 10, "sampler": "tpe"}}
    with pytest.raises(ConfigError, match=r"^search.yaml: searcher.sampler: not used by the single searcher"):
        parse_config(data, "search.yaml")


def test_a_search_that_samples_uniformly_never_imports_numpy():
    import subprocess
    import sys

    code = ("import sys\n"
            "from hpo_slurm.config.schema import parse_config\n"
            "from hpo_slurm.engine.driver import Driver\n"
            "from hpo_slurm.searchers import make_searcher\n"
            "data = {'entrypoint': 'x', 'hyperparameters': {'lr': {'type': 'log', 'minval': -4, 'maxval': -1}},\n"
            "        'searcher': {'name': 'adaptive_asha', 'metric': 'loss', 'max_trials': 8, 'max_length': 16}}\n"
            "searcher = make_searcher(parse_config(data, 's.yaml'))\n"
            "searcher.initial()\n"
            "print('numpy' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_pbt_with_tpe_needs_a_population_its_model_can_fit_on():
    data = {"entrypoint": "x", "hyperparameters": SPACE,
            "searcher": {"name": "pbt", "metric": "loss", "sampler": "tpe", "population_size": 3, "num_rounds": 2,
                         "length_per_round": 10, "replace_function": {"truncate_fraction": 0.5},
                         "explore_function": {"resample_probability": 0.2, "perturb_factor": 0.2}}}
    with pytest.raises(ConfigError, match=r"^search.yaml: searcher.sampler: tpe fits its model on one round's "
                                          r"results: population_size 3 is below 2 x min_points_in_model \(2"):
        parse_config(data, "search.yaml")
    data["searcher"]["population_size"] = 4
    assert parse_config(data, "search.yaml").searcher.sampler.name == "tpe"
