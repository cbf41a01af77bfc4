"""Exact resume with ``hpo_slurm.torch``: the digits CNN stopped by SIGTERM twice and resumed ends with
bit-for-bit the metrics of a run that never stopped. Plus unit tests of save_state/load_state."""

from __future__ import annotations

import random
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
np = pytest.importorskip("numpy")

from helpers_spec import (  # noqa: E402
    EXAMPLES,
    checkpoint_length,
    checkpoints,
    interrupt_job,
    make_run,
    metrics,
    result,
    run_job_process,
)
from hpo_slurm.torch import load_state, save_state  # noqa: E402

DIGITS = EXAMPLES / "digits"
HPARAMS = {"lr": 0.05, "momentum": 0.9, "n_filters": 8, "dropout": 0.25, "batch_size": 32}
TARGET = 120


def strip(lines):
    return [(m["kind"], m["length"], m["metrics"]) for m in lines]


@pytest.mark.slow
def test_digits_interrupted_twice_matches_an_uninterrupted_run(tmp_path):
    reference = make_run(tmp_path / "reference", DIGITS, "python3 train.py", HPARAMS, TARGET,
                         data={"report_every": 5})
    process = run_job_process(reference)
    assert process.returncode == 0, process.stdout
    expected = strip(metrics(reference))
    assert expected[-1][:2] == ("validation", TARGET)
    assert 0.0 < expected[-1][2]["accuracy"] <= 1.0

    data = {"report_every": 5, "sleep_per_batch": 0.01}
    stops = []
    for seq, stop_after in ((1, 20), (2, 70)):
        spec = make_run(tmp_path / "resumed", DIGITS, "python3 train.py", HPARAMS, TARGET, run_seq=seq, data=data)
        process = interrupt_job(spec, lambda: any(m["length"] >= stop_after for m in metrics(spec, kind="training")))
        assert result(spec)["status"] == "stopped", (result(spec), process.stdout)
        stops.append(max(checkpoint_length(c) for c in checkpoints(spec)))
    assert stops[0] < stops[1] < TARGET, stops

    last = make_run(tmp_path / "resumed", DIGITS, "python3 train.py", HPARAMS, TARGET, run_seq=3,
                    data={"report_every": 5})
    process = run_job_process(last)
    assert process.returncode == 0, process.stdout
    assert result(last)["status"] == "exited"
    runs = {m["run"] for m in metrics(last)}
    assert runs == {"t1-r1", "t1-r2", "t1-r3"}
    # Every report, training and validation, equals the uninterrupted run's (floats compared exactly).
    # A run may repeat the lengths after its predecessor's last checkpoint; keep the latest of each.
    latest = {}
    for line in metrics(last):
        latest[(line["kind"], line["length"])] = line["metrics"]
    assert [(k, n, latest[(k, n)]) for k, n, _ in expected] == expected
    assert sorted(latest) == sorted((k, n) for k, n, _ in expected)


def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))


def _steps(model, optimizer, scheduler, data_order, count):
    out = []
    for _ in range(count):
        x = torch.randn(16, 4, generator=data_order)
        loss = model(x).pow(2).mean() + random.random() + float(np.random.rand())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        out.append(loss.item())
    return out


def _setup(seed=0):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    return model, optimizer, scheduler, torch.Generator().manual_seed(seed + 1)


def test_save_load_continues_bit_for_bit(tmp_path):
    model, optimizer, scheduler, data_order = _setup()
    expected = _steps(model, optimizer, scheduler, data_order, 10)

    model, optimizer, scheduler, data_order = _setup()
    first = _steps(model, optimizer, scheduler, data_order, 4)
    save_state(tmp_path / "ckpt", model, optimizer, scheduler, extra={"length": 4}, generators={"data": data_order})

    model, optimizer, scheduler, data_order = _setup(seed=123)  # a fresh process would start elsewhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loads with weights_only=True, no fallback
        extra = load_state(tmp_path / "ckpt", model, optimizer, scheduler, generators={"data": data_order})
    assert extra == {"length": 4}
    assert first + _steps(model, optimizer, scheduler, data_order, 6) == expected


def test_own_python_and_numpy_generators_round_trip(tmp_path):
    gens = {"py": random.Random(1), "np": np.random.default_rng(2), "legacy": np.random.RandomState(3)}
    save_state(tmp_path, _model(), generators=gens)
    expected = (gens["py"].random(), gens["np"].random(), gens["legacy"].rand())
    fresh = {"py": random.Random(9), "np": np.random.default_rng(9), "legacy": np.random.RandomState(9)}
    load_state(tmp_path, _model(), generators=fresh)
    assert (fresh["py"].random(), fresh["np"].random(), fresh["legacy"].rand()) == expected


def test_missing_or_mismatched_state_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path, _model())
    save_state(tmp_path, _model())
    model = _model()
    with pytest.raises(KeyError):
        load_state(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(KeyError):
        load_state(tmp_path, model, generators={"data": torch.Generator()})


class Opaque:
    value = 3


def test_extra_with_other_objects_falls_back_with_a_warning(tmp_path):
    save_state(tmp_path, _model(), extra={"obj": Opaque()})
    with pytest.warns(UserWarning, match="weights_only"):
        extra = load_state(tmp_path, _model())
    assert extra["obj"].value == 3
