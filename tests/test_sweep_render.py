"""`hpo-slurm sweep` without a cluster: rendering and quoting, template checks, array and wave plans,
sacctmgr parsers, the trials a sweep creates, wave chains, dry runs and bad input."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from driver_helpers import cli, copy_example, write_config
from hpo_slurm.config.schema import SlurmConfig, load_config
from hpo_slurm.core.errors import UserError
from hpo_slurm.executors.array.executor import ArrayExecutor
from hpo_slurm.executors.base import JobRequest, JobState, SchedulerError
from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.searchers.drain import drain
from hpo_slurm.searchers import make_searcher
from hpo_slurm.sweep.plan import planned_trials
from hpo_slurm.executors.array.caps import Limits, parse_assoc, parse_qos, plan_arrays, plan_requests, user_cap
from hpo_slurm.core.placement import Placement
from hpo_slurm.executors.array.render import (
    array_spec, check_template, option_lines, render_array, render_wave,
)
from hpo_slurm.executors.array.waves import ArrayStatus, WaveState
from hpo_slurm.executors.templates import sbatch_template
from hpo_slurm.core.types import Close, Create, Train

HOSTILE = '"$(touch {marker})"; rm -rf x `touch {marker}` \'; touch {marker}'


def test_render_quotes_every_value_in_the_body(tmp_path):
    marker = tmp_path / "pwned"
    odd = tmp_path / HOSTILE.format(marker=marker).replace("/", "_")
    script = render_array(
        sbatch_template("array.sbatch"), job_name="hpo.0123abcd.array-3", array=array_spec(30, 4), output="jobs/array-3/%A_%a.out",
        signal_delay=120, options=["#SBATCH --partition=debug"], setup=[], experiment_dir=odd,
        python="/bin/echo", manifest=odd / "jobs" / "array-3" / "manifest.json",
    )
    assert "#SBATCH --array=0-29%4" in script and "#SBATCH --signal=B:USR2@120" in script
    assert "#SBATCH --job-name=hpo.0123abcd.array-3" in script
    (command,) = [line for line in script.splitlines() if line.startswith("exec ")]
    assert shlex.split(command) == ["exec", "/bin/echo", "-m", "hpo_slurm.tasks.sweep_task",
                                    str(odd / "jobs" / "array-3" / "manifest.json")]
    # run it: bash hands the hostile path to the program as one argument and executes none of it
    path = tmp_path / "array.sbatch"
    path.write_text(script)
    done = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"-m hpo_slurm.tasks.sweep_task {odd}/jobs/array-3/manifest.json"
    assert not marker.exists()


def test_render_refuses_unsafe_names_and_paths(tmp_path):
    common = dict(array="0-1", output="jobs/a/%A_%a.out", signal_delay=60, options=[], setup=[],
                  experiment_dir=tmp_path, python="python3", manifest=tmp_path / "m.json")
    with pytest.raises(ValueError):
        render_array(sbatch_template("array.sbatch"), **{**common, "job_name": "x; touch y"})
    with pytest.raises(ValueError):
        render_array(sbatch_template("array.sbatch"), **{**common, "job_name": "ok", "output": "../../etc/x"})
    with pytest.raises(ValueError):
        render_wave(job_name="a b", output="jobs/x.out", options=[], setup=[], python="p", manifest=tmp_path)


@pytest.mark.parametrize("field,value", [
    ("partition", "debug\necho pwned"), ("partition", "$(touch x)"), ("constraint", "a b"),
    ("account", "acct;`id`"), ("qos", "q'x"),
])
def test_sbatch_option_values_are_validated(field, value):
    with pytest.raises(UserError, match="cannot go in an #SBATCH line"):
        option_lines(SlurmConfig(**{field: value}), gpus=0, time_minutes=None)


def test_option_lines_from_the_slurm_section():
    slurm = SlurmConfig(partition="gpu", account="proj", time_minutes=90, cpus_per_task=4, mem="16G",
                        constraint="a100&ib", gpu_type="a100", extra_args=(("exclusive", ""), ("mail-user", "a@b.c")))
    assert option_lines(slurm, gpus=2, time_minutes=30) == [
        "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=30", "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16G", "#SBATCH --constraint=a100&ib", "#SBATCH --gres=gpu:a100:2", "#SBATCH --exclusive",
        "#SBATCH --mail-user=a@b.c",
    ]


def test_a_trial_of_several_ranks_gets_its_nodes_ranks_and_gpus_per_node():
    slurm = SlurmConfig(partition="gpu", gpu_type="a100")
    assert option_lines(slurm, gpus=8, time_minutes=30, placement=Placement(nodes=2, ranks_per_node=4)) == [
        "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --partition=gpu", "#SBATCH --time=30",
        "#SBATCH --gres=gpu:a100:4",
    ]
    assert option_lines(slurm, gpus=1, time_minutes=None, placement=Placement()) == [
        "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:a100:1"]


def test_a_generic_resource_joins_the_gpus_in_one_gres_line():
    slurm = SlurmConfig(extra_args=(("gres", "lscratch:100"),))
    assert option_lines(slurm, gpus=2, time_minutes=None) == ["#SBATCH --gres=gpu:2,lscratch:100"]
    assert option_lines(slurm, gpus=0, time_minutes=None) == ["#SBATCH --gres=lscratch:100"]


@pytest.mark.parametrize("text,message", [
    ("#!/bin/bash\n#SBATCH --job-name=$job_name\n#SBATCH --array=$array\n$command $trial\n", "unknown placeholder $trial"),
    ("#!/bin/bash\n#SBATCH --job-name=$job_name\n$command\n", "must use $array"),
    ("#!/bin/bash\n#SBATCH --job-name=$job_name --array=$array\necho 5$ $command\n", "lone '$'"),
    ("#SBATCH --job-name=$job_name\n#SBATCH --array=$array\n$command\n", "#! line"),
])
def test_bad_templates_are_refused_with_the_file_named(text, message):
    with pytest.raises(UserError) as info:
        check_template(text, "slurm.array_template /x/my.sbatch")
    assert message in str(info.value) and "/x/my.sbatch" in str(info.value)


def test_arrays_split_below_max_array_size_and_into_waves_under_a_cap():
    assert plan_arrays(30, Limits()).sizes == [30]
    assert plan_arrays(20, Limits(max_array_size=8)).sizes == [8, 8, 4]
    assert not plan_arrays(20, Limits(max_array_size=8)).waves
    assert plan_arrays(20, Limits(room=30)).sizes == [20]  # fits: everything at once
    capped = plan_arrays(20, Limits(room=10))
    assert capped.waves and capped.sizes == [8, 8, 4]  # the wave job and the next one need room too
    assert plan_arrays(5, Limits(room=2)).sizes == [1] * 5
    assert plan_arrays(20, Limits(max_array_size=5, room=10)).sizes == [5, 5, 5, 5]


def test_caps_from_literal_sacctmgr_output():
    assert parse_assoc("||normal|\n") == {"max_submit": None, "qos": ["normal"], "default_qos": None}
    assoc = parse_assoc("||normal|\n100|500|normal,long|long\n")
    assert assoc == {"max_submit": 100, "qos": ["normal", "long"], "default_qos": "long"}
    qos = parse_qos("normal||\nlong|40|\ndebug||8\n")
    assert qos == {"normal": None, "long": 40, "debug": 8}
    assert user_cap(assoc, qos, None) == 40  # the default QOS caps tighter than the association
    assert user_cap(assoc, qos, "debug") == 8
    assert user_cap(parse_assoc("||normal|\n"), parse_qos("normal||\n"), None) is None


@pytest.mark.parametrize("example", ["random.yaml", "grid.yaml"])
def test_a_sweep_creates_the_trials_a_capped_search_creates(example):
    config = load_config(str(Path(__file__).parent.parent / "examples" / "quadratic" / example))
    config = dataclasses.replace(config, searcher=dataclasses.replace(config.searcher, max_concurrent_trials=2))
    searcher = make_searcher(config)
    created = []

    def handle(action):  # every trial validates at its target and is closed, two in flight at a time
        if isinstance(action, Create):
            created.append((action.trial_id, action.hparams))
            return searcher.on_created(action.trial_id)
        if isinstance(action, Train):
            return searcher.on_validation(action.trial_id, action.length, 1.0)
        if isinstance(action, Close):
            return searcher.on_closed(action.trial_id)
        return None

    drain(searcher.initial(), handle)
    assert [(t, h) for t, h, _ in planned_trials(config)] == created
    assert len(created) == config.searcher.max_trials


def test_wave_chains_are_pending_submitted_or_broken(tmp_path, monkeypatch):
    config = load_config(str(Path(__file__).parent.parent / "examples" / "quadratic" / "random.yaml"))
    executor = ArrayExecutor(config, tmp_path)
    executor.cluster.config = {"AccountingStorageType": "accounting_storage/slurmdbd"}
    for index in range(4):
        write_json_atomic_dir(executor.folders.folder(index), {
            "array": index, "experiment_dir": str(tmp_path), "job_name": f"hpo.u.array-{index}",
            "wave_name": f"hpo.u.wave-{index}" if index else None,
            "previous": index - 1 if index else None, "next": index + 1 if index < 3 else None,
            "runs": [f"t{index}-r1"], "specs": [str(tmp_path / "runs" / f"t{index}-r1" / "spec.json")],
        })  # as hpo-slurm 0.1.0 wrote them: spec paths
    write_json_atomic(executor.folders.folder(0) / "submitted.json", {"job_id": "100"})
    write_json_atomic(executor.folders.folder(1) / "wave.json", {"job_id": "101"})
    jobs = {"hpo.u.wave-1": [("101", JobState.RUNNING)], "hpo.u.array-1": [("102_0", JobState.PENDING)]}
    monkeypatch.setattr(executor, "jobs_named", lambda names: jobs)
    states = executor.chain_states([1, 2, 3])
    # found by name, and recorded; its wave job is still running, so it submits wave 2 next
    assert states[1] == ArrayStatus(WaveState.SUBMITTED_NEXT_WAVE_DUE, "102")
    assert json.loads((executor.folders.folder(1) / "submitted.json").read_text()) == {"job_id": "102"}
    assert states[2] == ArrayStatus(WaveState.PENDING) and states[3] == ArrayStatus(WaveState.PENDING)
    assert executor.resolve("array-1_0") == "102_0"
    jobs.clear()
    jobs["hpo.u.wave-2"] = [("103", JobState.COMPLETED)]  # ended without submitting array 2
    assert executor.chain_states([2, 3]) == {2: ArrayStatus(WaveState.BROKEN), 3: ArrayStatus(WaveState.BROKEN)}
    statuses = executor.poll(["array-3_0"])
    assert statuses["array-3_0"].state == JobState.UNKNOWN

    def unreachable(names):
        raise SchedulerError("squeue failed: Socket timed out on send/recv operation")

    monkeypatch.setattr(executor, "jobs_named", unreachable)  # never "broken" for a query that failed
    assert executor.poll(["array-3_0"])["array-3_0"].state == JobState.PENDING
    with pytest.raises(SchedulerError):
        executor.find([JobRequest(run_id="t3-r1", job_name="x", run_dir=tmp_path, spec_path=tmp_path / "s", gpus=0)])


def test_runs_are_grouped_by_gpus_and_take_the_longest_time_limit(tmp_path):
    def request(run_id, gpus, minutes):
        return JobRequest(run_id=run_id, job_name=f"hpo.u.{run_id}", run_dir=tmp_path, spec_path=tmp_path / run_id,
                          gpus=gpus, time_minutes=minutes)

    requests = [request("a", 1, 10), request("b", 1, 30), request("c", 2, 5), request("d", 2, None), request("e", 1, 7)]
    arrays, plan = plan_requests(requests, Limits(), first_index=4)
    assert [(a.index, [r.run_id for r in a.requests], a.gpus, a.time_minutes) for a in arrays] == [
        (4, ["a", "b"], 1, 30), (5, ["c", "d"], 2, None), (6, ["e"], 1, 7)]
    assert plan.sizes == [2, 2, 1] and not plan.waves
    arrays, plan = plan_requests(requests[:2], Limits(room=1), first_index=0)
    assert [len(a.requests) for a in arrays] == [1, 1] and plan.waves


def write_json_atomic_dir(folder: Path, data) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "manifest.json", data)


# ---- the command line ---------------------------------------------------------------------------

@pytest.fixture
def quadratic(tmp_path):
    return copy_example("quadratic", tmp_path)


def test_adaptive_searches_are_refused_and_nothing_is_created(quadratic, tmp_path):
    root = tmp_path / "runs"
    done = cli("sweep", str(quadratic / "adaptive.yaml"), "--root", str(root))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "needs the driver: use `hpo-slurm launch" in done.stderr
    assert not root.exists()


def test_dry_run_prints_quoted_scripts_and_creates_nothing(quadratic, tmp_path):
    marker = tmp_path / "pwned"
    hostile = HOSTILE.format(marker=marker)
    config = write_config(quadratic / "grid.yaml", quadratic / "hostile.yaml", name="hostile",
                          hyperparameters={"activation": {"type": "categorical", "vals": ["relu", hostile]}},
                          slurm={"setup": ["module load python"]})
    root = tmp_path / "my runs"
    done = cli("sweep", str(config), "--root", str(root), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert not root.exists() and not marker.exists()
    out = done.stdout
    scripts = out.split("# ---- manifests")[0]
    arrays = re.findall(r"#SBATCH --array=0-(\d+)", scripts)  # one array unless the cluster's MaxArraySize is low
    assert sum(int(last) + 1 for last in arrays) == 24 and "module load python" in scripts
    assert f"'{root / 'hostile' / 'jobs' / 'array-0' / 'manifest.json'}'" in scripts  # quoted: the root has a space
    assert "pwned" not in scripts and "rm -rf" not in scripts  # hyperparameters stay in the manifests
    assert out.count("# array-0 task ") == 24 and json.dumps(hostile) in out


def test_a_bad_user_template_is_one_line_and_exit_2(quadratic, tmp_path):
    template = tmp_path / "mine.sbatch"
    template.write_text("#!/bin/bash\n#SBATCH --array=$array\n$command --hp=$learning_rate\n")
    config = write_config(quadratic / "grid.yaml", quadratic / "mine.yaml", slurm={"array_template": str(template)})
    root = tmp_path / "runs"
    done = cli("sweep", str(config), "--root", str(root), "--dry-run")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "unknown placeholder $learning_rate" in done.stderr and str(template) in done.stderr
    assert not root.exists()


def test_resubmit_needs_a_sweep(quadratic, tmp_path):
    root = tmp_path / "runs"
    done = cli("launch", str(quadratic / "single.yaml"), "--root", str(root), "--executor", "local",
               "--name", "driven", env={"HPO_SLURM_ROOT": ""})
    assert done.returncode == 0, done.stderr
    done = cli("sweep", "--resubmit", "driven", "--root", str(root))
    assert done.returncode == 2 and "is not a sweep" in done.stderr
    done = cli("sweep", "--resubmit", "nope", "--root", str(root))
    assert done.returncode == 2 and "no experiment named 'nope'" in done.stderr
