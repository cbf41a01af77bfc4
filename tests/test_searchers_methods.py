"""Each search method against Determined's semantics, and the wrapper's protocol guards."""

from __future__ import annotations

import json
import math
from collections import deque
from typing import Any, Callable, Dict

import pytest

from hpo_slurm.config.schema import ExperimentConfig, SearcherConfig
from hpo_slurm.searchers.drain import drain
from hpo_slurm.searchers import make_searcher, restore_searcher
from hpo_slurm.searchers.adaptive_asha import bracket_rungs, integer_log, layout, max_rungs
from hpo_slurm.searchers.asha import rung_lengths
from hpo_slurm.searchers.base import WORST, signed_metric
from hpo_slurm.config.space import Categorical, Double, Int, Nested
from hpo_slurm.core.types import Close, Create, ExitReason, Shutdown, Train

SPACE = Nested((("lr", Double(0.001, 0.1)), ("layers", Int(1, 8)), ("act", Categorical(("relu", "gelu")))))


def config(space: Nested = SPACE, **searcher: Any) -> ExperimentConfig:
    searcher.setdefault("metric", "loss")
    return ExperimentConfig(
        source="t.yaml", name="t", entrypoint="x", hyperparameters=space, searcher=SearcherConfig(**searcher)
    )


def run(cfg: ExperimentConfig, outcome: Callable[[int, int], Any]) -> Dict[str, Any]:
    """A FIFO driver. ``outcome(trial, length)`` is a metric, or an ExitReason for an early exit."""
    searcher = make_searcher(cfg)
    final, creates, closes, shutdowns = {}, [], [], []
    trains = deque()

    def handle(action):
        if isinstance(action, Create):
            creates.append(action)
            final[action.trial_id] = 0
            return searcher.on_created(action.trial_id)
        if isinstance(action, Train):
            trains.append(action)
        elif isinstance(action, Close):
            closes.append(action.trial_id)
            return searcher.on_closed(action.trial_id)
        else:
            shutdowns.append(action)
        return None

    drain(searcher.initial(), handle)
    while not shutdowns:
        train = trains.popleft()
        result = outcome(train.trial_id, train.length)
        if isinstance(result, ExitReason):
            drain(searcher.on_early_exit(train.trial_id, result) + searcher.on_closed(train.trial_id), handle)
        else:
            final[train.trial_id] = train.length
            drain(searcher.on_validation(train.trial_id, train.length, result), handle)
    return {"final": final, "creates": creates, "closes": closes, "shutdowns": shutdowns, "searcher": searcher}


# Layouts: Determined's adaptive_asha.go


def test_determined_worked_example_layout():
    cfg = config(name="adaptive_asha", max_trials=100, max_length=1000, divisor=4, max_rungs=5)
    assert layout(cfg.searcher) == [
        {"num_rungs": 4, "max_trials": 70, "max_concurrent_trials": 6},
        {"num_rungs": 3, "max_trials": 22, "max_concurrent_trials": 5},
        {"num_rungs": 2, "max_trials": 8, "max_concurrent_trials": 5},
    ]
    assert [b["rung_lengths"] for b in make_searcher(cfg).brackets()] == [[15, 62, 250, 1000], [62, 250, 1000], [250, 1000]]


def test_determined_worked_example_plan():
    cfg = config(name="adaptive_asha", max_trials=100, max_length=1000, divisor=4, max_rungs=5)
    result = run(cfg, lambda trial, length: 1.0)
    ends: Dict[int, int] = {}
    for length in result["final"].values():
        ends[length] = ends.get(length, 0) + 1
    assert ends == {15: 53, 62: 30, 250: 13, 1000: 4}
    assert sum(result["final"].values()) == 9905
    assert result["shutdowns"] == [Shutdown(failure=False)]


def test_a_bracket_done_creating_lends_its_slots_so_no_worker_idles():
    # Determined's example layout: 70, 22 and 8 trials at 6, 5 and 5 at once. The 8-trial bracket has
    # created all its trials after its first 3 finish; its slots go to the brackets still creating.
    cfg = config(name="adaptive_asha", max_trials=100, max_length=1000, divisor=4, max_rungs=5,
                 max_concurrent_trials=16)
    searcher = make_searcher(cfg)
    tournament = searcher.method
    shares = [b["max_concurrent_trials"] for b in layout(cfg.searcher)]
    metric = {}
    pending, training = deque(searcher.initial()), deque()
    most_of_bracket = [0] * len(shares)
    idle_while_creating = 0
    while True:
        while pending:
            action = pending.popleft()
            if isinstance(action, Create):
                metric[action.trial_id] = (action.trial_id * 7919 % 101) / 101
                pending.extend(searcher.on_created(action.trial_id))
            elif isinstance(action, Train):
                training.append(action)
            elif isinstance(action, Close):
                pending.extend(searcher.on_closed(action.trial_id))
        owners = [tournament.state["owner"][str(t.trial_id)] for t in training]
        for index in range(len(shares)):
            most_of_bracket[index] = max(most_of_bracket[index], owners.count(index))
        assert len(training) <= sum(shares)
        still_creating = any(m._valid_created() < m.max_trials for m in tournament.methods)
        idle_while_creating += still_creating and len(training) < sum(shares)
        if not training:
            break
        done = training.popleft()
        pending.extend(searcher.on_validation(done.trial_id, done.length, metric[done.trial_id]))
    assert idle_while_creating == 0
    assert most_of_bracket[0] > shares[0]  # the first bracket trained more at once than its share
    assert len(metric) == 100


@pytest.mark.parametrize("mode, rungs, trials, concurrent", [
    ("aggressive", [4], [100], [16]),
    ("standard", [4, 3, 2], [70, 22, 8], [6, 5, 5]),
    ("conservative", [4, 3, 2, 1], [67, 21, 8, 4], [4, 4, 4, 4]),
])
def test_bracket_layout_per_mode(mode, rungs, trials, concurrent):
    cfg = config(name="adaptive_asha", max_trials=100, max_length=1000, divisor=4, max_rungs=5, mode=mode)
    brackets = layout(cfg.searcher)
    assert [b["num_rungs"] for b in brackets] == rungs
    assert [b["max_trials"] for b in brackets] == trials
    assert [b["max_concurrent_trials"] for b in brackets] == concurrent


def test_standard_mode_keeps_the_upper_half_of_the_rungs():
    for top, expected in [(1, [1]), (2, [2, 1]), (3, [3, 2]), (4, [4, 3, 2]), (5, [5, 4, 3]), (6, [6, 5, 4, 3])]:
        cfg = config(name="adaptive_asha", max_trials=10**6, max_length=10**6, divisor=2, max_rungs=top)
        assert bracket_rungs(cfg.searcher) == expected


def test_bracket_rungs_override_and_concurrency_rules():
    cfg = config(name="adaptive_asha", max_trials=100, max_length=1000, divisor=4, bracket_rungs=(2, 4),
                 max_concurrent_trials=0)
    brackets = layout(cfg.searcher)
    assert [b["num_rungs"] for b in brackets] == [4, 2]
    # No cap: every bracket gets max(trials of the last bracket, int(divisor)).
    assert {b["max_concurrent_trials"] for b in brackets} == {brackets[-1]["max_trials"]}
    small = config(name="adaptive_asha", max_trials=100, max_length=1000, divisor=4, max_concurrent_trials=2)
    assert [b["max_concurrent_trials"] for b in layout(small.searcher)] == [1, 1, 1]  # at least one each


def test_integer_log_is_exact_where_float_log_is_not():
    assert math.log(1000) / math.log(10) < 3
    assert integer_log(1000, 10) == 3
    assert integer_log(999, 10) == 2
    assert integer_log(1, 4) == 0
    assert integer_log(1024, 4) == 5
    cfg = config(name="adaptive_asha", max_trials=1000, max_length=1000, divisor=10, max_rungs=5)
    assert max_rungs(cfg.searcher) == 4


def test_rung_lengths():
    assert rung_lengths(1000, 4, 4) == [15, 62, 250, 1000]
    assert rung_lengths(90, 3, 3) == [10, 30, 90]
    assert rung_lengths(4, 4, 3) == [1, 1, 4]


# async_halving: Determined's asha_test.go cases


@pytest.mark.parametrize("smaller_is_better", [True, False])
def test_asha_promotes_the_best(smaller_is_better):
    cfg = config(name="async_halving", max_trials=12, num_rungs=3, divisor=3, max_length=90,
                 max_concurrent_trials=3, smaller_is_better=smaller_is_better)
    sign = 1 if smaller_is_better else -1
    result = run(cfg, lambda trial, length: sign * 0.01 * trial)
    assert result["final"] == {1: 90, 2: 30, 3: 30, 4: 30, **{t: 10 for t in range(5, 13)}}


def test_asha_early_exit_counts_as_worst():
    cfg = config(name="async_halving", max_trials=12, num_rungs=3, divisor=3, max_length=90, max_concurrent_trials=3)
    result = run(cfg, lambda trial, length: ExitReason.ERRORED if (trial, length) == (3, 30) else 0.01 * trial)
    assert result["final"] == {1: 90, 2: 30, 3: 10, 4: 30, **{t: 10 for t in range(5, 13)}}
    assert 3 not in result["closes"]  # an early-exited trial gets no Close


def test_asha_constant_metric_matches_determined():
    cfg = config(name="async_halving", max_trials=12, num_rungs=3, divisor=3, max_length=90)
    result = run(cfg, lambda trial, length: 1.0)
    assert sorted(result["final"].values()) == [10] * 8 + [30] * 3 + [90]


def start(cfg):
    searcher = make_searcher(cfg)
    actions = searcher.initial()
    for action in actions:
        if isinstance(action, Create):
            searcher.on_created(action.trial_id)
    return searcher, actions


def created(searcher, actions):
    for action in actions:
        if isinstance(action, Create):
            searcher.on_created(action.trial_id)
    return actions


def test_paused_trial_is_promoted_later_with_a_train_to_the_next_rung():
    cfg = config(name="async_halving", max_trials=4, num_rungs=2, divisor=2, max_length=10, max_concurrent_trials=1)
    searcher, actions = start(cfg)
    assert actions[1:] == [Train(1, 5)]
    actions = created(searcher, searcher.on_validation(1, 5, 1.0))  # alone in the rung: paused
    assert [type(a) for a in actions] == [Create, Train] and actions[1] == Train(2, 5)
    assert searcher.on_validation(2, 5, 2.0) == [Train(1, 10)]  # a promotion slot opened: the paused best goes up


def test_promoted_early_exited_trial_counts_as_worst_one_rung_up():
    cfg = config(name="async_halving", max_trials=4, num_rungs=2, divisor=2, max_length=10, max_concurrent_trials=1)
    searcher, _ = start(cfg)
    created(searcher, searcher.on_validation(1, 5, 1.0))
    assert searcher.on_early_exit(1, ExitReason.USER_CANCELED) == []  # stopped while paused
    assert searcher.on_closed(1) == []
    actions = searcher.on_validation(2, 5, 2.0)
    assert actions[0].trial_id == 3 and actions[1] == Train(3, 5)  # trial 1's slot went to "worst", no Train
    assert searcher.method.state["rungs"][1]["metrics"] == [[1, WORST, False]]


def test_stop_once_closes_a_trial_that_is_not_kept_at_once():
    cfg = config(name="async_halving", max_trials=6, num_rungs=3, divisor=3, max_length=90,
                 max_concurrent_trials=1, stop_once=True)
    searcher, _ = start(cfg)
    assert searcher.on_validation(1, 10, 1.0) == [Train(1, 30)]  # best so far: continues
    actions = created(searcher, searcher.on_validation(1, 30, 1.0))
    assert actions == [Train(1, 90)]
    actions = created(searcher, searcher.on_validation(1, 90, 1.0))
    assert actions[0] == Close(1) and isinstance(actions[1], Create)
    searcher.on_closed(1)
    actions = created(searcher, searcher.on_validation(2, 10, 5.0))  # worse than trial 1: closed at once
    assert actions[0] == Close(2) and isinstance(actions[1], Create) and actions[2] == Train(3, 10)


def test_equal_rung_lengths_carry_the_metric_up_without_training():
    cfg = config(name="async_halving", max_trials=4, num_rungs=3, divisor=2, max_length=2, max_concurrent_trials=1)
    searcher, actions = start(cfg)
    assert searcher.brackets()[0]["rung_lengths"] == [1, 1, 2]
    created(searcher, searcher.on_validation(1, 1, 1.0))  # paused
    actions = created(searcher, searcher.on_validation(2, 1, 0.5))  # promoted to rung 1 (length 1 too)...
    assert actions[1:] == [Train(3, 1)]  # ...so it reports there at once, with the same metric
    assert searcher.method.state["rungs"][1]["metrics"] == [[2, 0.5, False]]
    created(searcher, searcher.on_validation(3, 1, 0.7))
    # Best at rung 0 and at rung 1; every trial has reported, so the rest close out.
    assert searcher.on_validation(4, 1, 0.1) == [Train(4, 2), Close(3), Close(1), Close(2)]


def test_asha_invalid_hp_is_replaced():
    cfg = config(name="async_halving", max_trials=3, num_rungs=2, divisor=3, max_length=9, max_concurrent_trials=1)
    result = run(cfg, lambda trial, length: ExitReason.INVALID_HP if trial == 1 else 1.0)
    assert len(result["creates"]) == 4 and result["final"][1] == 0
    assert result["shutdowns"] == [Shutdown(failure=False)]


# random, single, grid


def test_random_respects_the_cap_and_replaces_invalid_trials():
    cfg = config(name="random", max_trials=5, max_concurrent_trials=2, max_length=7)
    searcher, actions = start(cfg)
    assert [a for a in actions if isinstance(a, Train)] == [Train(1, 7), Train(2, 7)]
    result = run(cfg, lambda trial, length: ExitReason.INVALID_HP if trial == 2 else 0.3)
    assert len(result["creates"]) == 6
    assert sorted(t for t, length in result["final"].items() if length == 7) == [1, 3, 4, 5, 6]


def test_single_trains_one_trial():
    result = run(config(name="single", max_length=100), lambda trial, length: 0.1)
    assert result["final"] == {1: 100} and result["closes"] == [1]
    assert result["shutdowns"] == [Shutdown(failure=False)]


def test_grid_counts_and_rounding():
    space = Nested((("a", Int(1, 4, count=3)), ("b", Int(0, 1, count=5)), ("c", Categorical(("x", "y")))))
    result = run(config(space, name="grid", max_length=3, max_concurrent_trials=2), lambda trial, length: 1.0)
    points = [create.hparams for create in result["creates"]]
    assert len(points) == 3 * 2 * 2
    assert sorted({p["a"] for p in points}) == [1, 3, 4]  # 2.5 rounds half away from zero, as Go
    assert sorted({p["b"] for p in points}) == [0, 1]  # count clamped to the integers in range
    assert points[0] == {"a": 1, "b": 0, "c": "x"} and points[1] == {"a": 1, "b": 0, "c": "y"}
    assert set(result["final"].values()) == {3}


# pbt


def pbt_config(**overrides):
    settings = dict(name="pbt", population_size=6, num_rounds=4, length_per_round=10, truncate_fraction=0.34,
                    resample_probability=0.2, perturb_factor=0.2)
    settings.update(overrides)
    return config(**settings)


def test_pbt_round_replaces_the_worst_with_copies_of_the_best():
    searcher, actions = start(pbt_config())
    assert [a for a in actions if isinstance(a, Train)] == [Train(t, 10) for t in range(1, 7)]
    hparams = {a.trial_id: a.hparams for a in actions if isinstance(a, Create)}
    for trial in range(1, 6):
        assert searcher.on_validation(trial, 10, float(trial)) == []
    actions = searcher.on_validation(6, 10, 6.0)
    assert actions[:2] == [Close(5), Close(6)]
    assert [(a.trial_id, a.parent) for a in actions if isinstance(a, Create)] == [(7, 1), (8, 2)]
    assert actions[2:4] == [actions[2], Train(7, 20)] and actions[4:6] == [actions[4], Train(8, 20)]
    assert actions[6:] == [Train(t, 20) for t in range(1, 5)]
    for create in (actions[2], actions[4]):
        assert create.hparams != hparams[create.parent]
        assert 0.001 <= create.hparams["lr"] <= 0.1 and 1 <= create.hparams["layers"] <= 8


def test_pbt_replacement_counts_and_parent_links():
    result = run(pbt_config(), lambda trial, length: float(trial % 5))
    creates = result["creates"]
    assert len(creates) == 6 + 3 * 2
    children = [c for c in creates if c.parent is not None]
    assert len(children) == 6 and all(c.parent < c.trial_id for c in children)
    assert sorted(result["final"].values()).count(40) == 6  # the final population trains to num_rounds rounds
    assert result["shutdowns"] == [Shutdown(failure=False)]


def test_pbt_early_exit_counts_as_worst_and_is_never_copied():
    result = run(pbt_config(), lambda trial, length: ExitReason.ERRORED if trial == 1 else float(trial))
    assert all(c.parent != 1 for c in result["creates"])
    assert 1 not in result["closes"]


# Metrics


def test_signed_metric():
    assert signed_metric(0.5, True) == 0.5
    assert signed_metric(0.5, False) == -0.5
    for bad in (float("nan"), float("inf"), float("-inf"), None, "x"):
        assert signed_metric(bad, True) == WORST
        assert signed_metric(bad, False) == WORST


# The wrapper's protocol guards


def test_protocol_violations_raise_value_errors():
    cfg = config(name="random", max_trials=2, max_concurrent_trials=1, max_length=5)
    searcher = make_searcher(cfg)
    searcher.initial()
    with pytest.raises(ValueError, match="already called"):
        searcher.initial()
    with pytest.raises(ValueError, match="on_created first"):
        searcher.on_validation(1, 5, 0.1)
    searcher.on_created(1)
    with pytest.raises(ValueError, match="unknown trial 9"):
        searcher.on_validation(9, 5, 0.1)
    with pytest.raises(ValueError, match="Train asks for 5"):
        searcher.on_validation(1, 4, 0.1)
    with pytest.raises(ValueError, match="without a Close"):
        searcher.on_closed(1)
    assert searcher.on_validation(1, 5, 0.1) == [Close(1)]
    with pytest.raises(ValueError, match="is closed"):
        searcher.on_validation(1, 5, 0.1)
    assert searcher.on_early_exit(1, ExitReason.ERRORED) == []  # after Close: ignored
    searcher.on_closed(1)
    with pytest.raises(ValueError, match="closed twice"):
        searcher.on_closed(1)
    with pytest.raises(ValueError, match="after it was closed"):
        searcher.on_early_exit(1, ExitReason.ERRORED)


def test_restore_checks_the_searcher_name():
    searcher = make_searcher(config(name="random", max_trials=2))
    searcher.initial()
    with pytest.raises(ValueError, match="'random' search"):
        restore_searcher(config(name="grid"), json.loads(json.dumps(searcher.snapshot())))


def test_shutdown_once_after_the_last_close():
    searcher, _ = start(config(name="single", max_length=10))
    assert searcher.on_validation(1, 10, 0.2) == [Close(1)]
    assert not searcher.is_shutdown
    assert searcher.on_closed(1) == [Shutdown(failure=False)]
    assert searcher.is_shutdown and searcher.progress() == 1.0


@pytest.mark.parametrize("searcher", [
    dict(name="adaptive_asha", max_trials=16, max_length=64, divisor=4, max_concurrent_trials=4),
    dict(name="async_halving", max_trials=5, num_rungs=3, max_length=64, divisor=4, max_concurrent_trials=2),
    dict(name="adaptive_asha", max_trials=7, max_length=1000, divisor=3, mode="conservative"),
])
def test_every_bracket_trains_a_trial_to_max_length_even_when_too_small_to_promote(searcher):
    cfg = config(**searcher)
    result = run(cfg, lambda trial, length: 1.0 / trial)
    brackets = result["searcher"].brackets() or [{}]
    reached = [t for t, length in result["final"].items() if length == cfg.searcher.max_length]
    assert len(reached) >= len(brackets)
    assert len(result["shutdowns"]) == 1 and len(result["closes"]) == len(result["creates"])
