"""The pieces of submitit below its public API that hpo-slurm relies on, checked against the installed
release: pyproject.toml bounds submitit below its next minor release, and this file says whether a new
one still fits before the bound moves.

hpo-slurm uses:
- the task side (``hpo_slurm.tasks.slurm_task``): ``JobEnvironment().job_id`` and ``.paths``,
  ``JobPaths(folder, job_id).submitted_pickle`` / ``.stdout`` / ``.stderr``, ``process_job(folder)``,
  which loads ``<job id>_submitted.pkl`` and writes ``<job id>_<task>_result.pkl``;
- the Slurm executor (``hpo_slurm.executors.slurm.executor.BatchExecutor``): a ``SlurmExecutor``
  subclass that writes ``DelayedSubmission`` pickles itself (``set_timeout``, cloudpickle) and calls
  ``_submit_command`` with its own command; ``_make_submission_file_text`` for ``sbatch --test-only``;
  ``parameters["map_count"]`` for arrays; the sbatch options hpo-slurm passes to ``update_parameters``;
- the local executor (``hpo_slurm.executors.local``): a ``LocalExecutor`` subclass that starts
  ``python -m submitit.local._local FOLDER`` itself with the ``SUBMITIT_LOCAL_*`` variables, builds a
  ``LocalJob(folder, job_id, process, tasks)``, reads ``job._process`` and finds jobs by the
  ``<pid>_submitted.pkl`` name; ``hpo-slurm logs`` reads ``*_log.out`` / ``*_log.err``.

No cluster is needed: sbatch is replaced by a command that prints what sbatch prints, and tasks run
as local processes with the environment variables Slurm or submitit's local controller would set.
"""

from __future__ import annotations

import importlib.util
import inspect
import operator
import pickle
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import List

import cloudpickle
import pytest
import submitit
from submitit.core import job_environment, submission, utils
from submitit.local import local as submitit_local

from driver_helpers import EXAMPLES, write_config
from helpers_spec import job_env
from hpo_slurm.config.schema import load_config
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.executors.base import JobRequest
from hpo_slurm.executors.local import LocalExecutor, _DetachedLocalExecutor
from hpo_slurm.executors.slurm.executor import BatchExecutor, SlurmExecutor
from hpo_slurm.reporting.logs import run_log_files
from hpo_slurm.tasks.slurm_task import SHARED_PICKLE

FAKE_SBATCH_JOB = "4242"


def parameter_names(function) -> List[str]:
    return list(inspect.signature(function).parameters)


# ---- names and signatures ----------------------------------------------------------------------------
@pytest.mark.parametrize("function, expected", [
    (submission.process_job, ["folder"]),
    (utils.JobPaths.__init__, ["self", "folder", "job_id", "task_id"]),
    (utils.DelayedSubmission.__init__, ["self", "function", "args", "kwargs"]),
    (utils.DelayedSubmission.set_timeout, ["self", "timeout_min", "max_num_timeout"]),
    (utils.DelayedSubmission.result, ["self"]),
    (job_environment.JobEnvironment.__init__, ["self"]),
    (submitit.SlurmExecutor._submit_command, ["self", "command"]),
    (submitit.SlurmExecutor._make_submission_file_text, ["self", "command", "uid"]),
    (submitit.LocalExecutor._submit_command, ["self", "command"]),
    (submitit_local.LocalJob.__init__, ["self", "folder", "job_id", "tasks", "process"]),
    (submitit_local.Controller.__init__, ["self", "folder"]),
], ids=lambda value: getattr(value, "__qualname__", None) if callable(value) else None)
def test_private_functions_keep_their_parameters(function, expected):
    assert parameter_names(function) == expected


def test_executor_constructors_take_the_folder_and_the_timeouts_to_requeue():
    for executor_class in (submitit.SlurmExecutor, submitit.LocalExecutor):
        assert parameter_names(executor_class.__init__)[:3] == ["self", "folder", "max_num_timeout"]


def test_the_command_a_job_runs_is_a_property_both_executors_define():
    for executor_class in (submitit.SlurmExecutor, submitit.LocalExecutor):
        assert isinstance(inspect.getattr_static(executor_class, "_submitit_command_str"), property)
    assert isinstance(inspect.getattr_static(submitit.LocalExecutor, "_valid_parameters"), classmethod)
    assert isinstance(submitit.LocalExecutor._valid_parameters(), set)


# ---- file names ---------------------------------------------------------------------------------------
def test_job_paths_name_the_files_hpo_slurm_reads_and_links(tmp_path):
    layout = ExperimentLayout(tmp_path / "exp")
    run_dir = layout.run_dir("t1-r1")
    run_dir.mkdir(parents=True)
    lone = utils.JobPaths(run_dir, job_id="812")
    assert lone.submitted_pickle == run_dir / "812_submitted.pkl"  # the local executor's find() reads the pid
    assert lone.result_pickle == run_dir / "812_0_result.pkl"
    assert lone.stdout == run_dir / "812_0_log.out"
    assert lone.stderr == run_dir / "812_0_log.err"
    task = utils.JobPaths(tmp_path, job_id=f"{FAKE_SBATCH_JOB}_3", task_id=0)
    assert task.submitted_pickle == tmp_path / f"{FAKE_SBATCH_JOB}_3_submitted.pkl"
    assert task.stdout == tmp_path / f"{FAKE_SBATCH_JOB}_3_0_log.out"
    assert task.result_pickle == tmp_path / f"{FAKE_SBATCH_JOB}_3_0_result.pkl"
    # hpo-slurm logs finds a run's output files by these suffixes
    for path in (lone.stdout, lone.stderr):
        path.touch()
    assert run_log_files(layout, "t1-r1") == [lone.stdout, lone.stderr]


# ---- the job environment ------------------------------------------------------------------------------
SLURM_ARRAY_TASK_ENV = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4245", "SLURM_ARRAY_JOB_ID": FAKE_SBATCH_JOB,
                        "SLURM_ARRAY_TASK_ID": "3", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                        "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1"}


def test_a_task_of_a_slurm_array_is_named_array_underscore_index(tmp_path, monkeypatch):
    for name, value in SLURM_ARRAY_TASK_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path))
    environment = job_environment.JobEnvironment()
    assert environment.job_id == f"{FAKE_SBATCH_JOB}_3"
    assert environment.paths.stdout == tmp_path / f"{FAKE_SBATCH_JOB}_3_0_log.out"
    assert environment.paths.stderr == tmp_path / f"{FAKE_SBATCH_JOB}_3_0_log.err"
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert job_environment.JobEnvironment().job_id == "4245"  # a lone job


def test_a_local_job_is_named_by_its_controller_pid(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "31337")
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path))
    environment = job_environment.JobEnvironment()
    assert environment.job_id == "31337"
    assert environment.paths.submitted_pickle == tmp_path / "31337_submitted.pkl"


# ---- process_job, for real ----------------------------------------------------------------------------
def write_batch_pickle(folder: Path, delayed: utils.DelayedSubmission) -> None:
    """``task.pkl`` as ``BatchExecutor.write_shared_pickle`` writes it: cloudpickle of a timed DelayedSubmission."""
    folder.mkdir(parents=True, exist_ok=True)
    delayed.set_timeout(5, 0)
    (folder / SHARED_PICKLE).write_bytes(cloudpickle.dumps(delayed))


def run_slurm_task(folder: Path, index: int) -> subprocess.CompletedProcess:
    """``python -u -m hpo_slurm.tasks.slurm_task FOLDER`` with the variables Slurm sets for task ``index``."""
    env = job_env()
    env.update(SLURM_ARRAY_TASK_ENV, SLURM_JOB_ID=str(int(FAKE_SBATCH_JOB) + index), SLURM_ARRAY_TASK_ID=str(index))
    return subprocess.run([sys.executable, "-u", "-m", "hpo_slurm.tasks.slurm_task", str(folder)], env=env,
                          capture_output=True, text=True, timeout=120)


def result_pickle(folder: Path, job_id: str):
    return pickle.loads(utils.JobPaths(folder, job_id=job_id).result_pickle.read_bytes())


def test_process_job_runs_the_batch_pickle_and_writes_the_result_pickle(tmp_path):
    folder = tmp_path / "jobs" / "hpo.batch"
    write_batch_pickle(folder, utils.DelayedSubmission(operator.mul, 6, 7))
    done = run_slurm_task(folder, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result_pickle(folder, f"{FAKE_SBATCH_JOB}_2") == ("success", 42)


def test_process_job_records_an_error_and_fails_the_process(tmp_path):
    folder = tmp_path / "jobs" / "hpo.batch"
    write_batch_pickle(folder, utils.DelayedSubmission(int, "not a number"))
    done = run_slurm_task(folder, 0)
    assert done.returncode != 0
    outcome, trace = result_pickle(folder, f"{FAKE_SBATCH_JOB}_0")
    assert outcome == "error" and "ValueError" in trace


# ---- the Slurm executor's submission, with sbatch replaced --------------------------------------------
@pytest.fixture
def fake_sbatch(monkeypatch):
    """``SlurmExecutor`` without a cluster: srun counts as present and "sbatch" prints what sbatch prints."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit.SlurmExecutor, "_make_submission_command",
                        lambda self, path: ["echo", f"Submitted batch job {FAKE_SBATCH_JOB}"])


def full_config(tmp_path: Path):
    """An experiment config that sets every ``slurm:`` option hpo-slurm turns into a submitit parameter."""
    path = write_config(EXAMPLES / "quadratic" / "random.yaml", tmp_path / "full.yaml", slurm={
        "partition": "debug", "account": "lab", "qos": "normal", "time": 30, "cpus_per_task": 2, "mem": "2G",
        "constraint": "fast", "gpu_type": "a100", "setup": ["module load cuda"], "extra_args": {"exclusive": True},
    })
    return load_config(str(path))


def test_every_sbatch_parameter_hpo_slurm_passes_is_accepted(tmp_path, fake_sbatch):
    config = full_config(tmp_path)
    request = JobRequest("t1-r1", "hpo.x.t1-r1", tmp_path / "run", tmp_path / "run" / "spec.json", gpus=2,
                         time_minutes=30)
    # sbatch_parameters reads only the config: no cluster is asked
    parameters = SlurmExecutor.sbatch_parameters(SimpleNamespace(config=config), request, "hpo.x.batch", 3)
    executor = BatchExecutor(folder=tmp_path / "batch", max_num_timeout=0)
    executor.update_parameters(**parameters)  # submitit refuses unknown names with a ValueError
    executor.parameters["map_count"] = 3
    text = executor._make_submission_file_text("the-command", "uid")
    for line in ("#SBATCH --partition=debug", "#SBATCH --account=lab", "#SBATCH --qos=normal", "#SBATCH --time=30",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --mem=2G", "#SBATCH --constraint=fast",
                 "#SBATCH --gpus-per-node=a100:2", "#SBATCH --exclusive", "#SBATCH --requeue",
                 "#SBATCH --job-name=hpo.x.batch", "#SBATCH --array=0-2%3", "module load cuda",
                 "export SUBMITIT_EXECUTOR=slurm"):
        assert line in text.splitlines(), f"{line!r} not in the script:\n{text}"
    signal_delay = config.slurm.signal_delay_s
    assert f"#SBATCH --signal=USR2@{signal_delay}" in text.splitlines()


def test_the_script_writes_each_task_s_output_where_the_task_links_it_from(tmp_path, fake_sbatch):
    folder = tmp_path / "batch"
    executor = BatchExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(job_name="hpo.x.batch", time=5, stderr_to_stdout=False)
    executor.parameters["map_count"] = 2
    lines = executor._make_submission_file_text("the-command", "uid").splitlines()
    options = dict(line[len("#SBATCH --"):].split("=", 1) for line in lines if line.startswith("#SBATCH --") and "=" in line)
    command = shlex.split(lines[-1])
    assert command[0] == "srun" and command[-1] == "the-command"
    step_files = {"output": command[command.index("--output") + 1], "error": command[command.index("--error") + 1]}
    # Slurm expands %A (the array), %a (the task of the array) and, for srun, %t (the step's task); the
    # task computes the same names from JobPaths and links them into its run's folder
    task = utils.JobPaths(folder, job_id=f"{FAKE_SBATCH_JOB}_1", task_id=0)
    for option, expected in (("output", task.stdout), ("error", task.stderr)):
        for pattern in (options[option], step_files[option]):
            expanded = pattern.replace("%A", FAKE_SBATCH_JOB).replace("%a", "1").replace("%t", "0")
            assert expanded == str(expected)


def test_submit_batch_writes_one_pickle_and_names_the_array_tasks(tmp_path, fake_sbatch):
    folder = tmp_path / "batch"
    folder.mkdir()
    executor = BatchExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(job_name="hpo.x.batch", time=7)
    job_ids = executor.submit_batch(utils.DelayedSubmission(operator.mul, 6, 7), 3)
    assert job_ids == [f"{FAKE_SBATCH_JOB}_{index}" for index in range(3)]
    # submitit keeps the rendered script under the job's name
    script = utils.JobPaths(folder, job_id=FAKE_SBATCH_JOB).submission_file.read_text()
    assert "#SBATCH --array=0-2%3" in script and "-m hpo_slurm.tasks.slurm_task" in script
    delayed = utils.DelayedSubmission.load(folder / SHARED_PICKLE)
    assert delayed._timeout_min == 7 and delayed.result() == 42
    # a task of that array runs it through process_job
    done = run_slurm_task(folder, 1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result_pickle(folder, f"{FAKE_SBATCH_JOB}_1") == ("success", 42)


# ---- the local executor's controller ------------------------------------------------------------------
def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)
    process.wait(timeout=timeout)


def test_the_local_controller_runs_the_pickle_named_by_its_pid(tmp_path):
    folder = tmp_path / "run"
    executor = _DetachedLocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=5, signal_delay_s=2, cuda_devices="")
    job = executor.submit(operator.mul, 6, 7)
    process = job._process
    assert isinstance(process, subprocess.Popen) and job.job_id == str(process.pid)
    # LocalExecutor.find reads the pid back from the pickle's name
    assert (folder / f"{job.job_id}_submitted.pkl").exists()
    request = JobRequest("t1-r1", "hpo.x.t1-r1", folder, folder / "spec.json", gpus=0)
    assert LocalExecutor(gpus=0).find([request]) == {"t1-r1": job.job_id}
    wait_for_file(utils.JobPaths(folder, job_id=job.job_id).result_pickle, process)
    assert process.returncode == 0
    assert result_pickle(folder, job.job_id) == ("success", 42)
    assert utils.JobPaths(folder, job_id=job.job_id).stdout.exists()


def test_the_local_controller_reads_the_variables_hpo_slurm_sets():
    """``_DetachedLocalExecutor._submit_command`` starts the controller itself: the variables it sets
    are the ones the controller (and the local job environment) read."""
    assert importlib.util.find_spec("submitit.local._local") is not None  # python -m submitit.local._local
    source = inspect.getsource(submitit_local.Controller.__init__)
    for name in ("SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_COMMAND", "SUBMITIT_LOCAL_TIMEOUT_S",
                 "SUBMITIT_LOCAL_SIGNAL_DELAY_S", "SUBMITIT_STDERR_TO_STDOUT", "SUBMITIT_LOCAL_WITH_SHELL"):
        assert f'os.environ["{name}"]' in source, f"submitit's local controller no longer reads {name}"
    read_by_the_job = set(submitit_local.LocalJobEnvironment._env.values())
    assert {"SUBMITIT_LOCAL_JOB_ID", "SUBMITIT_LOCAL_NODEID", "SUBMITIT_LOCAL_JOB_NUM_NODES"} <= read_by_the_job
