"""The TPE sampler's bookkeeping inside a search (searchers.samplers): what it keeps, when its model
fits, and that a snapshot restores without being changed."""

from __future__ import annotations

import json

import pytest

from hpo_slurm.config.sampler_section import SamplerConfig
from hpo_slurm.config.schema import ExperimentConfig, SearcherConfig
from hpo_slurm.config.space import Double, Nested
from hpo_slurm.core.types import Close, Create, Shutdown, Train
from hpo_slurm.searchers import make_searcher, restore_searcher
from hpo_slurm.searchers import tpe
from hpo_slurm.searchers.drain import drain

SPACE = Nested((("x", Double(0.0, 1.0)), ("y", Double(0.0, 1.0))))  # 2 searched: min_points 3 by default


def config(sampler: SamplerConfig, **searcher) -> ExperimentConfig:
    fields = dict(name="async_halving", max_trials=60, num_rungs=2, divisor=2, max_length=4, max_concurrent_trials=4)
    fields.update(searcher)
    return ExperimentConfig(source="t.yaml", name="t", entrypoint="x", hyperparameters=SPACE, seed=3,
                            searcher=SearcherConfig(metric="loss", sampler=sampler, **fields))


def run(cfg: ExperimentConfig, stop_after: int = 10**9):
    """Drive a search FIFO with a smooth metric; returns the searcher after at most ``stop_after`` validations."""
    searcher = make_searcher(cfg)
    hparams, trains, done = {}, [], []

    def handle(action):
        if isinstance(action, Create):
            hparams[action.trial_id] = action.hparams
            return searcher.on_created(action.trial_id)
        if isinstance(action, Train):
            trains.append(action)
        elif isinstance(action, Close):
            return searcher.on_closed(action.trial_id)
        elif isinstance(action, Shutdown):
            done.append(action)
        return None

    drain(searcher.initial(), handle)
    validations = 0
    while trains and not done and validations < stop_after:
        train = trains.pop(0)
        h = hparams[train.trial_id]
        drain(searcher.on_validation(train.trial_id, train.length, (h["x"] - 0.3) ** 2 + (h["y"] - 0.7) ** 2), handle)
        validations += 1
    return searcher


def test_the_model_fits_even_when_the_cap_is_below_what_a_fit_needs(monkeypatch):
    calls = []
    real = tpe.suggest_encoded
    monkeypatch.setattr(tpe, "suggest_encoded", lambda *args: calls.append(len(args[2])) or real(*args))
    searcher = run(config(SamplerConfig(name="tpe", min_points_in_model=5, max_points_in_model=6, random_fraction=0)))
    assert calls and max(calls) >= 10  # 2 x min_points results reached the model, past the cap of 6
    state = searcher.ctx.sampler.state
    assert all(len(entries) <= 10 + 1 for entries in state["results"].values())  # pruned at 1.125 x 10


def test_shorter_lengths_are_dropped_once_a_longer_one_is_modelled():
    searcher = run(config(SamplerConfig(name="tpe", min_points_in_model=2, max_points_in_model=4)))
    state = searcher.ctx.sampler.state
    assert list(state["results"]) == ["4"]  # the top rung is modelled: rung 2's results are gone
    used = {str(trial_id) for entries in state["results"].values() for _, trial_id in entries} | set(state["open"])
    assert set(state["hparams"]) == used  # nothing else is kept


def test_a_restored_sampler_leaves_its_snapshot_unchanged():
    cfg = config(SamplerConfig(name="tpe", min_points_in_model=2, max_points_in_model=4))
    searcher = run(cfg, stop_after=12)
    snapshot = json.loads(json.dumps(searcher.snapshot()))
    before = json.dumps(snapshot, sort_keys=True)
    first, second = restore_searcher(cfg, snapshot), restore_searcher(cfg, snapshot)
    trial_id = next(int(t) for t, trial in first.state["trials"].items() if trial["train"] is not None)
    length = first.state["trials"][str(trial_id)]["train"]
    assert first.on_validation(trial_id, length, 0.5) == second.on_validation(trial_id, length, 0.5)
    assert json.dumps(snapshot, sort_keys=True) == before
    assert json.dumps(first.snapshot(), sort_keys=True) == json.dumps(second.snapshot(), sort_keys=True)


@pytest.mark.parametrize("started, now", [("random", "tpe"), ("tpe", "random")])
def test_a_search_keeps_the_sampler_it_started_with(started, now):
    snapshot = json.loads(json.dumps(run(config(SamplerConfig(name=started)), stop_after=5).snapshot()))
    with pytest.raises(ValueError, match=f"started with sampler: {started}, the config asks for {now}"):
        restore_searcher(config(SamplerConfig(name=now)), snapshot)


def test_pbt_fits_its_model_on_each_round(monkeypatch):
    calls = []
    real = tpe.suggest_encoded
    monkeypatch.setattr(tpe, "suggest_encoded", lambda *args: calls.append(args[1]) or real(*args))
    pbt = dict(name="pbt", population_size=6, num_rounds=6, length_per_round=2, truncate_fraction=0.5,
               resample_probability=1.0, perturb_factor=0.2, max_trials=1, max_length=1)
    searcher = run(config(SamplerConfig(name="tpe", random_fraction=0), **pbt))
    assert calls  # explore resampled from the model
    assert len(searcher.ctx.sampler.state["results"]) <= 1  # only the latest round is kept


def test_a_resumed_driver_whose_config_changed_sampler_stops_with_one_line(tmp_path):
    import yaml

    from hpo_slurm.config.schema import load_config
    from hpo_slurm.core.errors import UserError
    from hpo_slurm.engine.searcher_log import load_searcher
    from hpo_slurm.experiment.store import Store
    from hpo_slurm.engine.simulation import Simulation, create_experiment

    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({
        "name": "switch", "entrypoint": "false",
        "hyperparameters": {"x0": {"type": "double", "minval": 0, "maxval": 1}},
        "searcher": {"name": "random", "metric": "loss", "max_trials": 8, "max_length": 4}}))
    layout, _ = create_experiment(path, tmp_path / "runs")
    simulation = Simulation(layout, "hpo_slurm.benchmarks.zero:objective", workers=2)
    simulation.run(max_ticks=3)
    simulation.close()
    config_file = layout.dir / "config.yaml"
    config_file.write_text(config_file.read_text().replace("name: random", "name: random\n  sampler: tpe"))

    store = Store.open(layout.database)
    try:
        with pytest.raises(UserError, match=r"config.yaml: the search was started with sampler: random, the config asks for tpe"):
            load_searcher(load_config(str(config_file)), store)
    finally:
        store.close()
