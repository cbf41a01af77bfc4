"""Benchmark 7: distributed trials on the real local Slurm cluster: start-up of a trial of 4 ranks over
2 nodes against a trial of 1 rank, and what each costs the driver.

The cluster is switched to 2 nodes x 2 fake GPUs (``scripts/local-slurm.sh up --nodes 2 --gpus 2``)
for the measurement and back to the default one-node cluster afterwards, also after a failure or
Ctrl-C. Per number of ranks, ONE search is launched with the real command line
(``python -m hpo_slurm.cli launch CONFIG --root DIR --executor slurm``): random searcher,
``max_trials`` = ``--trials``, ``max_concurrent_trials: 1`` (one job at a time, so every trial has
the cluster to itself), ``max_length: {batches: --length}``, ``slurm.gpus_per_node: 2``;
``resources.slots_per_trial`` 1 or 4 (4: 2 nodes x 2 ranks, one srun step). The trial (written into
the model folder from TRIAL below) imports torch, calls ``hpo_slurm.torch.init_distributed(ctx)``
(gloo on CPU), reports training at step 1 at once, then steps in lockstep (``should_stop`` is a
collective) and reports validation at its target.

Measured per run (each trial is one run, one job):
* job start -> first report: ``runs/<run>/attempts.jsonl`` first line ``time`` (the job's own
  process started) to the first line of ``trials/<id>/metrics.jsonl`` (rank 0's report at step 1);
  also from Slurm's start time (``sacct -X -o Start``, whole seconds);
* milestones of the ranks (the trial writes ``runs/<run>/timing/rank-<k>.json``): the last rank's
  script started, the last rank has imported torch, rank 0 has joined the process group;
* the driver: CPU seconds of the ``launch`` process and everything it ran (``getrusage(
  RUSAGE_CHILDREN)`` around it), divided by the runs; the Slurm commands it ran, counted by a PATH
  shim (``sbatch``, ``sacct``, ``squeue``, ``sinfo``, ``scontrol``, ``scancel``: each runs the real
  command from /usr/bin, then logs its name, exit status and CPU, its own shell's included; inside a
  job the shim only execs the real command). The driver's own Python CPU is the rest.

    python benchmarks/distributed.py                  # 6 trials of each, 5 batches each
    python benchmarks/distributed.py --trials 3 --keep
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, save, table  # noqa: E402
from slurm_shim import cluster, install_shims, read_shim_log, slurm_text, wait_idle  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SLURM = {"partition": "debug", "poll_interval": 1, "time": 10, "mem": "400M", "gpus_per_node": 2}

TRIAL = '''\
"""Start-up probe: import torch, join the process group, report at step 1 at once, then a few steps."""
import time
T_SCRIPT = time.time()
import json
import os
from pathlib import Path

from hpo_slurm import trial

ctx = trial.init()
import torch
T_IMPORTED = time.time()
from hpo_slurm.torch import close_distributed, init_distributed

torch.set_num_threads(1)
init_distributed(ctx)
T_JOINED = time.time()
ctx.report_training(1, {"loss": 1.0})
T_REPORTED = time.time()
timing = Path(ctx.spec["experiment_dir"]) / "runs" / ctx.run_id / "timing"
timing.mkdir(parents=True, exist_ok=True)
(timing / f"rank-{ctx.rank}.json").write_text(json.dumps(
    {"rank": ctx.rank, "pid": os.getpid(), "node": os.environ.get("SLURMD_NODENAME"), "script": T_SCRIPT,
     "imported": T_IMPORTED, "joined": T_JOINED, "reported": T_REPORTED}))
for step in range(2, ctx.target_length + 1):
    time.sleep(float(ctx.hparams.get("sleep", 0.05)))
    if ctx.should_stop():
        break
    ctx.report_training(step, {"loss": 1.0 / step})
else:
    ctx.report_validation(ctx.target_length, {"validation_loss": float(ctx.hparams["x"]) ** 2})
close_distributed()
'''

def write_search(folder: Path, name: str, slots: int, trials: int, length: int, sleep: float) -> Path:
    model = folder / f"model-{name}"
    model.mkdir(parents=True)
    (model / "startup_probe.py").write_text(TRIAL)
    config = {
        "name": name, "entrypoint": "python3 startup_probe.py", "max_restarts": 0,
        "hyperparameters": {"x": {"type": "double", "minval": -1, "maxval": 1}, "sleep": sleep},
        "searcher": {"name": "random", "metric": "validation_loss", "smaller_is_better": True,
                     "max_trials": trials, "max_concurrent_trials": 1, "max_length": {"batches": length}},
        "resources": {"slots_per_trial": slots}, "slurm": dict(SLURM),
    }
    path = model / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def first_line(path: Path) -> Optional[Dict[str, Any]]:
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as handle:
        line = handle.readline()
    return json.loads(line) if line.strip() else None


def slurm_start(job_id: str) -> Optional[float]:
    text = slurm_text("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "Start").strip().splitlines()
    try:
        return time.mktime(datetime.datetime.strptime(text[0], "%Y-%m-%dT%H:%M:%S").timetuple())
    except (IndexError, ValueError):
        return None


def read_runs(experiment: Path) -> List[Dict[str, Any]]:
    runs = []
    for run_dir in sorted(experiment.glob("runs/*"), key=lambda p: p.stat().st_mtime):
        attempt = first_line(run_dir / "attempts.jsonl")
        spec = json.loads((run_dir / "spec.json").read_text())
        trial_id = spec["trial_id"]
        metrics = experiment / "trials" / str(trial_id) / "metrics.jsonl"
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
        mine = [m for m in lines if m.get("run") == run_dir.name]
        ranks = [json.loads(p.read_text()) for p in (run_dir / "timing").glob("rank-*.json")]
        entry: Dict[str, Any] = {"run": run_dir.name, "trial": trial_id, "reports": len(mine),
                                 "validated": any(m["kind"] == "validation" for m in mine)}
        if attempt is None or not mine:
            runs.append(entry)
            continue
        start, first = float(attempt["time"]), float(mine[0]["time"])
        entry.update(job_id=attempt["job_id"], nodes=attempt.get("nodes"), job_start=start, first_report=first,
                     to_first_report=first - start, first_kind=mine[0]["kind"], first_length=mine[0]["length"])
        sstart = slurm_start(str(attempt["job_id"]))
        if sstart is not None:
            entry.update(slurm_start=sstart, slurm_to_first_report=first - sstart, slurm_to_job_start=start - sstart)
        if ranks:
            rank0 = min(ranks, key=lambda r: r["rank"])
            entry.update(ranks=len(ranks), rank_nodes=sorted({r["node"] for r in ranks if r["node"]}),
                         to_scripts_started=max(r["script"] for r in ranks) - start,
                         to_torch_imported=max(r["imported"] for r in ranks) - start,
                         to_group_joined=rank0["joined"] - start,
                         torch_import_s=median(r["imported"] - r["script"] for r in ranks))
        runs.append(entry)
    return runs


def stop(name: str, root: Path) -> None:
    """``hpo-slurm stop``: cancel what a search left queued or running."""
    subprocess.run([sys.executable, "-m", "hpo_slurm.cli", "stop", name, "--root", str(root)],
                   capture_output=True, timeout=120, cwd=str(REPO))


def measure(folder: Path, slots: int, trials: int, length: int, sleep: float, shim_dir: Path,
            unfinished: List[str]) -> Dict[str, Any]:
    name = f"dist-bench-{slots}rank-{int(time.time())}"
    config = write_search(folder, name, slots, trials, length, sleep)
    root = folder / "runs"
    unfinished.append(name)
    log = folder / f"{name}-slurm-commands.log"
    command = [sys.executable, "-m", "hpo_slurm.cli", "launch", str(config), "--root", str(root), "--executor", "slurm"]
    env = {**os.environ, "PATH": f"{shim_dir}:{os.environ.get('PATH', '/usr/bin')}", "HPO_BENCH_SLURM_LOG": str(log)}
    print(f"  $ {' '.join(command)}", flush=True)
    before, wall0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60 * (5 + 2 * trials), env=env,
                          cwd=str(REPO))
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (folder / f"{name}-launch.out").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"launch of {name} exited {done.returncode}:\n{done.stderr[-3000:]}")
    unfinished.remove(name)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    runs = read_runs(root / name)
    calls = read_shim_log(log)
    by_command: Dict[str, int] = {}
    for call in calls:
        key = call["command"] + (" --test-only" if call["arg"] == "--test-only" else "")
        by_command[key] = by_command.get(key, 0) + 1
    return {"slots": slots, "name": name, "config": str(config), "command": command, "launch_wall_s": wall,
            "driver_cpu_s": cpu, "slurm_command_cpu_s": sum(c["cpu_s"] for c in calls),
            "slurm_commands": len(calls), "slurm_commands_by_name": by_command, "runs": runs,
            "n_runs": len(runs)}


def spread(values: List[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6, help="trials (= runs = jobs) per search, at least 5 for the table")
    parser.add_argument("--length", type=int, default=5, help="batches each trial trains (validation there)")
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds a step after the first")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4], help="slots_per_trial of each search, in order")
    parser.add_argument("--keep", action="store_true", help="keep the experiment folders (printed)")
    parser.add_argument("--tag", default="distributed", help="results/<tag>.json")
    args = parser.parse_args()
    invoked = "python benchmarks/distributed.py" + "".join(f" {a}" for a in sys.argv[1:])

    if os.geteuid() != 0 or not shutil.which("sinfo", path="/usr/bin"):
        raise SystemExit("needs root and the local Slurm cluster of scripts/local-slurm.sh")
    folder = Path(tempfile.mkdtemp(prefix="hpo-distributed-"))
    shim_dir = install_shims(folder / "shim")

    load_before, completed = os.getloadavg()[0], False
    searches: List[Dict[str, Any]] = []
    unfinished: List[str] = []  # searches whose launch did not end normally: stopped before the cluster changes
    print("switching the local cluster to 2 nodes x 2 GPUs ...", flush=True)
    t0 = time.perf_counter()
    try:
        cluster("--nodes", "2", "--gpus", "2")
        wait_idle()
        nodes = sorted(set(slurm_text("sinfo", "-h", "-N", "-o", "%N").split()))
        print(f"nodes: {' '.join(nodes)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for slots in args.ranks:
            print(f"search of {args.trials} trials of {slots} rank(s):", flush=True)
            result = measure(folder, slots, args.trials, args.length, args.sleep, shim_dir, unfinished)
            searches.append(result)
            ok = [r for r in result["runs"] if "to_first_report" in r]
            print(f"  {result['n_runs']} runs in {result['launch_wall_s']:.0f} s; job start -> first report "
                  f"{spread([r['to_first_report'] for r in ok])} s; driver CPU {result['driver_cpu_s']:.2f} s, "
                  f"{result['slurm_commands']} Slurm commands", flush=True)
            wait_idle()
        completed = True
    finally:
        if not completed:
            print(f"failed or interrupted: the experiments are left in {folder}", flush=True)
        print("restoring the default one-node cluster ...", flush=True)
        for name in unfinished:
            stop(name, folder / "runs")
        try:
            wait_idle(60)
        finally:
            cluster()
    load_after = os.getloadavg()[0]

    rows, drivers, summary = [], [], []
    for result in searches:
        ok = [r for r in result["runs"] if "to_first_report" in r]
        n = max(result["n_runs"], 1)
        entry = {
            "ranks": result["slots"], "runs": result["n_runs"], "measured": len(ok),
            "validated": sum(1 for r in result["runs"] if r["validated"]),
            "nodes": sorted({tuple(r["nodes"] or ()) for r in ok}),
            "to_first_report": [r["to_first_report"] for r in ok],
            "slurm_to_first_report": [r.get("slurm_to_first_report") for r in ok],
            "slurm_to_job_start": [r.get("slurm_to_job_start") for r in ok],
            "to_scripts_started": [r.get("to_scripts_started") for r in ok],
            "to_torch_imported": [r.get("to_torch_imported") for r in ok],
            "to_group_joined": [r.get("to_group_joined") for r in ok],
            "torch_import_s": [r.get("torch_import_s") for r in ok],
            "rendezvous_s": [r["to_group_joined"] - r["to_torch_imported"] for r in ok if "to_group_joined" in r],
            "driver_cpu_s": result["driver_cpu_s"],
            "driver_cpu_s_per_run": result["driver_cpu_s"] / n,
            "slurm_command_cpu_s_per_run": result["slurm_command_cpu_s"] / n,
            "driver_python_cpu_s_per_run": (result["driver_cpu_s"] - result["slurm_command_cpu_s"]) / n,
            "slurm_commands_per_run": result["slurm_commands"] / n,
            "slurm_commands_by_name": result["slurm_commands_by_name"],
            "wall_s_per_run": result["launch_wall_s"] / n,
        }
        summary.append(entry)
        rows.append([f"{result['slots']} ({'/'.join(','.join(x) for x in entry['nodes'])})", f"{len(ok)}/{n}",
                     spread(entry["to_first_report"]), spread(entry["slurm_to_first_report"]),
                     spread(entry["to_scripts_started"]), spread(entry["torch_import_s"]),
                     spread(entry["to_torch_imported"]), spread(entry["rendezvous_s"])])
        drivers.append([result["slots"], n, result["driver_cpu_s"], entry["wall_s_per_run"], entry["driver_cpu_s_per_run"],
                        entry["driver_python_cpu_s_per_run"], entry["slurm_command_cpu_s_per_run"],
                        entry["slurm_commands_per_run"],
                        ", ".join(f"{k} {v}" for k, v in sorted(entry["slurm_commands_by_name"].items()))])
    if len(summary) == 2 and all(s["to_first_report"] for s in summary):
        one, many = summary
        ratio = median(many["to_first_report"]) / median(one["to_first_report"])
        rows.append([f"ratio {many['ranks']}/{one['ranks']}", "", f"{ratio:.2f}x",
                     f"{median(many['slurm_to_first_report']) / median(one['slurm_to_first_report']):.2f}x",
                     "", "", "", ""])
    print()
    print("Start-up, seconds: median (min-max) over runs. '->': from the job's own start (attempts.jsonl); "
          "import: a rank's script start to torch imported (median of the ranks); rendezvous: last rank "
          "imported torch -> rank 0 joined the group")
    print(table(["ranks (nodes)", "runs", "job start -> first report", "Slurm Start -> first report",
                 "-> last rank's script started", "import", "-> last rank imported torch", "rendezvous"], rows))
    print()
    print("Driver: the launch process and everything it ran (its Python, and the Slurm commands), divided by its runs")
    print(table(["ranks", "runs", "CPU s whole launch", "wall s/run", "CPU s/run", "of it Python", "of it Slurm cmds",
                 "Slurm cmds/run", "commands in all (whole launch)"], drivers))
    print(f"\nload average {load_before:.2f} before, {load_after:.2f} after; {os.cpu_count()} cores")
    print(f"command: {invoked}")
    for result in searches:
        print(f"  launched: {' '.join(result['command'])}")
    path = save(args.tag, {"command": invoked, "trials": args.trials, "length": args.length, "sleep": args.sleep,
                           "slurm": SLURM, "load_before": load_before, "load_after": load_after,
                           "summary": summary, "searches": searches})
    print(f"wrote {path}")
    if args.keep:
        print(f"kept {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
