"""Determined's PyTorchTrial on hpo-slurm (``hpo_slurm.compat.pytorch``), with the scripts of
``tests/determined_pytorch/`` written as Determined users write them (``from determined import
pytorch``) and no ``determined`` package installed: the job puts hpo-slurm's on the trial's path.

Searches go through ``hpo-slurm launch --executor local``; single runs through the job itself
(``helpers_spec``), which is how a preempted run is interrupted and resumed. Lengths are in batches
unless a test says otherwise; the trial trains a small MLP on scikit-learn's digits."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from driver_helpers import REPO, cli, status  # noqa: E402
from helpers_spec import (  # noqa: E402
    checkpoint_length,
    checkpoints,
    interrupt_job,
    make_run,
    metrics,
    result,
    run_job_process,
    trial_metrics,
)
from hpo_slurm.core.fsio import write_json_atomic  # noqa: E402
from hpo_slurm.core.layout import ExperimentLayout, run_name  # noqa: E402
from hpo_slurm.core.protocol import RunSpec  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent / "determined_pytorch"
SITE = REPO / "hpo_slurm" / "compat" / "site"
HPARAMS = {"global_batch_size": 32, "lr": 0.1, "hidden": 32, "dropout": 0.2}
TRAIN = "python3 train.py"
TRAINING_RECORDS = 1437  # 1,797 digits less the 360 validated on


@pytest.fixture(autouse=True)
def hpo_slurm_determined(monkeypatch):
    """Trials import hpo-slurm's ``determined`` (whatever else is installed) and run on the CPU."""
    monkeypatch.setenv("HPO_SLURM_DETERMINED", "hpo-slurm")
    monkeypatch.delenv("HPO_SLURM_SPEC", raising=False)
    monkeypatch.delenv("HPO_SLURM_LOCAL_GPUS", raising=False)


def reports(lines, kind):
    return [(line["length"], line["metrics"]) for line in lines if line["kind"] == kind]


def config_file(tmp_path: Path, name: str, **config) -> Path:
    config = {"name": name, "hyperparameters": HPARAMS, "max_restarts": 0, "reproducibility": {"experiment_seed": 3},
              **config}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def launch(config: Path, root: Path) -> dict:
    done = cli("launch", str(config), "--root", str(root), "--executor", "local", "--context", str(SCRIPTS),
               timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = status(root, yaml.safe_load(config.read_text())["name"])
    assert summary["state"] == "COMPLETED", summary
    return summary


def with_config(spec_path: Path, experiment_config: dict) -> Path:
    """The run's spec with ``experiment_config`` (what the legacy harness reads its periods from)."""
    spec = json.loads(spec_path.read_text())
    spec["experiment_config"] = experiment_config
    write_json_atomic(spec_path, spec)
    return spec_path


def copy_run(experiment: Path, run_id: str, target: Path, seq: int = 1, data: Optional[dict] = None) -> Path:
    """The spec of run ``run_id`` of ``experiment`` as run ``seq`` of the same trial (same id, seed and
    config) in a fresh experiment folder under ``target``, from length 0; its path."""
    spec = RunSpec.read(ExperimentLayout(experiment).spec_file(run_id)).to_json()
    layout = ExperimentLayout(target / "exp")
    new_id = run_name(spec["trial_id"], seq)
    layout.run_dir(new_id).mkdir(parents=True, exist_ok=True)
    layout.trial_dir(spec["trial_id"]).mkdir(parents=True, exist_ok=True)
    spec.update(experiment_dir=str(layout.dir), run_id=new_id, from_length=0, parent_checkpoint=None)
    if data is not None:
        spec["data"] = spec["experiment_config"]["data"] = data
    write_json_atomic(layout.spec_file(new_id), spec)
    return layout.spec_file(new_id)


def latest_reports(lines):
    """(kind, length) -> metrics of the last report there (a resumed run may repeat a length)."""
    return {(line["kind"], line["length"]): line["metrics"] for line in lines}


# ---- the legacy harness: entrypoint model_def:DigitsTrial --------------------------------------------
def test_legacy_entrypoint_honours_scheduling_unit_and_the_config_periods(tmp_path):
    config = config_file(
        tmp_path, "legacy", entrypoint="model_def:DigitsTrial",
        searcher={"name": "single", "metric": "validation_loss", "max_length": {"batches": 40}},
        scheduling_unit=7, min_validation_period={"batches": 15}, min_checkpoint_period={"batches": 20},
        perform_initial_validation=True, checkpoint_storage={"save_trial_latest": 10})
    summary = launch(config, tmp_path / "runs")
    experiment = tmp_path / "runs" / summary["folder"]
    lines = trial_metrics(experiment, 1)
    # a training report at every boundary (report, validation, checkpoint, target), as Determined's harness
    assert [length for length, _ in reports(lines, "training")] == [7, 14, 15, 20, 21, 28, 30, 35, 40]
    validations = reports(lines, "validation")
    assert [length for length, _ in validations] == [0, 15, 30, 40]
    assert validations[-1][1]["batches"] == 40 and validations[-1][1]["validation_loss"] < validations[0][1]["validation_loss"]
    # the mean over the window's batches, weighted records in validation: the reducer agrees exactly
    assert all(m["accuracy"] == pytest.approx(m["exact_accuracy"], abs=1e-12) for _, m in validations)
    saved = sorted(checkpoint_length(c) for c in (experiment / "trials" / "1" / "checkpoints").glob("length-*"))
    assert saved == [20, 40]
    final = experiment / "trials" / "1" / "checkpoints" / "length-000000040"
    assert {"state_dict.pth", "rank-0.pth", "trial_state.json", "load_data.json", "metadata.json"} <= {
        p.name for p in final.iterdir()}
    assert json.loads((final / "trial_state.json").read_text())["batches_trained"] == 40


# ---- the Trainer: adaptive ASHA's promotions resume from checkpoints --------------------------------
def test_trainer_under_adaptive_asha_resumes_promoted_trials_exactly(tmp_path):
    config = config_file(
        tmp_path, "asha", entrypoint=f"{TRAIN} --epochs 3 --validate 10 --report 5",
        searcher={"name": "adaptive_asha", "metric": "validation_loss", "max_trials": 4, "max_length": {"batches": 40},
                  "mode": "aggressive", "max_rungs": 2, "max_concurrent_trials": 2})
    summary = launch(config, tmp_path / "runs")
    experiment = tmp_path / "runs" / summary["folder"]
    promoted = [t for t in summary["trials"] if any(run["from_length"] > 0 for run in t["runs"])]
    assert promoted, "no trial was promoted"
    trial = promoted[0]
    second = next(run for run in trial["runs"] if run["from_length"] > 0)
    lines = trial_metrics(experiment, trial["id"])
    assert min(line["length"] for line in lines if line["run"] == second["run_id"]) > second["from_length"]
    assert {length for length, _ in reports(lines, "validation")} >= {10, 20, 30, 40}

    # the same trial trained to 40 in one run (same trial id and seed) reports the same floats
    reference = copy_run(experiment, second["run_id"], tmp_path / "reference")
    done = run_job_process(reference)
    assert done.returncode == 0, done.stdout
    assert latest_reports(lines) == latest_reports(metrics(reference, trial["id"]))


# ---- preemption: exact resume -------------------------------------------------------------------------
LEGACY_PERIODS = {"scheduling_unit": 10, "min_validation_period": {"batches": 20}}


@pytest.mark.parametrize("entrypoint", [f"{TRAIN} --epochs 9 --validate 20 --report 10", "model_def:DigitsTrial"])
def test_a_preempted_trial_resumes_with_exactly_the_metrics_of_an_uninterrupted_run(tmp_path, entrypoint):
    target = 60
    reference = with_config(make_run(tmp_path / "reference", SCRIPTS, entrypoint, HPARAMS, target), LEGACY_PERIODS)
    done = run_job_process(reference)
    assert done.returncode == 0, done.stdout
    expected = [(m["kind"], m["length"], m["metrics"]) for m in metrics(reference)]
    assert [(kind, length) for kind, length, _ in expected if kind == "validation"] == [
        ("validation", 20), ("validation", 40), ("validation", 60)]

    stops = []
    for seq, stop_after in ((1, 15), (2, 38)):
        spec = with_config(make_run(tmp_path / "resumed", SCRIPTS, entrypoint, HPARAMS, target, run_seq=seq,
                                    data={"sleep_per_batch": 0.03}), LEGACY_PERIODS)
        done = interrupt_job(spec, lambda: any(m["length"] >= stop_after for m in metrics(spec, kind="training")))
        assert result(spec)["status"] == "stopped" and result(spec)["stop_reason"] == "preempted", done.stdout
        stops.append(max(checkpoint_length(c) for c in checkpoints(spec)))
    assert 15 <= stops[0] < stops[1] < target, stops
    last = with_config(make_run(tmp_path / "resumed", SCRIPTS, entrypoint, HPARAMS, target, run_seq=3), LEGACY_PERIODS)
    done = run_job_process(last)
    assert done.returncode == 0 and result(last)["status"] == "exited", done.stdout
    assert {m["run"] for m in metrics(last)} == {"t1-r1", "t1-r2", "t1-r3"}
    # every report, training ones too (the window in progress is in the checkpoint), is bit-for-bit the same
    latest = latest_reports(metrics(last))
    assert sorted(latest) == sorted((kind, length) for kind, length, _ in expected)
    assert [(kind, length, latest[(kind, length)]) for kind, length, _ in expected] == expected


# ---- epochs as the search's unit ----------------------------------------------------------------------
def test_epochs_as_the_unit_with_records_per_epoch(tmp_path):
    spec = make_run(tmp_path, SCRIPTS, f"{TRAIN} --epochs 50 --validate 10 --report 5", HPARAMS, target_length=3,
                    unit="epochs", records_per_epoch=320)  # 10 batches of 32 an epoch
    done = run_job_process(spec)
    assert done.returncode == 0 and result(spec)["status"] == "exited", done.stdout
    lines = metrics(spec)
    validations = reports(lines, "validation")
    assert [(length, m["batches"], m["epochs"]) for length, m in validations] == [(1, 10, 1), (2, 20, 2), (3, 30, 3)]
    assert [m["epochs_seen"] for _, m in validations] == [1, 2, 3]  # the callback saw each epoch end
    training = reports(lines, "training")
    assert [(length, m["batches"]) for length, m in training] == [(b // 10, b) for b in range(5, 31, 5)]
    # the LR scheduler stepped every epoch of 10 batches: 0.1 * 0.8 ** 2 during the third
    assert training[-1][1]["lr"] == pytest.approx(0.1 * 0.8 ** 2)
    [final] = checkpoints(spec)
    assert checkpoint_length(final) == 3


def test_records_as_the_unit_round_down_to_whole_batches_and_validate_at_the_target(tmp_path):
    spec = make_run(tmp_path, SCRIPTS, f"{TRAIN} --epochs 50 --report 4", HPARAMS, target_length=330,
                    unit="records")  # 10 batches of 32 (320 records), validated as 330
    done = run_job_process(spec)
    assert done.returncode == 0, done.stdout
    lines = metrics(spec)
    assert [length for length, _ in reports(lines, "training")] == [128, 256, 330]
    assert [(length, m["batches"]) for length, m in reports(lines, "validation")] == [(330, 10)]


# ---- no target, and a trial that asks to stop ----------------------------------------------------------
def test_without_a_target_fit_trains_to_max_length_and_a_requested_stop_ends_the_trial(tmp_path):
    spec = make_run(tmp_path / "full", SCRIPTS, f"{TRAIN} --batches 12 --validate 5", HPARAMS, target_length=0)
    done = run_job_process(spec)
    assert done.returncode == 0 and result(spec)["status"] == "exited", done.stdout
    assert [length for length, _ in reports(metrics(spec), "validation")] == [5, 10, 12]
    assert [checkpoint_length(c) for c in checkpoints(spec)] == [12]

    stopped = make_run(tmp_path / "stopped", SCRIPTS, f"{TRAIN} --batches 30 --validate 5", HPARAMS, target_length=0,
                       data={"stop_at_batch": 7})
    done = run_job_process(stopped)
    assert done.returncode == 0 and result(stopped)["status"] == "ended_early", done.stdout
    assert result(stopped)["message"] == "context.set_stop_requested(True) at batch 7"
    assert [length for length, _ in reports(metrics(stopped), "validation")] == [5, 7]
    assert [checkpoint_length(c) for c in checkpoints(stopped)] == [7]

    # with a target (a rung) the trial ends the same way: the driver closes it (engine.judge)
    rung = make_run(tmp_path / "rung", SCRIPTS, f"{TRAIN} --batches 30 --validate 5", HPARAMS, target_length=20,
                    data={"stop_at_batch": 7})
    done = run_job_process(rung)
    assert done.returncode == 0 and result(rung)["status"] == "ended_early", done.stdout
    assert [checkpoint_length(c) for c in checkpoints(rung)] == [7]


# ---- two ranks: DDP, sharded data, one report, one checkpoint, exact resume --------------------------------
def test_two_ranks_train_with_ddp_report_once_and_resume_exactly(tmp_path):
    config = config_file(
        tmp_path, "ranks", resources={"slots_per_trial": 2},
        entrypoint=f"python3 -m determined.launch.torch_distributed {TRAIN} --epochs 9 --validate 10 --report 5",
        searcher={"name": "single", "metric": "validation_loss", "max_length": {"batches": 30}})
    summary = launch(config, tmp_path / "runs")
    experiment = tmp_path / "runs" / summary["folder"]
    lines = trial_metrics(experiment, 1)
    expected = [(m["kind"], m["length"], m["metrics"]) for m in lines]
    assert [length for kind, length, _ in expected if kind == "validation"] == [10, 20, 30]
    assert len(expected) == len({(kind, length) for kind, length, _ in expected})  # recorded once, from rank 0
    # each rank validated its half of the batches; the record-weighted mean is the whole set's
    assert expected[-1][2]["accuracy"] == pytest.approx(expected[-1][2]["exact_accuracy"], abs=1e-12)
    [final] = (experiment / "trials" / "1" / "checkpoints").glob("length-*")
    assert {"state_dict.pth", "rank-0.pth", "rank-1.pth"} <= {p.name for p in final.iterdir()}

    # the same trial, preempted once and resumed, reports the same floats
    first = copy_run(experiment, "t1-r1", tmp_path / "resumed", data={"sleep_per_batch": 0.05})
    interrupt_job(first, lambda: any(m["length"] >= 12 for m in metrics(first, kind="training")), timeout=180)
    assert result(first)["status"] == "stopped", result(first)
    assert 12 <= max(checkpoint_length(c) for c in checkpoints(first)) < 30
    second = copy_run(experiment, "t1-r1", tmp_path / "resumed", seq=2, data={})
    done = run_job_process(second, timeout=180)
    assert done.returncode == 0, done.stdout
    latest = latest_reports(metrics(second))
    assert [(kind, length, latest[(kind, length)]) for kind, length, _ in expected] == expected


# ---- what is not supported: one line --------------------------------------------------------------------
def test_an_unsupported_call_fails_the_run_with_one_line(tmp_path):
    spec = make_run(tmp_path, SCRIPTS, "model_def:DigitsTrial", HPARAMS, target_length=10, data={"unsupported": True})
    run_job_process(spec)
    ended = result(spec)
    assert ended["status"] == "failed"
    assert "configure_apex_amp() (NVIDIA apex) is not supported on hpo-slurm: use torch.autocast" in ended["message"]
    assert "\n" not in ended["message"]


def test_unsupported_context_features_raise_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from hpo_slurm.compat import pytorch

    with pytorch.init(hparams=dict(HPARAMS), exp_conf={}) as context:
        for call in (lambda: context.configure_apex_amp(models=None, optimizers=None),
                     lambda: context.experimental.use_amp(), lambda: context.set_profiler()):
            with pytest.raises(pytorch.Unsupported) as raised:
                call()
            assert "\n" not in str(raised.value) and "is not supported on hpo-slurm: " in str(raised.value)


# ---- off hpo-slurm, and loading a trained trial -------------------------------------------------------------
def test_local_training_and_load_trial_from_checkpoint_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.syspath_prepend(str(SITE))
    for name in [m for m in list(__import__("sys").modules) if m == "determined" or m.startswith("determined.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    monkeypatch.delitem(__import__("sys").modules, "model_def", raising=False)
    import determined as det
    from determined import pytorch
    from model_def import DigitsTrial

    assert det.get_cluster_info() is None
    with pytorch.init(hparams=dict(HPARAMS), exp_conf={"data": {}}) as context:
        trial = DigitsTrial(context)
        pytorch.Trainer(trial, context).fit(max_length=pytorch.Batch(6), checkpoint_period=pytorch.Batch(3))
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["batches-000000003", "batches-000000006"]
    loaded = pytorch.load_trial_from_checkpoint_path(tmp_path / "checkpoints" / saved[-1])
    assert isinstance(loaded, DigitsTrial)
    for mine, theirs in zip(trial.model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(mine, theirs)


# ---- the data order: seeded, sharded, resumable ---------------------------------------------------------------
def test_the_data_order_depends_on_the_seed_and_epoch_only_and_shards_whole_batches():
    from hpo_slurm.compat.pytorch import DataLoader

    loader = DataLoader(torch.utils.data.TensorDataset(torch.arange(10)), batch_size=3, shuffle=True)

    def stream(seed, start=0, replicas=1, rank=0, count=8):
        iterator = iter(loader.build(seed, repeat=True, start_step=start, num_replicas=replicas, rank=rank))
        return [next(iterator)[0].tolist() for _ in range(count)]

    whole = stream(seed=5, count=12)
    assert whole == stream(seed=5, count=12) and whole != stream(seed=6, count=12)
    assert sorted(sum(whole[:4], [])) == list(range(10))  # one epoch: 4 batches, the last one short
    assert whole[:4] != whole[4:8]  # reshuffled every epoch
    assert stream(seed=5, start=5, count=7) == whole[5:]  # a resume starts where training stopped
    shards = [stream(seed=5, replicas=2, rank=r, count=6) for r in (0, 1)]
    assert [b for pair in zip(*shards) for b in pair] == whole  # rank r takes batches r, r+2, ...
    assert stream(seed=5, start=3, replicas=2, rank=1, count=3) == shards[1][3:]
    validation = DataLoader(torch.utils.data.TensorDataset(torch.arange(10)), batch_size=3)
    per_rank = [[b[0].tolist() for b in validation.build(0, repeat=False, num_replicas=2, rank=r)] for r in (0, 1)]
    assert per_rank == [[[0, 1, 2], [6, 7, 8]], [[3, 4, 5], [9]]]
    assert math.ceil(loader.batches_per_epoch() / 2) == 2
