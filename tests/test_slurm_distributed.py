"""Trials of several ranks on a real two-node Slurm cluster (two slurmd on this machine, 2 fake GPUs
each): ranks over both nodes, preemption of every rank at one step, a rank's failure, a node going
DOWN, and an adaptive_asha search of distributed trials. Needs root and `scripts/local-slurm.sh`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from driver_helpers import REPO, cli, start_cli, status, wait_for
from helpers_spec import trial_metrics
from slurm_cluster import multi_node_cluster, require_cluster, slurm, wait_until_idle

pytestmark = pytest.mark.slurm

PROBE = Path(__file__).resolve().parent / "trials" / "ranks_probe.py"
SLURM = {"partition": "debug", "poll_interval": 1, "time": 10, "mem": "400M", "gpus_per_node": 2}


@pytest.fixture(scope="module")
def two_nodes():
    require_cluster()
    with multi_node_cluster(nodes=2, gpus=2):
        yield


@pytest.fixture(autouse=True)
def idle(two_nodes):
    wait_until_idle()
    yield
    subprocess.run(["scancel", "--user", "root"], capture_output=True)
    wait_until_idle()


def probe_config(folder: Path, name: str, slots: int = 4, searcher=None, **changes) -> Path:
    """A search of ``ranks_probe.py`` trials of ``slots`` ranks, in its own model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROBE, folder / PROBE.name)
    config = {
        "name": name, "entrypoint": "python3 ranks_probe.py", "max_restarts": 2,
        "hyperparameters": {"x": {"type": "double", "minval": -1, "maxval": 1}, "sleep": 0.1},
        "searcher": {"name": "random", "metric": "validation_loss", "smaller_is_better": True, "max_trials": 1,
                     "max_length": {"batches": 20}, **(searcher or {})},
        "resources": {"slots_per_trial": slots}, "slurm": dict(SLURM),
    }
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def probes(run_dir: Path) -> dict:
    return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in (run_dir / "probe").glob("rank-*.json")}


def probe_processes() -> list:
    done = subprocess.run(["pgrep", "-f", "ranks_probe.py"], capture_output=True, text=True)
    return done.stdout.split()


def preempt_once_trained(driver: subprocess.Popen, root: Path, name: str, trained) -> None:
    """Once ``trained()``, take both nodes with an urgent job; the search must then finish with its
    one trial preempted at least once and never failed."""
    wait_for(trained, timeout=300, interval=0.5, what="the ranks to train")
    slurm("sbatch", "-p", "urgent", "-N", "2", "--gres=gpu:2", "-J", "urgent-preemptor", "-o", "/dev/null",
          "--wrap", "sleep 5")
    out, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err[-3000:]
    (trial,) = status(root, name)["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 0 and trial["preemptions"] >= 1


def test_four_ranks_over_two_nodes_train_and_record_each_length_once(tmp_path):
    config = probe_config(tmp_path / "model", "spread")
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = status(root, "spread")
    (trial,) = summary["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 0
    assert len(trial["runs"]) == 1
    (run_dir,) = (root / "spread" / "runs").iterdir()
    seen = probes(run_dir)
    assert sorted(seen) == [0, 1, 2, 3]
    nodes = {rank: record["env"]["SLURMD_NODENAME"] for rank, record in seen.items()}
    assert nodes == {0: "node1", 1: "node1", 2: "node2", 3: "node2"}
    for rank, record in seen.items():
        env = record["env"]
        assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"], env["NODE_RANK"]) == \
            (str(rank), str(rank % 2), "4", "2", str(rank // 2))
        assert record["steps"] == list(range(1, 21)) and record["finished"]  # every step's all_reduce saw 4 ranks
    assert len({record["env"]["MASTER_PORT"] for record in seen.values()}) == 1
    lengths = [(m["kind"], m["length"]) for m in trial_metrics(root / "spread")]
    assert lengths == [("training", n) for n in range(1, 21)] + [("validation", 20)]
    attempt = json.loads((run_dir / "attempts.jsonl").read_text().splitlines()[-1])
    # the job asked for 2 nodes of 2 ranks and 2 GPUs; its own process (no srun) launched the ranks
    (script,) = (root / "spread" / "jobs").glob("*/*_submission.sh")
    text = script.read_text()
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --gpus-per-node=2"} <= set(text.splitlines())
    assert "srun" not in text
    assert attempt["nodes"] == ["node1", "node2"]
    assert summary["job_hours"] > 0 and summary["gpu_hours"] == pytest.approx(4 * summary["job_hours"])
    assert probe_processes() == []


def test_preempted_ranks_all_stop_at_one_step_and_resume_to_the_uninterrupted_result(tmp_path):
    config = probe_config(tmp_path / "model", "preempted", hyperparameters={"sleep": 0.3},
                          searcher={"max_length": {"batches": 60}})
    root = tmp_path / "runs"
    driver = start_cli("launch", str(config), "--root", str(root), "--executor", "slurm")
    experiment = root / "preempted"

    def trained(steps):
        runs = list(experiment.glob("runs/*/probe"))
        return runs and all(len(r["steps"]) >= steps for r in probes(runs[0].parent).values()) \
            and len(probes(runs[0].parent)) == 4

    preempt_once_trained(driver, root, "preempted", lambda: trained(5))
    # the run or attempt that was preempted: every rank stopped at the same step
    stops = [json.loads(line) for path in sorted(experiment.glob("runs/*/probe/stops.jsonl"))
             for line in path.read_text().splitlines()]
    first = stops[:4]
    assert sorted(s["rank"] for s in first) == [0, 1, 2, 3]
    assert len({s["step"] for s in first}) == 1 and first[0]["reason"] == "preempted", stops
    # the resumed ranks start after the checkpoint and finish; every length is validated once
    last_run = sorted(experiment.glob("runs/*/probe"), key=lambda p: int(p.parent.name.split("-r")[1]))[-1]
    final = probes(last_run.parent)
    assert all(r["finished"] and r["resumed_shards"] == ["shard-0", "shard-1", "shard-2", "shard-3"]
               for r in final.values())
    assert all(r["steps"][0] == first[0]["step"] + 1 and r["steps"][-1] == 60 for r in final.values())
    validations = [m for m in trial_metrics(experiment) if m["kind"] == "validation"]
    assert [m["length"] for m in validations] == [60]
    assert probe_processes() == []


def test_a_rank_that_exits_1_fails_the_run_once_and_leaves_no_process(tmp_path):
    config = probe_config(tmp_path / "model", "flaky", hyperparameters={"sleep": 0.2, "fail_rank": 3, "fail_step": 4,
                                                                        "fail_once": True})
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (trial,) = status(root, "flaky")["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 1
    assert [r["state"] for r in trial["runs"]] == ["FAILED", "SUCCEEDED"]
    assert "rank 3" in trial["runs"][0]["reason"], trial["runs"][0]
    assert probe_processes() == []


def test_a_node_set_down_mid_run_is_resumed_from_the_checkpoint_and_not_counted_as_a_failure(tmp_path):
    config = probe_config(tmp_path / "model", "downed", hyperparameters={"sleep": 0.3, "checkpoint_every": 4},
                          searcher={"max_length": {"batches": 40}})
    root = tmp_path / "runs"
    driver = start_cli("launch", str(config), "--root", str(root), "--executor", "slurm")
    experiment = root / "downed"
    wait_for(lambda: (experiment / "trials" / "1" / "checkpoints" / "length-000000008").is_dir(), timeout=180,
             interval=0.5, what="a checkpoint at length 8")
    slurm("scontrol", "update", "nodename=node2", "state=DOWN", "reason=hpo-slurm test")
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    (trial,) = status(root, "downed")["trials"]
    assert trial["state"] == "COMPLETED" and trial["restarts"] == 0
    assert len(trial["runs"]) == 1  # Slurm requeued the run's own job: no second run beside it
    final = probes(max(experiment.glob("runs/*"), key=lambda p: int(p.name.split("-r")[1])))
    assert all(r["finished"] and r["steps"][-1] == 40 for r in final.values())
    assert all(r["resumed_shards"] == ["shard-0", "shard-1", "shard-2", "shard-3"] and r["steps"][0] > 8
               for r in final.values())
    assert [m["length"] for m in trial_metrics(experiment) if m["kind"] == "validation"] == [40]
    attempts = [json.loads(line) for path in experiment.glob("runs/*/attempts.jsonl")
                for line in path.read_text().splitlines()]
    assert len(attempts) >= 2  # the job was started again after the node failed
    assert probe_processes() == []


@pytest.mark.parametrize("pool", [None, {"workers": 2, "idle_timeout": 30}], ids=["job-per-run", "pool"])
def test_adaptive_asha_promotes_distributed_trials_from_their_checkpoints(tmp_path, pool):
    """Also with a pool of workers (slurm.pool): each worker job spans the two nodes a trial needs."""
    config = probe_config(
        tmp_path / "model", "asha", slots=2,
        searcher={"name": "adaptive_asha", "max_trials": 4, "max_length": {"batches": 16}, "max_rungs": 2,
                  "divisor": 4, "mode": "aggressive", "max_concurrent_trials": 2},
        slurm={"gpus_per_node": 1, "pool": pool})  # 2 ranks on 2 nodes: two trials at once on the 2 x 2 GPUs
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = status(root, "asha")
    assert summary["state"] == "COMPLETED" and len(summary["trials"]) == 4
    experiment = root / "asha"
    promoted = [t for t in summary["trials"] if len(t["runs"]) > 1]
    assert promoted, "no trial was promoted"
    for trial in summary["trials"]:
        validations = [m["length"] for m in trial_metrics(experiment, trial["id"]) if m["kind"] == "validation"]
        assert len(validations) == len(set(validations))  # each length validated once
    for trial in promoted:
        continuation = max(experiment.glob(f"runs/t{trial['id']}-r*"), key=lambda p: int(p.name.split("-r")[1]))
        seen = probes(continuation)
        assert sorted(seen) == [0, 1]
        assert {r["env"]["SLURMD_NODENAME"] for r in seen.values()} == {"node1", "node2"}
        assert all(r["resumed_shards"] == ["shard-0", "shard-1"] and r["steps"][0] == 5 and r["finished"]
                   for r in seen.values())
    if pool:  # every run went to one of at most a few worker jobs, each holding 2 nodes of 1 GPU
        runs = [r for t in summary["trials"] for r in t["runs"]]
        assert all(r["job_id"] == f"pool:{r['run_id']}" for r in runs)
        workers = json.loads((experiment / "pool" / "workers.json").read_text())["workers"]
        assert 2 <= len(workers) <= 3 < len(runs) + 1, workers
        scripts = list(experiment.glob("pool/jobs/*/*_submission.sh"))
        assert scripts and all({"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=1"}
                               <= set(p.read_text().splitlines()) for p in scripts)
        assert not (experiment / "jobs").exists()


def test_ddp_digits_preempted_on_two_nodes_ends_bit_for_bit_as_an_uninterrupted_run(tmp_path):
    """The DDP example, 4 ranks over 2 nodes, preempted by the urgent partition mid-run: every rank
    stops at one step, the job resumes from the checkpoint, and the validation metrics equal those of
    the same trial trained without interruption (4 local ranks) to the last bit."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    model = tmp_path / "digits"
    shutil.copytree(REPO / "examples" / "digits", model, ignore=shutil.ignore_patterns("hpo-runs", "__pycache__"))
    base = yaml.safe_load((model / "dist_random.yaml").read_text())
    base["searcher"].update(max_trials=1, max_length={"batches": 60})
    base["resources"] = {"slots_per_trial": 4}
    base["data"] = {**base.get("data", {}), "report_every": 10}

    def write(name, **changes):
        config = {**base, "name": name, **changes}
        path = model / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    root = tmp_path / "runs"
    reference = write("reference")
    done = cli("launch", str(reference), "--root", str(root), "--executor", "local", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    preempted = write("preempted", slurm={**SLURM, "mem": "1G"}, data={**base["data"], "sleep_per_batch": 0.3})
    driver = start_cli("launch", str(preempted), "--root", str(root), "--executor", "slurm")
    metrics_file = root / "preempted" / "trials" / "1" / "metrics.jsonl"
    preempt_once_trained(driver, root, "preempted",
                         lambda: metrics_file.exists() and metrics_file.read_text().count("training") >= 2)

    def validations(name):
        lines = [json.loads(line) for line in (root / name / "trials" / "1" / "metrics.jsonl").read_text().splitlines()]
        return [(m["length"], m["metrics"]) for m in lines if m["kind"] == "validation"]

    assert validations("preempted") == validations("reference")
    assert probe_processes() == [] and not subprocess.run(["pgrep", "-f", "train_ddp.py"]).returncode == 0


def test_a_sweep_of_distributed_trials_runs_each_as_ranks_over_both_nodes(tmp_path):
    config = probe_config(tmp_path / "model", "swept", searcher={"name": "grid", "max_trials": 2, "max_length": {"batches": 6}},
                          hyperparameters={"x": {"type": "categorical", "vals": [0.5, -0.5]}})
    root = tmp_path / "runs"
    done = cli("sweep", str(config), "--root", str(root), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    script = (root / "swept" / "jobs" / "array-0" / "array.sbatch").read_text().splitlines()
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --gres=gpu:2"} <= set(script)

    def finished():
        summary = status(root, "swept")
        return summary if all(r["state"] not in ("SUBMITTED", "RUNNING")
                              for t in summary["trials"] for r in t["runs"]) else None

    summary = wait_for(finished, timeout=300, interval=2, what="the sweep's trials to end")
    assert [t["state"] for t in summary["trials"]] == ["COMPLETED", "COMPLETED"]
    for run_dir in (root / "swept" / "runs").iterdir():
        seen = probes(run_dir)
        assert {r["env"]["SLURMD_NODENAME"] for r in seen.values()} == {"node1", "node2"}
        assert sorted(seen) == [0, 1, 2, 3] and all(r["finished"] for r in seen.values())


@pytest.mark.parametrize("changes, message", [
    ({"resources": {"slots_per_trial": 3}},
     "resources.slots_per_trial: 3 GPUs cannot be split over whole nodes of 2 GPUs"),
    ({"slurm": {"gpus_per_node": 4}},
     "slurm.gpus_per_node: 4, but the nodes of partition debug have at most 2 GPUs"),
])
def test_a_trial_the_partitions_nodes_cannot_hold_is_refused_before_anything_exists(tmp_path, changes, message):
    slurm_section = {key: value for key, value in SLURM.items() if key != "gpus_per_node"}
    config = probe_config(tmp_path / "model", "refused", slurm=slurm_section)
    data = yaml.safe_load(config.read_text())
    data["slurm"] = slurm_section
    for key, value in changes.items():
        data[key] = {**data[key], **value}
    config.write_text(yaml.safe_dump(data))
    root = tmp_path / "runs"
    done = cli("launch", str(config), "--root", str(root), "--executor", "slurm", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"hpo-slurm: {config}: {message}"), done.stderr
    assert not (root / "refused").exists()
