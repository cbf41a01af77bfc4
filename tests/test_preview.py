"""``preview``: the plan comes from running the real searcher on a synthetic metric (constant; seeded
random draws for ``stop_once``)."""

from __future__ import annotations

import json
import re

import pytest

from hpo_slurm.config.schema import ExperimentConfig, SearcherConfig
from hpo_slurm.reporting.plan_tables import render_plan
from hpo_slurm.searchers.preview import build_plan, simulate
from hpo_slurm.searchers import make_searcher
from hpo_slurm.config.space import Double, Int, Nested

SPACE = Nested((("lr", Double(0.001, 0.1)), ("layers", Int(1, 8))))


def config(slots_per_trial: int = 1, **searcher) -> ExperimentConfig:
    searcher.setdefault("metric", "loss")
    return ExperimentConfig(
        source="t.yaml", name="t", entrypoint="x", hyperparameters=SPACE,
        searcher=SearcherConfig(**searcher), slots_per_trial=slots_per_trial,
    )


def determined_example(**extra) -> ExperimentConfig:
    return config(name="adaptive_asha", max_trials=100, max_length=1000, divisor=4, max_rungs=5, **extra)


def test_determined_worked_example():
    assert build_plan(determined_example()) == {
        "searcher": "adaptive_asha",
        "brackets": [
            {"num_rungs": 4, "rung_lengths": [15, 62, 250, 1000], "max_trials": 70, "max_concurrent_trials": 6},
            {"num_rungs": 3, "rung_lengths": [62, 250, 1000], "max_trials": 22, "max_concurrent_trials": 5},
            {"num_rungs": 2, "rung_lengths": [250, 1000], "max_trials": 8, "max_concurrent_trials": 5},
        ],
        "plan": [
            {"length": 15, "trials": 53, "trained": 795},
            {"length": 62, "trials": 30, "trained": 1860},
            {"length": 250, "trials": 13, "trained": 3250},
            {"length": 1000, "trials": 4, "trained": 4000},
        ],
        "total_trials": 100,
        "total_length": 9905,
        "unit": "batches",
    }


def test_gpu_hours_default_to_slots_per_trial():
    plan = build_plan(determined_example(slots_per_trial=2), seconds_per_unit=0.5)
    assert plan["gpus_per_trial"] == 2
    assert plan["job_hours"] == pytest.approx(9905 * 0.5 / 3600)
    assert plan["gpu_hours"] == pytest.approx(9905 * 0.5 * 2 / 3600)
    plan = build_plan(determined_example(slots_per_trial=0), seconds_per_unit=3.6, gpus=4)
    assert plan["gpus_per_trial"] == 4 and plan["gpu_hours"] == pytest.approx(9905 * 3.6 * 4 / 3600)
    assert "gpu_hours" not in build_plan(determined_example())


def test_a_trial_of_four_ranks_counts_four_gpu_hours_per_job_hour(capsys):
    plan = build_plan(determined_example(slots_per_trial=4), seconds_per_unit=3.6)
    assert (plan["gpus_per_trial"], plan["job_hours"]) == (4, pytest.approx(9.905))
    assert plan["gpu_hours"] == pytest.approx(4 * 9.905)
    render_plan(plan)
    assert "Estimated 39.62 GPU-hours (4 GPUs per trial × 9.90 job hours)" in capsys.readouterr().out


def test_trials_without_gpus_are_estimated_in_job_hours(capsys):
    plan = build_plan(determined_example(slots_per_trial=0), seconds_per_unit=3.6)
    assert (plan["gpus_per_trial"], plan["job_hours"], plan["gpu_hours"]) == (0, pytest.approx(9.905), 0)
    render_plan(plan)
    out = capsys.readouterr().out
    assert "Estimated 9.90 job hours (slots_per_trial 0: no GPUs)" in out and "GPU-hours" not in out


def test_plan_without_brackets_for_other_searchers():
    plan = build_plan(config(name="random", max_trials=10, max_length=50, unit="epochs"))
    assert "brackets" not in plan
    assert plan["plan"] == [{"length": 50, "trials": 10, "trained": 500}]
    assert plan["total_length"] == 500 and plan["unit"] == "epochs"


def test_async_halving_brackets_come_from_the_searcher():
    cfg = config(name="async_halving", max_trials=12, num_rungs=3, divisor=3, max_length=90, max_concurrent_trials=0)
    plan = build_plan(cfg)
    assert plan["brackets"] == make_searcher(cfg).brackets() == [
        {"num_rungs": 3, "rung_lengths": [10, 30, 90], "max_trials": 12, "max_concurrent_trials": 9}
    ]
    assert plan["plan"] == [{"length": 10, "trials": 8, "trained": 80}, {"length": 30, "trials": 3, "trained": 90}, {"length": 90, "trials": 1, "trained": 90}]


def test_pbt_total_length_counts_only_training_done():
    cfg = config(name="pbt", population_size=6, num_rounds=4, length_per_round=100, truncate_fraction=0.34)
    plan = build_plan(cfg)
    assert plan["total_trials"] == 12
    assert [(row["length"], row["trials"]) for row in plan["plan"]] == [(100, 2), (200, 2), (300, 2), (400, 6)]
    assert plan["total_length"] == 6 * 400  # children continue from their parents' checkpoints
    assert sum(row["trained"] for row in plan["plan"]) == plan["total_length"]
    assert [row["trained"] for row in plan["plan"]] == [200, 200, 200, 1800]  # 2 x 400 + 4 children x 100
    run = simulate(make_searcher(cfg))
    assert sum(1 for parent in run["parent"].values() if parent is not None) == 6


def test_plan_is_json_and_deterministic():
    cfg = determined_example()
    plan = build_plan(cfg, seconds_per_unit=1.0)
    assert json.loads(json.dumps(plan)) == plan == build_plan(cfg, seconds_per_unit=1.0)


def test_render_plan(capsys):
    render_plan(build_plan(determined_example(), seconds_per_unit=0.5))
    out = capsys.readouterr().out
    assert "adaptive_asha: 100 trials" in out and "9,905 batches" in out
    assert "15, 62, 250, 1000" in out
    assert "53" in out and "GPU-hours" in out


def test_render_plan_without_brackets_or_gpu_hours(capsys):
    render_plan(build_plan(config(name="single", max_length=100)))
    out = capsys.readouterr().out
    assert "single: 1 trial," in out and "Brackets" not in out and "GPU-hours" not in out


def test_pbt_preview_rows_add_up_to_the_total_it_states(capsys):
    """Each row says what its trials trained, so the table adds up to the total: a child trains only past
    its parent's checkpoint."""
    render_plan(build_plan(config(name="pbt", population_size=8, num_rounds=5, length_per_round=400,
                                  truncate_fraction=0.25)))
    out = capsys.readouterr().out
    stated = int(re.search(r"([\d,]+) batches of training in total", out).group(1).replace(",", ""))
    rows = re.findall(r"│\s+([\d,]+)\s+│\s+(\d+)\s+│\s+([\d,]+)\s+│", out)
    assert sum(int(trained.replace(",", "")) for _, _, trained in rows) == stated
    assert "only the batches past it" in " ".join(out.split())


def test_stop_once_previews_trials_stopped_at_every_rung_and_the_same_plan_each_time():
    """Determined's stopping variant of ASHA keeps a trial only while it ranks in the top quarter of its
    rung: a constant metric would keep all 16 (ties rank first), real results do not."""
    cfg = ExperimentConfig(source="t.yaml", name="t", entrypoint="x", hyperparameters=SPACE, seed=3, searcher=SearcherConfig(
        name="adaptive_asha", metric="loss", max_trials=16, max_length=937, stop_once=True, mode="aggressive",
        max_rungs=3, divisor=4))
    plan = build_plan(cfg)
    lengths = {row["length"]: row["trials"] for row in plan["plan"]}
    assert plan["brackets"][0]["rung_lengths"] == [58, 234, 937]
    assert plan["total_trials"] == 16 and lengths[58] >= 8 and 1 <= lengths[937] <= 4
    assert plan == build_plan(cfg)


@pytest.mark.parametrize("name, trials", [("single", 1), ("random", 10)])
def test_a_search_without_max_length_plans_trials_but_no_lengths(capsys, name, trials):
    """Determined 0.38's single and random (and grid) may leave max_length out: each trial trains until its
    code stops, so the plan counts trials and says so, with no lengths, totals or GPU-hours."""
    extra = {"max_trials": 10} if name == "random" else {}
    plan = build_plan(config(name=name, max_length=None, **extra), seconds_per_unit=0.5)
    assert plan == {"searcher": name, "plan": [{"length": None, "trials": trials, "trained": None}],
                    "total_trials": trials, "total_length": None, "unit": "batches", "open_ended": True}
    render_plan(plan)
    out = " ".join(capsys.readouterr().out.split())
    assert f"{name}: {trials} trial{'s' if trials > 1 else ''}, each trains until its code stops" in out
    assert "Estimated" not in out and "0%" not in out and "Where trials stop" not in out
