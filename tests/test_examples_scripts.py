"""The quadratic example run through ``hpo_slurm.tasks.job.run_job`` in real processes, no driver: reaching
the target, stopping on SIGTERM and resuming exactly, failures, InvalidHP and the module:function form."""

from __future__ import annotations

import json
import signal

import pytest

from hpo_slurm.core.layout import CHECKPOINT_META, ExperimentLayout

from helpers_spec import (
    EXAMPLES,
    checkpoint_length,
    checkpoints,
    interrupt_job,
    make_run,
    metrics,
    result,
    run_job_process,
)

QUADRATIC = EXAMPLES / "quadratic"
HPARAMS = {"optimizer": {"lr": 0.05, "momentum": 0.8}, "layers": 3, "activation": "tanh"}
COMMAND = "python3 train.py"
FUNCTION = "train_fn:train"


def run(tmp_path, entrypoint=COMMAND, target=40, data=None, **kwargs):
    spec = make_run(tmp_path, QUADRATIC, entrypoint, HPARAMS, target, data={"sleep_per_unit": 0.0, **(data or {})},
                    **kwargs)
    return spec, run_job_process(spec)


@pytest.mark.parametrize("entrypoint", [COMMAND, FUNCTION])
def test_reaches_target_reports_and_checkpoints(tmp_path, entrypoint):
    spec, process = run(tmp_path, entrypoint)
    assert process.returncode == 0, process.stdout
    assert result(spec)["status"] == "exited"
    assert result(spec)["attempt"] == 1
    validations = metrics(spec, kind="validation")
    assert [v["length"] for v in validations] == [40]
    assert validations[0]["run"] == "t1-r1"
    assert isinstance(validations[0]["metrics"]["validation_loss"], float)
    assert [m["length"] for m in metrics(spec, kind="training")] == list(range(4, 41, 4))
    assert [checkpoint_length(c) for c in checkpoints(spec)] == [40]


def test_both_entrypoint_forms_give_the_same_curve(tmp_path):
    command, _ = run(tmp_path / "command", COMMAND)
    function, _ = run(tmp_path / "function", FUNCTION)
    strip = lambda lines: [(m["kind"], m["length"], m["metrics"]) for m in lines]  # noqa: E731
    assert strip(metrics(command)) == strip(metrics(function))


@pytest.mark.parametrize("entrypoint", [COMMAND, FUNCTION])
def test_sigterm_stops_with_a_checkpoint_and_a_rerun_resumes_exactly(tmp_path, entrypoint):
    target, data = 300, {"sleep_per_unit": 0.005}
    reference, _ = run(tmp_path / "reference", entrypoint, target)
    expected = metrics(reference, kind="validation")[0]["metrics"]

    first = make_run(tmp_path / "interrupted", QUADRATIC, entrypoint, HPARAMS, target, data=data)
    process = interrupt_job(first, lambda: len(metrics(first, kind="training")) >= 5, signum=signal.SIGTERM)
    assert process.returncode == 0, process.stdout
    outcome = result(first)
    assert outcome["status"] == "stopped", outcome
    assert outcome["stop_reason"] == "preempted"
    assert outcome["exit_code"] == 0  # the trial itself checkpointed and returned
    assert metrics(first, kind="validation") == []
    [published] = checkpoints(first)
    assert json.loads((published / CHECKPOINT_META).read_text())["time"] <= outcome["ended"]
    stopped_at = checkpoint_length(published)
    assert 20 <= stopped_at < target

    second = make_run(tmp_path / "interrupted", QUADRATIC, entrypoint, HPARAMS, target, run_seq=2,
                      data={"sleep_per_unit": 0.0})
    process = run_job_process(second)
    assert process.returncode == 0, process.stdout
    assert result(second)["status"] == "exited"
    [validation] = metrics(second, kind="validation")
    assert validation["run"] == "t1-r2"
    assert validation["length"] == target
    assert validation["metrics"] == expected  # exact float equality
    trainings = [m["length"] for m in metrics(second, kind="training") if m["run"] == "t1-r2"]
    assert trainings[0] > stopped_at  # resumed, not restarted
    assert [checkpoint_length(c) for c in checkpoints(second)] == [stopped_at, target]


def test_a_run_cancelled_before_its_job_started_does_not_train(tmp_path):
    """A job the driver gave up on (or requeued after its run was cancelled) ends at once, unstarted."""
    spec_path = make_run(tmp_path, QUADRATIC, COMMAND, HPARAMS, 40, data={"sleep_per_unit": 0.0})
    layout = ExperimentLayout(spec_path.parent.parent.parent)
    layout.run_stop_file("t1-r1").touch()
    process = run_job_process(spec_path)
    assert process.returncode == 0, process.stdout
    assert result(spec_path)["status"] == "stopped" and result(spec_path)["stop_reason"] == "search_stopped"
    assert metrics(spec_path) == [] and checkpoints(spec_path) == []


@pytest.mark.parametrize("entrypoint", [COMMAND, FUNCTION])
def test_fail_always_fails_the_job(tmp_path, entrypoint):
    spec, process = run(tmp_path, entrypoint, data={"fail_always": True})
    assert process.returncode != 0
    assert "TrialFailed" in process.stdout
    outcome = result(spec)
    assert outcome["status"] == "failed"
    assert outcome["exit_code"] != 0
    assert checkpoints(spec) == []


def test_fail_once_fails_the_first_run_only(tmp_path):
    spec, process = run(tmp_path, data={"fail_once_trial": 1})
    assert process.returncode != 0
    assert result(spec)["status"] == "failed"
    again = make_run(tmp_path, QUADRATIC, COMMAND, HPARAMS, 40, run_seq=2, data={"fail_once_trial": 1})
    process = run_job_process(again)
    assert process.returncode == 0, process.stdout
    assert result(again)["status"] == "exited"
    assert [v["length"] for v in metrics(again, kind="validation")] == [40]
    other = make_run(tmp_path, QUADRATIC, COMMAND, HPARAMS, 40, trial_id=2, data={"fail_once_trial": 1})
    assert run_job_process(other).returncode == 0


@pytest.mark.parametrize("entrypoint", [COMMAND, FUNCTION])
def test_invalid_hp(tmp_path, entrypoint):
    spec, process = run(tmp_path, entrypoint, data={"invalid_hp_if_layers_above": 2})
    assert process.returncode == 0, process.stdout
    outcome = result(spec)
    assert outcome["status"] == "invalid_hp"
    assert "layers=3 > 2" in outcome["message"]
    assert metrics(spec) == []


def test_never_report_exits_cleanly_with_nothing(tmp_path):
    spec, process = run(tmp_path, data={"never_report": True})
    assert process.returncode == 0, process.stdout
    assert result(spec)["status"] == "exited"
    assert metrics(spec) == [] and checkpoints(spec) == []


def test_pbt_child_starts_from_its_parents_checkpoint(tmp_path):
    parent, _ = run(tmp_path, target=16)
    [parent_checkpoint] = checkpoints(parent)
    child = make_run(tmp_path, QUADRATIC, COMMAND, {**HPARAMS, "layers": 5}, 32, trial_id=2,
                     data={"sleep_per_unit": 0.0}, parent_checkpoint=parent_checkpoint)
    assert run_job_process(child).returncode == 0
    assert [m["length"] for m in metrics(child, trial_id=2, kind="training")] == [20, 24, 28, 32]
    assert [checkpoint_length(c) for c in checkpoints(child, trial_id=2)] == [32]
