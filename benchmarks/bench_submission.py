"""Benchmark 4: submitting 1,000 ready runs to the real local Slurm cluster, as job arrays versus one
sbatch per run. Every job is submitted HELD (``slurm.extra_args: {hold: true}`` -> ``#SBATCH --hold``),
checked in squeue (all tasks PENDING with reason JobHeldUser), then cancelled with ONE scancel of
their job ids; the script verifies none is left.

Path measured: the real driver. An experiment folder is made with ``hpo_slurm.experiment.folder.create``
from examples/quadratic/random.yaml (max_trials = max_concurrent_trials = N, held); a ``Driver``
records the N first runs (``start`` with submission off), then ``Driver._submit_ready()`` is timed:
it fits each run's time limit, builds each run's spec and ``JobRequest`` and calls
``SlurmExecutor.submit``: per batch, one manifest (run ids and specs) and one submitit pickle, both
synced, then ONE sbatch of the script submitit renders (one array). The Slurm executor delivers the
specs, so the driver writes no per-run file; the script checks that no ``runs/<run>/`` folder exists
after the submission (tasks create them when they start).

Modes (each repeat makes a fresh experiment, so job names never collide):
* ``arrays``          the driver as it is: ``SlurmExecutor.submit(all N)`` -> one job array;
* ``per_run``         the same driver and executor with batching disabled: ``submit([r])`` per run
                      (one manifest, one pickle, one submitit executor, one sbatch per run);
* ``sbatch_per_run``  floor of the per-run baseline: plain ``sbatch --hold`` of a one-line script per run;
* ``sbatch_array``    floor of the array case: one plain ``sbatch --hold --array=0-(N-1)``;
* ``array_executor``  for comparison, the same driver with the sweep's ``ArrayExecutor`` (one manifest
                      of spec paths + one rendered array.sbatch, no pickles; its tasks would run
                      ``hpo_slurm.tasks.sweep_task``). It does not deliver specs: the driver writes a spec
                      file per run. It also asks sacctmgr/squeue for submit limits (children).

Measured per mode: wall seconds, the submitting process's own CPU (``time.process_time()``) and its
children's CPU (``getrusage(RUSAGE_CHILDREN)``: sbatch), for the whole ``_submit_ready`` and for the
``executor.submit`` call inside it. ``--profile`` adds one arrays submission under cProfile (CPU timer,
not counted in the medians) and reports where the driver's CPU goes.

    python benchmarks/bench_submission.py                      # 1,000 runs, 3 repeats, all modes, profile
    python benchmarks/bench_submission.py --runs 20 --repeats 1 --no-profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from common import median, save, table  # noqa: E402

from hpo_slurm.config.schema import load_config  # noqa: E402
from hpo_slurm.engine.driver import Driver  # noqa: E402
from hpo_slurm.executors.array.executor import ArrayExecutor  # noqa: E402
from hpo_slurm.executors.base import JobRequest, Submitted  # noqa: E402
from hpo_slurm.executors.slurm.executor import SlurmExecutor  # noqa: E402
from hpo_slurm.executors.slurm.commands import run_slurm  # noqa: E402
from hpo_slurm.experiment.folder import create  # noqa: E402
from hpo_slurm.searchers import make_searcher  # noqa: E402
from hpo_slurm.experiment.store import Store  # noqa: E402

EXAMPLE = REPO / "examples" / "quadratic"
MODES = ("arrays", "per_run", "sbatch_per_run", "sbatch_array", "array_executor")
DRIVER_MODES = ("arrays", "per_run", "array_executor")
TARGET_CPU_S_PER_1K = 0.1
BENCH_TAG = "hpobench-sub"  # plain-sbatch job names start with this


# ---- measuring ----------------------------------------------------------------------------------
def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Wall, own CPU and children CPU of a block."""

    def __enter__(self) -> "Meter":
        self.wall0, self.cpu0, self.child0 = time.perf_counter(), time.process_time(), children_cpu()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        self.children = children_cpu() - self.child0


class TimedExecutor:
    """The real SlurmExecutor, with ``submit`` timed (and optionally one request per call)."""

    def __init__(self, real: Any, one_at_a_time: bool):
        self.real, self.one_at_a_time = real, one_at_a_time
        self.name = real.name
        self.meter: Meter = Meter()

    def submit(self, requests: Sequence[JobRequest]) -> List[Submitted]:
        with self.meter:
            if self.one_at_a_time:
                return [job for request in requests for job in self.real.submit([request])]
            return self.real.submit(requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


# ---- the cluster ---------------------------------------------------------------------------------
def queued(match: Callable[[str], bool]) -> List[List[str]]:
    """[job id, name, state, reason] of every queued job (array tasks expanded) whose name matches."""
    text = run_slurm(["squeue", "-h", "-r", "-o", "%i|%j|%T|%r"])
    rows = [line.split("|", 3) for line in text.splitlines() if line.strip()]
    return [row for row in rows if match(row[1])]


def cancel_and_verify(job_ids: Sequence[str], match: Callable[[str], bool]) -> Dict[str, Any]:
    """ONE scancel of all the given jobs, then wait until squeue shows none of them."""
    with Meter() as meter:
        run_slurm(["scancel", *sorted(set(job_ids))])
    deadline = time.monotonic() + 60
    left = queued(match)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = queued(match)
    if left:
        raise RuntimeError(f"{len(left)} jobs still queued after scancel: {left[:5]}")
    return {"cancel_wall_s": meter.wall, "left_after_cancel": len(left)}


def check_held(rows: List[List[str]], expected: int) -> Dict[str, Any]:
    held = sum(1 for row in rows if row[2] == "PENDING" and "JobHeldUser" in row[3])
    if len(rows) != expected or held != expected:
        states = sorted({(row[2], row[3]) for row in rows})
        raise RuntimeError(f"expected {expected} held jobs in squeue, found {len(rows)} ({held} held): {states}")
    return {"queued": len(rows), "held": held}


# ---- one measurement -----------------------------------------------------------------------------
def write_config(folder: Path, runs: int) -> Path:
    data = yaml.safe_load((EXAMPLE / "random.yaml").read_text())
    data["searcher"]["max_trials"] = runs
    data["searcher"]["max_concurrent_trials"] = runs  # every run is ready at once: one array of N, %N
    data["slurm"]["extra_args"] = {"hold": True}  # -> ("hold", "") -> submitit True -> "#SBATCH --hold"
    path = folder / "random-held.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def driver_submission(config_path: Path, root: Path, name: str, mode: str,
                      profiler: cProfile.Profile = None) -> Dict[str, Any]:
    """Record ``runs`` runs with a real Driver, then time its ``_submit_ready`` (specs + submit)."""
    config = load_config(config_path)
    layout = create(config, config_path, root, name, "array" if mode == "array_executor" else "slurm",
                    context=EXAMPLE)
    store = Store.open(layout.database)
    real = ArrayExecutor(config, layout.dir) if mode == "array_executor" else SlurmExecutor(config, layout.dir)
    executor = TimedExecutor(real, one_at_a_time=(mode == "per_run"))
    driver = Driver(layout, config, store, executor, make_searcher(config), submit=False)
    driver.start(fresh=True)  # records N trials and their first runs; nothing submitted
    runs = len(driver._ready_runs())
    prefix = driver.job_prefix
    driver.submit_enabled = True
    try:
        if profiler is not None:
            profiler.enable()
        with Meter() as total:
            driver._submit_ready()
        if profiler is not None:
            profiler.disable()
        job_ids = [run["job_id"] for run in driver.runs.values() if run["job_id"]]
        if len(job_ids) != runs:
            raise RuntimeError(f"{runs} runs, {len(job_ids)} bound to jobs")
        rows = queued(lambda job_name: job_name.startswith(prefix))
        held = check_held(rows, runs)
        manifests = list(layout.dir.glob("jobs/*/manifest.json"))
        scripts = sorted(layout.dir.glob("jobs/*/*_submission.sh")) + sorted(layout.dir.glob("jobs/array-*/array.sbatch"))
        run_dirs = len(list(layout.dir.glob("runs/*")))
        if mode != "array_executor" and run_dirs:
            raise RuntimeError(f"{mode}: the driver created {run_dirs} run folders (specs are delivered in manifests)")
        header = [line for line in scripts[0].read_text().splitlines() if line.startswith("#SBATCH")] if scripts else []
        arrays = len({j.split("_")[0] for j in job_ids if "_" in j})
        singles = sum(1 for j in job_ids if "_" not in j)
    finally:
        ids = [run["job_id"] for run in driver.runs.values() if run["job_id"]]
        ids += [row[0] for row in queued(lambda job_name: job_name.startswith(prefix))]
        cancelled = cancel_and_verify(ids, lambda job_name: job_name.startswith(prefix)) if ids else {}
        driver._persist()
        store.close()
    sub = executor.meter
    return {
        "runs": runs, "wall_s": total.wall, "cpu_s": total.cpu, "children_cpu_s": total.children,
        "submit_wall_s": sub.wall, "submit_cpu_s": sub.cpu, "submit_children_cpu_s": sub.children,
        "specs_cpu_s": total.cpu - sub.cpu, "sbatch_calls": arrays + singles, "arrays": arrays,
        "manifests": len(manifests), "run_dirs": run_dirs, "sbatch_header": header, **held, **cancelled,
    }


def plain_sbatch(folder: Path, runs: int, array: bool) -> Dict[str, Any]:
    """Floors: plain ``sbatch --hold`` of a one-line script, per run or as one array."""
    tag = f"{BENCH_TAG}.{uuid.uuid4().hex[:8]}"
    script = folder / "true.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    base = ["sbatch", "--hold", "--parsable", "--output", "/dev/null", "--time", "10", "--mem", "1G",
            "--cpus-per-task", "1"]
    job_ids: List[str] = []
    mine = lambda job_name: job_name.startswith(tag)  # noqa: E731
    try:
        with Meter() as meter:
            if array:
                out = run_slurm([*base, f"--array=0-{runs - 1}%{runs}", "--job-name", tag, str(script)])
                job_ids.append(out.strip().split(";")[0])
            else:
                for i in range(runs):
                    out = run_slurm([*base, "--job-name", f"{tag}.{i}", str(script)])
                    job_ids.append(out.strip().split(";")[0])
        held = check_held(queued(mine), runs)
    finally:
        ids = job_ids + [row[0] for row in queued(mine)]
        cancelled = cancel_and_verify(ids, mine) if ids else {}
    return {"runs": runs, "wall_s": meter.wall, "cpu_s": meter.cpu, "children_cpu_s": meter.children,
            "submit_wall_s": meter.wall, "submit_cpu_s": meter.cpu, "submit_children_cpu_s": meter.children,
            "specs_cpu_s": 0.0, "sbatch_calls": 1 if array else runs, "arrays": 1 if array else 0,
            "manifests": 0, **held, **cancelled}


# ---- profile --------------------------------------------------------------------------------------
def _key(function: Callable) -> tuple:
    code = getattr(function, "__code__", None) or function.__func__.__code__
    return (code.co_filename, code.co_firstlineno, code.co_name)


def profile_groups() -> Dict[str, tuple]:
    """label -> (function, only when called from this function or None)."""
    import json
    import os

    import submitit.core.utils as utils
    import submitit.slurm.slurm as slurm_module

    from hpo_slurm.core import fsio
    from hpo_slurm.engine.driver import Driver as D
    from hpo_slurm.executors.slurm import executor as ours
    from hpo_slurm.engine.timefit import fitted_time_minutes

    return {
        "hpo-slurm: Driver._submit_ready (all of it)": (D._submit_ready, None),
        "hpo-slurm: specs (Driver._spec)": (D._spec, None),
        "hpo-slurm: time limits (fitted_time_minutes)": (fitted_time_minutes, None),
        "hpo-slurm: JobRequests (Driver._request)": (D._request, None),
        "hpo-slurm: SlurmExecutor.submit (all of it)": (ours.SlurmExecutor.submit, None),
        "hpo-slurm: batch manifest (write_json_atomic)": (fsio.write_json_atomic, ours.SlurmExecutor._submit_batch),
        "submitit: the batch's pickle and sbatch (BatchExecutor.submit_batch)": (ours.BatchExecutor.submit_batch, None),
        "submitit: render the sbatch script": (slurm_module.SlurmExecutor._make_submission_file_text, None),
        "submitit: run sbatch (fork/exec, pipes)": (utils.CommandFunction.__call__, None),
        "of which: json.dumps": (json.dumps, None),
        "of which: os.fsync": (os.fsync, None),
    }


def profile_arrays(config_path: Path, root: Path) -> Dict[str, Any]:
    profiler = cProfile.Profile(time.process_time)  # CPU timer: waiting for sbatch does not count
    result = driver_submission(config_path, root, "profiled", "arrays", profiler=profiler)
    stats = pstats.Stats(profiler)
    total = sum(tt for (_, _, tt, _, _) in stats.stats.values())
    builtin_names = {"fsync": "<built-in method posix.fsync>"}
    groups: Dict[str, Dict[str, float]] = {}
    for label, (function, caller) in profile_groups().items():
        if getattr(function, "__code__", None) is None and not hasattr(function, "__func__"):
            name = getattr(function, "__name__", "")
            keys = [k for k in stats.stats if k[2] == builtin_names.get(name, f"<built-in method {name}>")
                    or k[2].endswith(f"method posix.{name}>")]
        else:
            keys = [_key(function)] if _key(function) in stats.stats else []
        cum = calls = 0.0
        for key in keys:
            cc, nc, tt, ct, callers = stats.stats[key]
            if caller is None:
                cum, calls = cum + ct, calls + nc
            else:
                for caller_key, (c_cc, c_nc, c_tt, c_ct) in callers.items():
                    if caller_key == _key(caller):
                        cum, calls = cum + c_ct, calls + c_nc
        groups[label] = {"cpu_s": cum, "calls": calls}
    stream = io.StringIO()
    stats.stream = stream
    stats.sort_stats("tottime").print_stats(20)
    return {"measured": result, "profiled_cpu_s": total, "groups": groups,
            "top_tottime": stream.getvalue()}


# ---- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--out", default="submission", help="results/<out>.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary experiment folders")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}")

    cluster = dict(line.split("=", 1) for line in run_slurm(["scontrol", "show", "config"]).splitlines()
                   if "=" in line)
    cluster = {k.strip(): v.strip() for k, v in cluster.items()}
    max_array = int(cluster.get("MaxArraySize", "1001"))
    print(f"cluster: MaxArraySize {max_array} (array indices 0..{max_array - 1}), MaxJobCount "
          f"{cluster.get('MaxJobCount')}, accounting {cluster.get('AccountingStorageType')}", flush=True)
    if args.runs > max_array:
        print(f"note: {args.runs} runs exceed MaxArraySize: the executor splits them into "
              f"{-(-args.runs // max_array)} arrays", flush=True)

    folder = Path(tempfile.mkdtemp(prefix="hpo-bench-submission-"))
    config_path = write_config(folder, args.runs)
    root = folder / "runs"
    results: Dict[str, List[Dict[str, Any]]] = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        order = modes[repeat % len(modes):] + modes[:repeat % len(modes)]  # rotate: no mode always first
        for mode in order:
            if mode in DRIVER_MODES:
                row = driver_submission(config_path, root, f"{mode}-{repeat}", mode)
            else:
                row = plain_sbatch(folder, args.runs, array=(mode == "sbatch_array"))
            row["load_1min"] = os.getloadavg()[0]
            results[mode].append(row)
            print(f"repeat {repeat + 1}/{args.repeats} {mode:15s} wall {row['wall_s']:7.3f}s  cpu "
                  f"{row['cpu_s']:.3f}s (submit {row['submit_cpu_s']:.3f}s)  children {row['children_cpu_s']:.3f}s  "
                  f"sbatch calls {row['sbatch_calls']}  held {row['held']}  cancelled in "
                  f"{row.get('cancel_wall_s', 0):.2f}s", flush=True)

    per_1k = 1000.0 / args.runs
    keys = ("wall_s", "cpu_s", "children_cpu_s", "submit_wall_s", "submit_cpu_s", "submit_children_cpu_s",
            "specs_cpu_s", "cancel_wall_s")
    medians = {mode: {key: median(r.get(key) for r in rows) for key in keys} for mode, rows in results.items()}
    for mode, m in medians.items():
        m["cpu_s_per_1k"] = m["cpu_s"] * per_1k
        m["submit_cpu_s_per_1k"] = m["submit_cpu_s"] * per_1k
        m["sbatch_calls"] = results[mode][0]["sbatch_calls"]
    headers = ["mode", "sbatch calls", "wall s", "driver CPU s", "of it submit()", "of it outside submit()",
               "children CPU s", "driver CPU s / 1k", "submit() CPU s / 1k"]
    rows = [[mode, m["sbatch_calls"], m["wall_s"], m["cpu_s"], m["submit_cpu_s"], m["specs_cpu_s"],
             m["children_cpu_s"], m["cpu_s_per_1k"], m["submit_cpu_s_per_1k"]] for mode, m in medians.items()]
    print()
    print(f"{args.runs} runs, medians of {args.repeats} repeats (all jobs held, then cancelled):")
    print(table(headers, rows))
    ratios: Dict[str, float] = {}
    if "arrays" in medians and "per_run" in medians:
        a, p = medians["arrays"], medians["per_run"]
        ratios = {"wall_per_run_over_arrays": p["wall_s"] / a["wall_s"],
                  "cpu_per_run_over_arrays": p["cpu_s"] / a["cpu_s"],
                  "children_cpu_per_run_over_arrays": p["children_cpu_s"] / max(a["children_cpu_s"], 1e-9)}
        print(f"per-run sbatch / arrays: wall x{ratios['wall_per_run_over_arrays']:.1f}, driver CPU "
              f"x{ratios['cpu_per_run_over_arrays']:.1f}, children CPU x{ratios['children_cpu_per_run_over_arrays']:.1f}")
    verdict = None
    if "arrays" in medians:
        value = medians["arrays"]["cpu_s_per_1k"]
        verdict = {"target_cpu_s_per_1k": TARGET_CPU_S_PER_1K, "arrays_driver_cpu_s_per_1k": value,
                   "arrays_submit_cpu_s_per_1k": medians["arrays"]["submit_cpu_s_per_1k"],
                   "met": value <= TARGET_CPU_S_PER_1K}
        print(f"target: driver CPU per 1,000 runs (arrays) {value:.3f}s vs {TARGET_CPU_S_PER_1K}s -> "
              f"{'MET' if verdict['met'] else 'NOT MET'}")

    profile = None
    if not args.no_profile and "arrays" in modes:
        profile = profile_arrays(config_path, root)
        print(f"\ncProfile (CPU timer) of one arrays submission: {profile['profiled_cpu_s']:.3f}s profiled "
              f"(profiler overhead included)")
        print(table(["where", "calls", "CPU s (inclusive)"],
                    [[label, int(g["calls"]), g["cpu_s"]] for label, g in profile["groups"].items()]))
        print(profile["top_tottime"])

    path = save(args.out, {
        "benchmark": "submission", "runs": args.runs, "repeats": args.repeats, "max_array_size": max_array,
        "command": " ".join(["python", "benchmarks/bench_submission.py", *sys.argv[1:]]),
        "medians": medians, "ratios": ratios, "verdict": verdict, "raw": results, "profile": profile,
    })
    print(f"wrote {path}")
    if args.keep:
        print(f"experiment folders kept in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
