"""Determined's Core API on hpo-slurm (``hpo_slurm.compat``): scripts written as Determined's core_api
tutorial (stages 0-4, ``tests/determined_core/``) run unchanged, with no ``determined`` installed.

In-process tests cover the API's contracts; job tests run real jobs (``tasks.job.run_job``) with real
preemptions and ranks; one search runs through ``hpo-slurm launch --executor local``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest
import yaml

from driver_helpers import cli, status
from helpers_spec import REPO, checkpoints, interrupt_job, job_env, make_run, metrics, result, run_job_process
from hpo_slurm.compat import package_choice
from hpo_slurm.compat.cluster_info import experiment_id_of, get_cluster_info
from hpo_slurm.compat.core import EarlyExitReason, init
from hpo_slurm.compat.distributed import DistributedContext, DummyDistributedContext
from hpo_slurm.compat.errors import Unsupported
from hpo_slurm.compat.storage import checkpoint_path, storage_id_of
from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import SPEC_ENV, RunSpec
from hpo_slurm.trial import STOP_SIGNALS

SCRIPTS = Path(__file__).resolve().parent / "determined_core"
SITE = str(package_choice.SITE)
CONFIG = {"searcher": {"name": "single", "metric": "x", "smaller_is_better": False, "max_length": {"batches": 40}},
          "data": {"max_length": 40}}


def det_run(tmp_path: Path, entrypoint: str, hparams: Dict[str, Any], target: int, data: Dict[str, Any],
            ranks: int = 1, config: Optional[Dict[str, Any]] = None, **spec_fields: Any) -> Path:
    """A run's spec as the driver writes it for a Determined script (searcher metric ``x``)."""
    path = make_run(tmp_path, SCRIPTS, entrypoint, hparams, target, data=data, ranks_per_node=ranks)
    spec = replace(RunSpec.read(path), metric="x", smaller_is_better=False, trial_seed=17,
                   experiment_config=config if config is not None else CONFIG, **spec_fields)
    write_json_atomic(path, spec.to_json())
    return path


@pytest.fixture
def in_run(tmp_path, monkeypatch):
    """Make this process a run of trial 1 (target 30) and give back its spec path; the stop signals'
    handlers that ``init()`` installs are put back afterwards."""
    saved = {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}
    spec = det_run(tmp_path, "python3 counter.py", {"increment_by": 2}, 30, {"max_length": 30})
    monkeypatch.setenv(SPEC_ENV, str(spec))
    yield spec
    for name, handler in saved.items():
        signal.signal(getattr(signal, name), handler)


def probe(spec: Path, name: str = "probe.json") -> Dict[str, Any]:
    return json.loads((Path(spec).parent / name).read_text())


def lines(spec: Path, kind: str):
    return [(m["length"], m["metrics"]["x"]) for m in metrics(spec, kind=kind)]


# ---- storage ids, cluster info, distributed context: no run needed ------------------------------------
def test_storage_ids_name_checkpoint_folders_and_never_leave_the_experiment(tmp_path):
    layout = ExperimentLayout(tmp_path / "exp")
    folder = layout.checkpoints_dir(12) / "length-000000250"
    folder.mkdir(parents=True)
    assert storage_id_of(folder, layout) == "trial-12-length-000000250"
    assert checkpoint_path("trial-12-length-000000250", layout) == folder
    for bad in ("../../etc", "trial-1-length-1/..", "trial-1-length-1\n", "trial-x-length-1", "/tmp", "", 5):
        with pytest.raises(ValueError):
            checkpoint_path(bad, layout)
    with pytest.raises(ValueError):
        storage_id_of(tmp_path, layout)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    layout.checkpoints_dir(13).parent.mkdir(parents=True)
    layout.checkpoints_dir(13).symlink_to(outside)  # a trial folder that points out of the experiment
    with pytest.raises(ValueError, match="outside the experiment folder"):
        checkpoint_path("trial-13-length-000000001", layout)


def test_cluster_info_is_none_off_a_run_and_reads_the_spec_in_one(in_run, monkeypatch, tmp_path):
    info = get_cluster_info()
    assert info.task_type == "TRIAL" and info.trial.trial_id == 1 and info.trial.hparams == {"increment_by": 2}
    assert info.trial.trial_seed == 17 and info.trial._config == CONFIG and info.user_data == {"max_length": 30}
    assert info.trial.experiment_id == experiment_id_of("exp") == get_cluster_info().trial.experiment_id
    assert info.latest_checkpoint is None and info.container_rank == 0 and info.container_addrs == ["127.0.0.1"]
    layout = ExperimentLayout(in_run.parents[2])
    published = layout.checkpoints_dir(1) / "length-000000020"
    published.mkdir(parents=True)
    (published / "hpo_checkpoint.json").write_text('{"length": 20}')
    assert get_cluster_info().latest_checkpoint == "trial-1-length-000000020"
    monkeypatch.delenv(SPEC_ENV)
    assert get_cluster_info() is None


def test_distributed_context_reads_torch_environment_and_needs_a_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
                 "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(KeyError):
        DistributedContext.from_torch_distributed()  # scripts catch this to run as one process
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    context = DistributedContext.from_torch_distributed()
    assert (context.get_rank(), context.get_size(), context.get_local_rank(), context.get_local_size(),
            context.get_cross_rank(), context.get_cross_size()) == (3, 4, 1, 2, 1, 2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        context.allgather(1)
    dummy = DummyDistributedContext()
    assert dummy.allgather(5) == [5] and dummy.gather(5) == [5] and dummy.broadcast(5) == 5
    assert dummy.allgather_local(5) == [5] and dummy.broadcast_local(5) == 5
    with pytest.raises(Unsupported):
        DistributedContext.from_horovod(None)


# ---- the Core API in this process -----------------------------------------------------------------------
def test_core_context_reports_checkpoints_and_stops_at_its_target(in_run, tmp_path):
    with init() as core_context:
        train, checkpoint = core_context.train, core_context.checkpoint
        train.report_training_metrics(steps_completed=10, metrics={"x": 20})
        train.report_metrics("inference", 10, {"x": 1})
        with pytest.raises(ValueError, match="steps_completed"):
            with checkpoint.store_path({"note": "no length"}):
                pass
        with checkpoint.store_path({"steps_completed": 10, "note": "ten"}) as (path, storage_id):
            (path / "state").write_text("20")
        assert storage_id == "trial-1-length-000000010"
        with checkpoint.restore_path(storage_id) as restored:
            assert (restored / "state").read_text() == "20"
        assert checkpoint.get_metadata(storage_id) == {"steps_completed": 10, "note": "ten"}
        source = tmp_path / "to-upload"
        (source / "sub").mkdir(parents=True)
        (source / "sub" / "weights").write_text("w")
        uploaded = checkpoint.upload(source, {"steps_completed": 15})
        checkpoint.download(uploaded, tmp_path / "downloaded")
        assert sorted(p.name for p in (tmp_path / "downloaded").rglob("*")) == ["metadata.json", "sub", "weights"]
        checkpoint.delete(uploaded)  # kept: hpo-slurm collects checkpoints itself
        for bad in ("../../../etc", "trial-1-length-000000099"):
            with pytest.raises((ValueError, FileNotFoundError)):
                with checkpoint.restore_path(bad):
                    pass
        assert core_context.preempt.should_preempt() is False  # below the target of 30
        train.report_validation_metrics(steps_completed=20, metrics={"x": 40})
        assert core_context.preempt.should_preempt() is False
        assert core_context.train.get_experiment_best_validation() is None
        [op] = list(_complete_ops(core_context, 60))  # report_completed validates at op.length = 30
        assert op == 30
        assert core_context.preempt.should_preempt() is True  # the searcher has its rung
        train.report_early_exit(EarlyExitReason.INVALID_HP)
    assert lines(in_run, "validation") == [(20, 40), (30, 60)]
    assert [(m["length"], m["metrics"]) for m in metrics(in_run, kind="training")] == [
        (10, {"x": 20}), (10, {"inference/x": 1})]
    assert json.loads((in_run.parent / "invalid_hp.json").read_text())["message"]


def _complete_ops(core_context, metric):
    for op in core_context.searcher.operations():
        op.report_progress(op.length)
        op.report_completed(metric)
        yield op.length


def test_searcher_operations_need_a_target_length(in_run, tmp_path):
    spec = RunSpec.read(in_run)
    write_json_atomic(in_run, replace(spec, target_length=0).to_json())
    with init() as core_context:
        with pytest.raises(Unsupported, match=r"searcher.operations\(\) without searcher.max_length"):
            list(core_context.searcher.operations())
        core_context.train.report_validation_metrics(steps_completed=500, metrics={"x": 1})
        assert core_context.preempt.should_preempt() is False  # no target: the script decides


def test_init_needs_a_distributed_context_for_several_ranks(in_run, monkeypatch):
    spec = RunSpec.read(in_run)
    write_json_atomic(in_run, replace(spec, ranks_per_node=2).to_json())
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="DistributedContext"):
        init()


# ---- which `determined` a trial imports -------------------------------------------------------------------
def fake_determined(tmp_path: Path) -> Path:
    folder = tmp_path / "installed"
    (folder / "determined").mkdir(parents=True)
    (folder / "determined" / "__init__.py").write_text("")
    return folder


def test_the_package_choice_rule(tmp_path):
    installed = fake_determined(tmp_path)
    path = [str(tmp_path / "context"), *sys.path]
    assert package_choice.site_path(path, {}) == SITE  # nothing else installed: ours
    assert package_choice.site_path([str(installed), *path], {}) == str(package_choice.GUARD)
    assert package_choice.site_path([str(installed), *path], {"HPO_SLURM_DETERMINED": "installed"}) is None
    assert package_choice.site_path([str(installed), *path], {"HPO_SLURM_DETERMINED": "hpo-slurm"}) == SITE
    with pytest.raises(package_choice.PackageChoiceError):
        package_choice.site_path(path, {"HPO_SLURM_DETERMINED": "mine"})
    assert package_choice.installed_determined([SITE, str(package_choice.GUARD), *path]) is None


@pytest.mark.parametrize("choice, expect", [(None, "fails"), ("installed", "fake"), ("hpo-slurm", "ours")])
def test_a_job_imports_the_chosen_determined(tmp_path, choice, expect):
    installed = fake_determined(tmp_path)
    spec = det_run(tmp_path, "python3 which.py", {}, 0, {})
    env = job_env()
    env["PYTHONPATH"] = os.pathsep.join([str(installed), env["PYTHONPATH"]])
    env.pop("HPO_SLURM_DETERMINED", None)
    if choice:
        env["HPO_SLURM_DETERMINED"] = choice
    code = "import sys; from hpo_slurm.tasks.job import run_job; run_job(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(spec)], env=env, capture_output=True, text=True, timeout=60)
    if expect == "fails":
        assert done.returncode != 0 and result(spec)["status"] == "failed"
        [line] = [text for text in done.stderr.splitlines() if "HPO_SLURM_DETERMINED" in text]
        assert str(installed / "determined") in line and "=installed" in line and "=hpo-slurm" in line
        assert not (spec.parent / "which.txt").exists()
    else:
        assert done.returncode == 0, done.stderr
        where = (spec.parent / "which.txt").read_text()
        assert where.startswith(str(installed) if expect == "fake" else SITE)


@pytest.mark.parametrize("launcher, args", [("horovod", []), ("deepspeed", []), ("tensorflow", []),
                                            ("torch_distributed", ["--nproc_per_node=4", "--", "python3", "x.py"])])
def test_unsupported_launchers_say_so_in_one_line(launcher, args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SITE, str(REPO)])}
    done = subprocess.run([sys.executable, "-m", f"determined.launch.{launcher}", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "not supported on hpo-slurm" in done.stderr


def test_a_chief_only_checkpoint_leaves_the_ranks_agreeing_on_the_next_shared_one(tmp_path):
    import threading

    from hpo_slurm.trial import TrialContext

    spec = make_run(tmp_path, tmp_path, "true", {}, 20, ranks_per_node=2)
    ranks = [TrialContext(json.loads(spec.read_text()), {"RANK": str(k), "LOCAL_RANK": str(k), "WORLD_SIZE": "2",
                                                         "LOCAL_WORLD_SIZE": "2", "NODE_RANK": "0"})
             for k in range(2)]
    with ranks[0].checkpoint(5, chief_only=True) as path:
        (path / "chief.txt").write_text("5")
    folders = {}

    def shared(k):
        with ranks[k].checkpoint(10) as path:
            folders[k] = path
            (path / f"rank-{k}.txt").write_text("10")

    threads = [threading.Thread(target=shared, args=(k,), daemon=True) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads) and folders[0] == folders[1]
    published = ranks[0].trial_dir / "checkpoints"
    assert sorted(p.name for p in (published / "length-000000010").glob("rank-*")) == ["rank-0.txt", "rank-1.txt"]
    assert (published / "length-000000005" / "chief.txt").read_text() == "5"


def test_the_launcher_keeps_a_script_s_own_double_dash_and_names_what_cannot_start(tmp_path):
    from hpo_slurm.compat.launch import parse_torch_distributed

    assert parse_torch_distributed(["python3", "train.py", "--", "--lr", "1"]) == (
        None, ["python3", "train.py", "--", "--lr", "1"])
    assert parse_torch_distributed(["--", "python3", "train.py"]) == (None, ["python3", "train.py"])
    assert parse_torch_distributed(["--trial", "model_def:Trial"]) == ("model_def:Trial", [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SITE, str(REPO)])}
    for args, said in ((["no-such-program-xyz", "a"], "cannot start 'no-such-program-xyz'"),
                       (["--trial", "no_such_module:Trial"], "--trial no_such_module:Trial: No module named")):
        done = subprocess.run([sys.executable, "-m", "determined.launch.torch_distributed", *args], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
        assert done.stderr.startswith(said), done.stderr


@pytest.mark.parametrize("module", ["determined.keras", "determined.estimator", "determined.experimental",
                                    "determined.pytorch.deepspeed"])
def test_unsupported_determined_modules_fail_their_import_with_one_line(module):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SITE, str(REPO)])}
    done = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hpo_slurm.compat.errors.Unsupported: determined.") and "not supported on hpo-slurm: " in last


# ---- real jobs: the tutorial's scripts ---------------------------------------------------------------------
def test_a_preempted_run_resumes_from_its_checkpoint_exactly(tmp_path):
    spec = det_run(tmp_path, "python3 counter.py", {"increment_by": 3}, 40,
                   {"max_length": 40, "sleep_per_batch": 0.03})
    first = interrupt_job(spec, lambda: any(m["kind"] == "validation" for m in metrics(spec)))
    assert first.returncode == 0, first.stdout
    assert result(spec)["status"] == "stopped" and result(spec)["stop_reason"] == "preempted"
    stopped_at = probe(spec)["preempted_at"]
    assert stopped_at < 40 and probe(spec)["stored"][-1] == f"trial-1-length-{stopped_at:09d}"

    again = run_job_process(spec)  # the job, requeued
    assert again.returncode == 0, again.stdout
    assert result(spec)["status"] == "exited"
    resumed = probe(spec)
    assert resumed["latest_checkpoint"] == f"trial-1-length-{stopped_at:09d}"
    assert (resumed["start"], resumed["x_start"]) == (stopped_at, 3 * stopped_at)
    assert resumed["trial_seed"] == 17 and resumed["searcher"] == "single" and resumed["preempted_at"] == 40
    # every length reported once, x exact: nothing trained twice, nothing lost
    assert lines(spec, "validation") == lines(spec, "training") == [(n, 3 * n) for n in (10, 20, 30, 40)]
    assert [p.name for p in checkpoints(spec)][-1] == "length-000000040"


def test_invalid_hyperparameters_end_the_run_as_invalid(tmp_path):
    for how in ("raise", "report"):
        spec = det_run(tmp_path / how, "python3 invalid.py", {"how": how}, 10, {})
        done = run_job_process(spec)
        assert done.returncode == 0, done.stdout
        assert result(spec)["status"] == "invalid_hp", (how, result(spec))


def test_two_ranks_allgather_broadcast_and_resume_from_a_sharded_checkpoint(tmp_path):
    entrypoint = "python3 -m determined.launch.torch_distributed python3 distributed.py"
    spec = det_run(tmp_path, entrypoint, {"increment_by": 2}, 30, {"max_length": 30, "sleep_per_batch": 0.05},
                   ranks=2)
    first = interrupt_job(spec, lambda: any(m["kind"] == "validation" for m in metrics(spec)))
    assert first.returncode == 0, first.stdout
    assert result(spec)["status"] == "stopped"
    ranks = [probe(spec, f"probe-{rank}.json") for rank in (0, 1)]
    stopped_at = ranks[0]["preempted_at"]
    assert stopped_at < 30 and ranks[1]["preempted_at"] == stopped_at  # every rank stops at the same step
    assert [r["broadcast"] for r in ranks] == ["from rank 0"] * 2
    assert ranks[0]["gather"] == [0, 10] and ranks[1]["gather"] is None
    assert [r["allgather_local"] for r in ranks] == [[0, 1]] * 2 and [r["broadcast_local"] for r in ranks] == [100] * 2
    assert [(r["size"], r["cross_size"], r["group_rank"]) for r in ranks] == [(2, 1, "0")] * 2
    [folder] = [p for p in checkpoints(spec) if p.name == f"length-{stopped_at:09d}"]
    assert sorted(p.name for p in folder.iterdir()) == ["hpo_checkpoint.json", "metadata.json", "shard-0", "shard-1"]

    again = run_job_process(spec, timeout=180)
    assert again.returncode == 0, again.stdout
    assert result(spec)["status"] == "exited"
    ranks = [probe(spec, f"probe-{rank}.json") for rank in (0, 1)]
    per_batch = 2 * 1 + 2 * 2  # the allgather sums increment_by * (rank + 1) over both ranks
    assert [(r["start"], r["x"]) for r in ranks] == [(stopped_at, per_batch * 30)] * 2
    assert ranks[0]["restored_metadata"] == {"steps_completed": stopped_at,
                                             "shards": {"rank-0": stopped_at, "rank-1": stopped_at}}
    assert lines(spec, "validation") == [(n, per_batch * n) for n in (10, 20, 30)]


# ---- a search: adaptive ASHA stops the script at each rung ------------------------------------------------
def launch_script_search(tmp_path: Path, script: str, config: Dict[str, Any]) -> Tuple[Path, Dict[str, Any]]:
    """Launch ``config`` (a search whose entrypoint runs ``script`` from tests/determined_core) on the local
    executor; (its experiment folder, its status) once it completed."""
    context = tmp_path / "context"
    context.mkdir()
    (context / script).write_text((SCRIPTS / script).read_text())
    (context / "search.yaml").write_text(yaml.safe_dump(config))
    root = tmp_path / "runs"
    done = cli("launch", str(context / "search.yaml"), "--root", str(root), "--executor", "local", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = status(root, config["name"])
    assert summary["state"] == "COMPLETED"
    return root / summary["folder"], summary


def test_adaptive_asha_with_time_metric_stops_at_rungs_and_promotions_resume(tmp_path):
    config = {
        "name": "det-asha",
        "hyperparameters": {"increment_by": {"type": "int", "minval": 1, "maxval": 8}},
        "searcher": {"name": "adaptive_asha", "metric": "x", "smaller_is_better": True, "max_trials": 4,
                     "time_metric": "batches", "max_time": 40, "divisor": 2, "max_rungs": 3,
                     "max_concurrent_trials": 2},
        "entrypoint": "python3 counter.py", "max_restarts": 0, "reproducibility": {"experiment_seed": 3},
        "data": {"max_length": 40, "every": 10}, "resources": {"slots_per_trial": 0},
    }
    experiment, summary = launch_script_search(tmp_path, "counter.py", config)
    promoted = 0
    for trial in summary["trials"]:
        increment = trial["hparams"]["increment_by"]
        runs = trial["runs"]
        assert all(r["state"] == "SUCCEEDED" for r in runs), trial
        reported = [(m["length"], m["metrics"]["x"], m["run"]) for m in metrics_of(experiment, trial["id"])]
        # every rung's run stopped at its rung; the next resumed from its checkpoint: each length once
        assert [(n, x) for n, x, _ in reported] == [(n, increment * n) for n in range(10, trial["length_done"] + 1, 10)]
        assert trial["length_done"] == runs[-1]["to_length"]
        for run in runs:
            seen = probe(experiment / "runs" / run["run_id"] / "spec.json")
            assert seen["start"] == run["from_length"]
            expected = f"trial-{trial['id']}-length-{run['from_length']:09d}" if run["from_length"] else None
            assert seen["latest_checkpoint"] == expected
            assert [n for n, _, name in reported if name == run["run_id"]] == list(
                range(run["from_length"] + 10, run["to_length"] + 1, 10))
        promoted += len(runs) > 1
    assert promoted >= 1 and {t["length_done"] for t in summary["trials"]} >= {10, 40}


def test_a_trial_that_ends_itself_is_closed_without_a_restart(tmp_path):
    config = {
        "name": "det-ends",
        "hyperparameters": {"ends_at": {"type": "categorical", "vals": [10, 99]}},
        "searcher": {"name": "grid", "metric": "x", "smaller_is_better": True, "max_length": {"batches": 20}},
        "entrypoint": "python3 ends_itself.py", "max_restarts": 3, "data": {"max_length": 20},
        "resources": {"slots_per_trial": 0},
    }
    experiment, summary = launch_script_search(tmp_path, "ends_itself.py", config)
    by_end = {trial["hparams"]["ends_at"]: trial for trial in summary["trials"]}
    ended, full = by_end[10], by_end[99]
    assert (ended["state"], ended["restarts"], ended["length_trained"]) == ("STOPPED_EARLY", 0, 10)
    assert ended["message"] == "ended by its code report_early_exit(USER_REQUESTED_STOP)"
    assert [(r["state"], r["reason"]) for r in ended["runs"]] == [("SUCCEEDED", "its code ended the trial")]
    assert (full["state"], full["length_done"]) == ("COMPLETED", 20)


def metrics_of(experiment: Path, trial_id: int):
    path = ExperimentLayout(experiment).metrics_file(trial_id)
    return [m for m in map(json.loads, path.read_text().splitlines()) if m["kind"] == "validation"]


def test_searcher_operations_under_adaptive_asha_with_max_length(tmp_path):
    config = {
        "name": "det-ops",
        "hyperparameters": {"increment_by": {"type": "int", "minval": 1, "maxval": 8}},
        "searcher": {"name": "adaptive_asha", "metric": "x", "smaller_is_better": True, "max_trials": 2,
                     "max_length": {"batches": 40}, "divisor": 2, "max_rungs": 2, "max_concurrent_trials": 2},
        "entrypoint": "python3 operations.py", "max_restarts": 0, "reproducibility": {"experiment_seed": 5},
        "resources": {"slots_per_trial": 0},
    }
    experiment, summary = launch_script_search(tmp_path, "operations.py", config)
    for trial in summary["trials"]:
        increment = trial["hparams"]["increment_by"]
        validations = [(m["length"], m["metrics"]["x"]) for m in metrics_of(experiment, trial["id"])]
        # op.report_completed(x) validated at each op.length, the run's rung, from resumed state
        assert validations == [(r["to_length"], increment * r["to_length"]) for r in trial["runs"]]
