"""The driver-to-job protocol (hpo_slurm.core.protocol): the files round-trip through their types, files
written by hpo-slurm 0.1.0 (no protocol version) are read, files of a newer protocol are refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from helpers_spec import EXAMPLES, make_run, result, run_job_process
from hpo_slurm import trial
from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.core.layout import CHECKPOINT_META, ExperimentLayout, checkpoint_name
from hpo_slurm.core.protocol import (
    PROTOCOL_VERSION, BatchManifest, ProtocolError, RunResult, RunSpec, RunStatus, StopReason, checkpoint_length,
    latest_checkpoint_in,
)
from hpo_slurm.engine.workspace import FileWorkspace

# A spec.json exactly as hpo-slurm 0.1.0 wrote it: jobs queued before an upgrade read this.
SPEC_0_1_0 = {
    "experiment": "exp", "experiment_dir": "/data/hpo/exp", "context_dir": "/data/hpo/exp/context",
    "trial_id": 7, "run_id": "t7-r2", "hparams": {"optimizer": {"lr": 0.01}, "layers": 3},
    "target_length": 400, "from_length": 100, "unit": "batches", "parent_checkpoint": "/data/hpo/exp/trials/3/checkpoints/length-000000100",
    "entrypoint": "python3 train.py", "metric": "validation_loss", "smaller_is_better": True,
    "time_limit_s": 3600, "signal_delay_s": 30, "data": {"path": "/data/set"}, "records_per_epoch": 5000,
}


def full_spec(**changes) -> RunSpec:
    return RunSpec.from_json({**SPEC_0_1_0, **changes})


# ---- run specs -----------------------------------------------------------------------------------
def test_a_spec_round_trips_and_keeps_the_field_names_on_disk():
    spec = full_spec()
    data = spec.to_json()
    assert data == {**SPEC_0_1_0, "protocol": PROTOCOL_VERSION, "nodes": 1, "ranks_per_node": 1,
                    "trial_seed": 0, "experiment_config": {}}
    assert RunSpec.from_json(json.loads(json.dumps(data))) == spec
    wide = full_spec(nodes=2, ranks_per_node=4)
    assert wide.world_size == 8 and RunSpec.from_json(wide.to_json()) == wide


def test_a_spec_written_by_0_1_0_is_read_with_every_field():
    spec = RunSpec.from_json(SPEC_0_1_0)
    assert (spec.trial_id, spec.run_id, spec.target_length, spec.from_length) == (7, "t7-r2", 400, 100)
    assert spec.hparams == {"optimizer": {"lr": 0.01}, "layers": 3}
    assert (spec.time_limit_s, spec.signal_delay_s, spec.records_per_epoch) == (3600, 30, 5000)
    assert spec.parent_checkpoint.endswith("length-000000100") and spec.data == {"path": "/data/set"}


def test_a_spec_with_only_the_required_fields_gets_the_job_s_defaults():
    required = {key: SPEC_0_1_0[key] for key in
                ("experiment_dir", "context_dir", "trial_id", "run_id", "hparams", "target_length", "entrypoint")}
    spec = RunSpec.from_json(required)
    assert spec.experiment == "exp"  # the experiment folder's name
    assert (spec.unit, spec.data, spec.records_per_epoch, spec.parent_checkpoint) == ("batches", {}, 0, None)
    assert (spec.time_limit_s, spec.signal_delay_s, spec.from_length) == (None, 0, 0)


def test_a_spec_of_a_newer_protocol_is_refused_with_a_clear_error():
    with pytest.raises(ProtocolError, match=r"spec\.json: written by a newer hpo-slurm \(protocol 3; this one reads up to 2\)"):
        RunSpec.from_json({**SPEC_0_1_0, "protocol": PROTOCOL_VERSION + 1}, "spec.json")


@pytest.mark.parametrize("changes, message", [
    ({"run_id": None}, "'run_id' must be str"),
    ({"trial_id": "7"}, "'trial_id' must be int"),
    ({"target_length": True}, "'target_length' must be int"),
    ({"hparams": [1, 2]}, "'hparams' must be dict"),
    ({"protocol": 0}, "protocol 0 is not a protocol version"),
])
def test_a_mistyped_spec_is_refused_naming_the_field(changes, message):
    with pytest.raises(ProtocolError, match=message):
        RunSpec.from_json({**SPEC_0_1_0, **changes})


def test_a_spec_without_a_required_field_is_refused_naming_it():
    data = dict(SPEC_0_1_0)
    del data["entrypoint"]
    with pytest.raises(ProtocolError, match="run spec: no 'entrypoint'"):
        RunSpec.from_json(data)
    with pytest.raises(ProtocolError, match="expected a JSON object, got list"):
        RunSpec.from_json([SPEC_0_1_0])


def test_reading_a_spec_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("{not json")
    with pytest.raises(ProtocolError, match=f"{path}: not JSON"):
        RunSpec.read(path)


# ---- run results ---------------------------------------------------------------------------------
@pytest.mark.parametrize("written", [
    {"status": "exited", "exit_code": 0, "stop_reason": None, "attempt": 1, "ended": 1700000000.5},
    {"status": "stopped", "exit_code": 0, "stop_reason": "preempted", "attempt": 2, "ended": 1700000100.0},
    {"status": "stopped", "exit_code": 0, "stop_reason": "time_limit", "attempt": 1, "ended": 1.0},
    {"status": "stopped", "exit_code": 0, "stop_reason": "search_stopped", "attempt": 3, "ended": 2.0},
    {"status": "failed", "exit_code": 1, "stop_reason": None, "message": "`python3 train.py` exited with status 1",
     "attempt": 1, "ended": 3.0},
    {"status": "invalid_hp", "exit_code": 0, "stop_reason": None, "message": "", "attempt": 1, "ended": 4.0},
], ids=["exited", "preempted", "time_limit", "search_stopped", "failed", "invalid_hp"])
def test_a_result_written_by_0_1_0_is_read_and_round_trips(written):
    outcome = RunResult.from_json(written)
    assert outcome.status is RunStatus(written["status"])
    assert outcome.to_json() == {**written, "protocol": PROTOCOL_VERSION}
    assert RunResult.from_json(outcome.to_json()) == outcome


def test_known_stop_reasons_are_members_and_a_script_s_own_reason_is_kept():
    preempted = RunResult(RunStatus.STOPPED, 0, stop_reason="preempted")
    assert preempted.stop_reason is StopReason.PREEMPTED and preempted.stop_reason == "preempted"
    own = RunResult.from_json({"status": "stopped", "exit_code": 0, "stop_reason": "diverged"})
    assert own.stop_reason == "diverged" and own.to_json()["stop_reason"] == "diverged"


def test_a_result_leaves_out_what_it_does_not_know():
    assert RunResult(RunStatus.EXITED, 0).to_json() == {
        "protocol": PROTOCOL_VERSION, "status": "exited", "exit_code": 0, "stop_reason": None}


@pytest.mark.parametrize("data, message", [
    ({"status": "finished", "exit_code": 0}, "unknown status 'finished'"),
    ({"status": "exited"}, "no 'exit_code'"),
    ({"status": "exited", "exit_code": 0, "protocol": PROTOCOL_VERSION + 1}, "written by a newer hpo-slurm"),
])
def test_a_result_that_is_not_one_is_refused(data, message):
    with pytest.raises(ProtocolError, match=message):
        RunResult.from_json(data)


def test_the_workspace_reads_results_and_ignores_ones_it_cannot_read_with_a_warning(tmp_path, caplog):
    layout = ExperimentLayout(tmp_path / "exp")
    workspace = FileWorkspace(layout)
    assert workspace.read_result("t1-r1") is None  # no result file yet
    layout.run_dir("t1-r1").mkdir(parents=True)
    write_json_atomic(layout.result_file("t1-r1"), {"status": "stopped", "exit_code": 0, "stop_reason": "time_limit",
                                                    "attempt": 1, "ended": 12.5})
    assert workspace.read_result("t1-r1") == RunResult(RunStatus.STOPPED, 0, StopReason.TIME_LIMIT, None, 1, 12.5)
    assert workspace.run_times("t1-r1")[1] == 12.5
    write_json_atomic(layout.result_file("t1-r1"), {"status": "exited", "exit_code": 0, "protocol": 99})
    with caplog.at_level(logging.WARNING, logger="hpo_slurm.engine.workspace"):
        assert workspace.read_result("t1-r1") is None
    assert "written by a newer hpo-slurm (protocol 99" in caplog.text


# ---- batch manifests -----------------------------------------------------------------------------
def test_a_manifest_round_trips_with_the_keys_its_executor_adds():
    specs = (full_spec(), full_spec(trial_id=8, run_id="t8-r1"))
    manifest = BatchManifest(specs, extra={"array": 3, "job_name": "hpo.x.array-3"})
    data = manifest.to_json()
    assert data["runs"] == ["t7-r2", "t8-r1"] and data["array"] == 3 and data["protocol"] == PROTOCOL_VERSION
    assert [entry["run_id"] for entry in data["specs"]] == data["runs"]
    assert BatchManifest.from_json(json.loads(json.dumps(data))) == manifest
    assert manifest.spec_for_task(1) is specs[1]
    with pytest.raises(IndexError, match="task 2 is outside the batch of 2 runs"):
        manifest.spec_for_task(2)


def test_a_manifest_written_by_0_1_0_is_read():
    second = {**SPEC_0_1_0, "trial_id": 8, "run_id": "t8-r1"}
    manifest = BatchManifest.from_json({"runs": ["t7-r2", "t8-r1"], "specs": [SPEC_0_1_0, second]})
    assert manifest.run_ids == ["t7-r2", "t8-r1"] and manifest.extra == {}
    assert manifest.spec_for_task(1) == RunSpec.from_json(second)


@pytest.mark.parametrize("data, message", [
    ({"runs": ["t7-r2"], "specs": [SPEC_0_1_0], "protocol": PROTOCOL_VERSION + 1}, "written by a newer hpo-slurm"),
    ({"runs": ["t9-r1"], "specs": [SPEC_0_1_0]}, "task 0 is run t9-r1 but its spec is t7-r2"),
    ({"runs": ["t7-r2", "t8-r1"], "specs": [SPEC_0_1_0]}, "2 runs but 1 specs"),
    ({"runs": ["t7-r2"], "specs": ["/exp/runs/t7-r2/spec.json"]}, "task 0: expected a JSON object, got str"),
    ({"runs": ["t7-r2"], "specs": [{**SPEC_0_1_0, "hparams": None}]}, "task 0: no 'hparams'|task 0: 'hparams'"),
])
def test_a_manifest_that_is_not_one_is_refused(data, message):
    with pytest.raises(ProtocolError, match=message):
        BatchManifest.from_json(data)


# ---- checkpoints ---------------------------------------------------------------------------------
def test_the_latest_checkpoint_is_the_longest_published_one(tmp_path):
    directory = tmp_path / "checkpoints"
    assert latest_checkpoint_in(directory) is None
    for length in (5, 40, 12):
        (directory / checkpoint_name(length)).mkdir(parents=True)
        write_json_atomic(directory / checkpoint_name(length) / CHECKPOINT_META, {"length": length})
    (directory / checkpoint_name(90)).mkdir()  # not published: no meta file
    (directory / ".tmp-length-000000100-1").mkdir()
    latest = latest_checkpoint_in(directory)
    assert latest == directory / checkpoint_name(40) and checkpoint_length(latest) == 40
    # the trial API keeps offering both
    assert trial.latest_checkpoint_in is latest_checkpoint_in and trial.checkpoint_length is checkpoint_length


# ---- both sides speak it -------------------------------------------------------------------------
def test_a_trial_context_is_built_from_a_spec_or_its_json(tmp_path):
    spec = full_spec(experiment_dir=str(tmp_path / "exp"))
    from_type, from_json = trial.TrialContext(spec), trial.TrialContext(SPEC_0_1_0)
    assert from_type.run_spec == spec and from_type.spec == spec.to_json()
    assert from_json.spec == SPEC_0_1_0 and from_json.run_spec == RunSpec.from_json(SPEC_0_1_0)
    assert (from_json.trial_id, from_json.run_id, from_json.target_length, from_json.hparams) == (
        7, "t7-r2", 400, {"optimizer": {"lr": 0.01}, "layers": 3})
    assert (from_json.unit, from_json.data, from_json.records_per_epoch) == ("batches", {"path": "/data/set"}, 5000)
    with pytest.raises(ProtocolError, match="newer hpo-slurm"):
        trial.TrialContext({**SPEC_0_1_0, "protocol": PROTOCOL_VERSION + 1})


def test_a_job_writes_a_versioned_result_and_refuses_a_newer_spec(tmp_path):
    hparams = {"optimizer": {"lr": 0.05, "momentum": 0.8}, "layers": 3, "activation": "tanh"}
    spec_path = make_run(tmp_path, EXAMPLES / "quadratic", "python3 train.py", hparams, 4,
                         data={"sleep_per_unit": 0.0})
    assert json.loads(Path(spec_path).read_text())["protocol"] == PROTOCOL_VERSION
    done = run_job_process(spec_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert RunResult.from_json(result(spec_path)).status is RunStatus.EXITED
    assert result(spec_path)["protocol"] == PROTOCOL_VERSION

    newer = make_run(tmp_path, EXAMPLES / "quadratic", "python3 train.py", hparams, 4, trial_id=2)
    write_json_atomic(newer, {**json.loads(newer.read_text()), "protocol": PROTOCOL_VERSION + 1})
    refused = run_job_process(newer)
    assert refused.returncode != 0 and "ProtocolError" in refused.stdout and "newer hpo-slurm" in refused.stdout
    assert not (newer.parent / "attempts.jsonl").exists() and not (newer.parent / "result.json").exists()


def test_a_trial_that_exits_with_true_fails_with_status_1_and_its_result_is_read(tmp_path):
    context = tmp_path / "model"
    context.mkdir()
    (context / "quits.py").write_text("import sys\n\ndef main(ctx):\n    sys.exit(True)\n")
    spec_path = make_run(tmp_path, context, "quits:main", {}, 4)
    done = run_job_process(spec_path)
    assert done.returncode != 0  # the trial failed, so the job fails
    written = result(spec_path)
    assert type(written["exit_code"]) is int and written["exit_code"] == 1 and written["message"] == "`quits:main` called sys.exit(True)"
    read = FileWorkspace(ExperimentLayout(tmp_path / "exp")).read_result(RunSpec.read(spec_path).run_id)
    assert read is not None and read.status is RunStatus.FAILED and read.exit_code == 1
    # hpo-slurm 0.1.0 wrote that exit code as JSON's true
    assert type(RunResult.from_json({**written, "exit_code": True}).exit_code) is int


def test_a_trial_context_needs_no_more_of_a_spec_than_the_trial_uses(tmp_path):
    ctx = trial.TrialContext({"experiment_dir": str(tmp_path), "trial_id": 3, "run_id": "t3-r1",
                              "hparams": {"lr": 0.1}, "target_length": 8})
    assert (ctx.trial_id, ctx.run_id, ctx.hparams, ctx.target_length, ctx.unit) == (3, "t3-r1", {"lr": 0.1}, 8, "batches")
    with pytest.raises(ProtocolError, match="no 'target_length'"):
        trial.TrialContext({"experiment_dir": str(tmp_path), "trial_id": 3, "run_id": "t3-r1", "hparams": {}})


def test_every_spec_field_has_its_json_types():
    """A RunSpec field added without an entry in the types table would fail only when a spec is read."""
    from dataclasses import fields

    from hpo_slurm.core.protocol import _SPEC_TYPES

    assert set(_SPEC_TYPES) == {f.name for f in fields(RunSpec)}


def test_trial_seeds_are_fixed_31_bit_numbers_that_differ_by_trial_and_experiment():
    from hpo_slurm.core.rng import trial_seed_for

    seeds = {trial_seed_for(seed, trial) for seed in (0, 1, 2**32 - 1) for trial in range(1, 200)}
    assert len(seeds) == 3 * 199 and all(0 <= s < 2**31 for s in seeds)
    assert trial_seed_for(7, 3) == trial_seed_for(7, 3)
