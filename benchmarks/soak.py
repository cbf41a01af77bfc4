"""Benchmark 11: a soak on the real local Slurm cluster. One adaptive_asha search of the quadratic
example on 2 nodes x 2 fake GPUs (``scripts/local-slurm.sh up --nodes 2 --gpus 2``; the default
one-node cluster is restored afterwards, also after a failure or Ctrl-C) goes through, while it runs:

* the driver SIGKILLed at random moments (each driver lives a random 3-9 s, then ``resume``), at
  least ``--kills`` times;
* ``--preemptions`` rounds of preemption: an urgent job takes both GPUs of a node (each round
  preempts the debug jobs running there);
* a node failure: node2's slurmd and its jobs SIGKILLed (``local-slurm.sh crash-node``); slurmctld
  marks it DOWN after SlurmdTimeout and requeues its jobs; once DOWN its slurmd is started again;
* a controller restart: slurmctld stopped for ``--ctld-down`` seconds, then started;
* an accounting outage: slurmdbd stopped for ``--dbd-down`` seconds (sacct fails), then started.

The faults come at fixed offsets from the launch (node failure, controller, accounting one after
the other, the preemption rounds between them; the node fails once a run of the search runs on it, and
an outage starts only once the fault before it is over, since `local-slurm.sh up` starts every daemon
that is down), the kills all along. Then it checks and prints: trials lost (not COMPLETED or STOPPED_EARLY, or any restart
counted), runs FAILED or LOST, rungs run twice (two SUCCEEDED runs of a trial over the same lengths, or
a length validated twice; a preempted run is carried on from its checkpoint by a run over the same
lengths, which is not running it twice), job starts beyond one per run (Slurm requeued the job), Slurm jobs not
bound to exactly one run (sacct against the database), metric rows in the database against the
lines in the trials' metrics.jsonl, and every trial's validations against (a) the same trial
trained without interruption (examples/quadratic/train.py's own arithmetic, replayed here) and (b)
the same search run without faults on local processes, trial by trial where both trained a length.
Results: ``results/soak.json`` (``--tag`` changes the name).

    python benchmarks/soak.py                        # the full soak: >= 20 kills, 5 rounds of preemption
    python benchmarks/soak.py --short --tag soak-short   # a short form: 6 kills, 2 rounds, shorter outages, faults twice as early
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, table  # noqa: E402
from slurm_shim import slurm_text, wait_idle  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "local-slurm.sh"
QUADRATIC = REPO / "examples" / "quadratic"
TWO_NODES = ("--nodes", "2", "--gpus", "2")
SLURM = {"partition": "debug", "poll_interval": 1, "time": 10, "mem": "400M", "cpus_per_task": 1, "gpus_per_node": 2}
NAME = "soak"


def local_slurm(*args: str) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"local-slurm.sh {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")


def hpo(stderr: Path, *args: str) -> subprocess.Popen:
    """``hpo-slurm ARGS`` in the background, its stderr appended to ``stderr``."""
    with open(stderr, "a", encoding="utf-8") as sink:
        return subprocess.Popen([sys.executable, "-m", "hpo_slurm.cli", *args], stdout=subprocess.DEVNULL,
                                stderr=sink, cwd=str(REPO))


def status(root: Path) -> Dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "hpo_slurm.cli", "status", NAME, "--root", str(root), "--json",
                           "--trials", "all"], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return json.loads(done.stdout)


def write_configs(folder: Path, trials: int, sleep: float) -> Tuple[Path, Path]:
    """The soak's search and the same search for local processes without delays."""
    model = folder / "quadratic"
    shutil.copytree(QUADRATIC, model, ignore=shutil.ignore_patterns("hpo-runs", "__pycache__"))
    base = yaml.safe_load((model / "adaptive.yaml").read_text())
    base["searcher"]["max_trials"] = trials
    base["resources"] = {"slots_per_trial": 1}
    base["max_restarts"] = 0  # any failure counted would end its trial ERRORED
    soak = dict(base, name=NAME, slurm=SLURM, data={"sleep_per_unit": sleep})
    reference = dict(base, name=f"{NAME}-reference", data={"sleep_per_unit": 0.0})
    paths = model / "soak.yaml", model / "reference.yaml"
    for path, config in zip(paths, (soak, reference)):
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return paths


class Faults:
    """The faults of the soak on a timeline from the launch: each is started once its time has
    come, and the outages end after their length. ``log`` records what happened and when."""

    def __init__(self, started: float, preemptions: int, ctld_down: float, dbd_down: float, pace: float = 1.0):
        self.started = started
        # (offset s, what): node failure first, then the controller, then accounting; preemptions between
        plan = [(25.0, "crash-node"), (95.0, "stop-ctld"), (140.0, "stop-dbd")]
        plan += [(spot, "preempt") for spot in [12.0, 50.0, 75.0, 130.0, 200.0, 220.0, 240.0][:preemptions]]
        self.plan: List[Tuple[float, str]] = sorted((offset * pace, what) for offset, what in plan)
        self.ctld_down, self.dbd_down = ctld_down, dbd_down
        self.pending: List[Tuple[float, str]] = []  # (when, what): ends of outages, a crashed node's return
        self.log: List[Dict[str, Any]] = []
        self.dbd_outage_s = 0.0
        self.ctld_outage_s = 0.0
        self._node2_seen = ""
        self.counts: Counter = Counter()

    def due(self) -> bool:
        return bool(self.plan or self.pending)

    def step(self) -> None:
        """Start the faults whose time has come, end the outages whose length has passed."""
        now = time.monotonic()
        for item in list(self.pending):
            when, what = item
            if what == "node2-back":
                state = self._node2_state()
                if state != self._node2_seen:
                    self._node2_seen = state
                    self._note(f"node2 is {state}")
                if state.startswith("down") or now >= when:
                    self.pending.remove(item)
                    if any(other != "node2-back" for _, other in self.pending):
                        self._note("node2's slurmd starts with the daemons of the outage going on")
                    else:
                        local_slurm("up", *TWO_NODES)
                        self._note("node2's slurmd started again")
            elif now >= when:
                self.pending.remove(item)
                local_slurm("up", *TWO_NODES)  # also starts a crashed node's slurmd
                if what == "dbd-back":
                    self.dbd_outage_s = time.monotonic() - self._dbd_stopped
                else:
                    self.ctld_outage_s = time.monotonic() - self._ctld_stopped
                self._note(f"{what}: every daemon up again")
        due = [item for item in self.plan if now - self.started >= item[0]]
        self.plan = [item for item in self.plan if item not in due]
        for _, what in due:  # a fault that cannot start now puts itself back in the plan
            getattr(self, what.replace("-", "_"))()

    def finish(self) -> None:
        """The search ended: end the outages still going (the soak's figures count them as they were)."""
        if any(what == "dbd-back" for _, what in self.pending):
            self.dbd_outage_s = time.monotonic() - self._dbd_stopped
        if any(what == "slurmctld-back" for _, what in self.pending):
            self.ctld_outage_s = time.monotonic() - self._ctld_stopped
        if self.pending or self.plan:
            self._note(f"the search ended before: {', '.join(w for _, w in self.pending + self.plan)}")
        self.pending, self.plan = [], []
        local_slurm("up", *TWO_NODES)

    def _node2_state(self) -> str:
        """scontrol's state of node2 (``MIXED+NOT_RESPONDING``, ``DOWN+COMPLETING+NOT_RESPONDING``, ...):
        sinfo shows a DOWN node that still holds its jobs' remains as ``mixed*``."""
        try:
            shown = slurm_text("scontrol", "show", "node", "node2", "-o")
        except RuntimeError:  # the controller is down at that moment
            return "unknown"
        return next((f.split("=", 1)[1] for f in shown.split() if f.startswith("State=")), "unknown").lower()

    def _node2_down(self) -> bool:
        return self._node2_state().startswith("down")

    def crash_node(self) -> None:
        running = slurm_text("squeue", "-h", "-t", "R", "-w", "node2", "-o", "%j").split()
        if not any(name.startswith("hpo.") for name in running):  # a failure that hits a run of the search
            self.plan.insert(0, (time.monotonic() - self.started + 2.0, "crash-node"))
            self.plan.sort()
            return
        local_slurm("crash-node", "node2")
        self.counts["node failures"] += 1
        self._note("node2 crashed (slurmd and its jobs SIGKILLed)")
        self.pending.append((time.monotonic() + 120.0, "node2-back"))  # at the latest: DOWN takes SlurmdTimeout

    def _after_the_others(self, what: str) -> bool:
        """Put the outage ``what`` off by 2 s while another fault is still going on: the crashed node is
        not DOWN yet (its jobs must end NODE_FAIL, as on a real cluster, not vanish from a node whose
        slurmd an outage's `up` restarts), or the other outage's `up` would end this one early."""
        if self.pending:
            self.plan.append((time.monotonic() - self.started + 2.0, what))
            self.plan.sort()
            return True
        return False

    def stop_ctld(self) -> None:
        if self._after_the_others("stop-ctld"):
            return
        local_slurm("stop", "slurmctld")
        self._ctld_stopped = time.monotonic()
        self.counts["controller restarts"] += 1
        self._note("slurmctld stopped")
        self.pending.append((time.monotonic() + self.ctld_down, "slurmctld-back"))

    def stop_dbd(self) -> None:
        if self._after_the_others("stop-dbd"):
            return
        local_slurm("stop", "slurmdbd")
        self._dbd_stopped = time.monotonic()
        self._note("slurmdbd stopped")
        self.pending.append((time.monotonic() + self.dbd_down, "dbd-back"))

    def preempt(self) -> None:
        try:
            slurm_text("sbatch", "-p", "urgent", "-N", "1", "--gres=gpu:2", "-t", "2", "-J", "soak-preemptor",
                       "-o", "/dev/null", "--wrap", "sleep 5")
        except RuntimeError as exc:  # the controller is down at that moment: try again in 5 s
            self.plan.append((time.monotonic() - self.started + 5.0, "preempt"))
            self.plan.sort()
            self._note(f"preemptor not submitted yet ({exc})")
            return
        self.counts["preemption rounds"] += 1
        self._note("urgent job submitted (takes both GPUs of a node)")

    def _note(self, what: str) -> None:
        self.log.append({"t": round(time.monotonic() - self.started, 1), "what": what})
        print(f"  {self.log[-1]['t']:7.1f} s  {what}", flush=True)


def drive(config: Path, root: Path, kills: int, faults: Faults, rng: random.Random, budget_s: float) -> Dict[str, Any]:
    """Launch the soak's search, kill its driver at random moments (at least ``kills`` times, and
    on as long as faults are due) and resume it each time, until the search ends."""
    args = ["launch", str(config), "--root", str(root), "--executor", "slurm"]
    done_kills = 0
    exits: Counter = Counter()
    deadline = time.monotonic() + budget_s
    errors = root.parent / "drivers.stderr"
    while True:
        offset = errors.stat().st_size if errors.exists() else 0
        driver = hpo(errors, *args)
        args = ["resume", NAME, "--root", str(root)]
        life = time.monotonic() + rng.uniform(3.0, 9.0)
        killing = done_kills < kills or faults.due()
        while driver.poll() is None and (not killing or time.monotonic() < life):
            faults.step()
            if time.monotonic() > deadline:
                driver.kill()
                raise RuntimeError(f"the soak did not end within {budget_s:.0f} s")
            time.sleep(0.2)
        if driver.poll() is None:
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=60)
            done_kills += 1
            continue
        stderr = errors.read_text()[offset:]
        exits[driver.returncode] += 1
        if driver.returncode == 0:
            return {"kills": done_kills, "driver_exits": dict(exits)}
        # a driver that stops by itself is a finding: say why, then resume as a user would
        print(f"  driver exited {driver.returncode}: {stderr.strip()[-500:]}", flush=True)
        faults.log.append({"t": round(time.monotonic() - faults.started, 1),
                           "what": f"driver exited {driver.returncode}: {stderr.strip()[-300:]}"})
        time.sleep(2)


def quadratic_module():
    spec = importlib.util.spec_from_file_location("quadratic_train", QUADRATIC / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def uninterrupted(train, hparams: Dict[str, Any], trial_id: int, lengths: List[int]) -> Dict[int, float]:
    """The validation loss of an uninterrupted trial at each of ``lengths`` (train.py's own arithmetic)."""
    class Ctx:
        pass

    ctx = Ctx()
    ctx.hparams, ctx.trial_id = hparams, trial_id
    state = train.fresh_state(ctx)
    rng = random.Random()
    rng.setstate(state["random"])
    length, drift, out = 0, 0.0, {}
    for target in sorted(lengths):
        while length < target:
            drift += rng.gauss(0.0, 1e-3)
            length += 1
        out[target] = train.loss(hparams, length, drift)
    return out


def lines_of(experiment: Path, trial_id: int) -> List[Dict[str, Any]]:
    path = experiment / "trials" / str(trial_id) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check(root: Path, reference_root: Path) -> Dict[str, Any]:
    """The soak's figures from its experiment folder, the database, sacct and the reference search."""
    experiment = root / NAME
    summary = status(root)
    reference = {t["id"]: t for t in status_of(reference_root, f"{NAME}-reference")["trials"]}
    train = quadratic_module()
    trials = summary["trials"]
    lost = [t["id"] for t in trials if t["state"] not in ("COMPLETED", "STOPPED_EARLY") or t["restarts"]]
    runs = [r for t in trials for r in t["runs"]]
    twice, unequal, compared, reference_pairs, reference_unequal = [], [], 0, 0, []
    for t in trials:
        # a preempted run's work is carried on by a run over the same lengths from its checkpoint: a
        # rung is run twice when two runs over the same lengths both succeeded, or a length is validated twice
        done = [(r["from_length"], r["to_length"]) for r in t["runs"] if r["state"] == "SUCCEEDED"]
        validations = [(m["length"], m["metrics"]["validation_loss"]) for m in lines_of(experiment, t["id"])
                       if m["kind"] == "validation"]
        lengths = [length for length, _ in validations]
        if len(done) != len(set(done)) or len(lengths) != len(set(lengths)):
            twice.append(t["id"])
        expected = uninterrupted(train, t["hparams"], t["id"], lengths)
        unequal += [(t["id"], length) for length, value in validations if value != expected[length]]
        compared += len(validations)
        other = reference.get(t["id"])
        if other is not None and other["hparams"] == t["hparams"]:
            theirs = dict((m["length"], m["metrics"]["validation_loss"])
                          for m in lines_of(reference_root / f"{NAME}-reference", t["id"]) if m["kind"] == "validation")
            for length, value in validations:
                if length in theirs:
                    reference_pairs += 1
                    if theirs[length] != value:
                        reference_unequal.append((t["id"], length))
    conn = sqlite3.connect(f"file:{experiment / 'experiment.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        uid = conn.execute("SELECT uid FROM experiment").fetchone()[0]
    finally:
        conn.close()
    lines = sum(len(lines_of(experiment, t["id"])) for t in trials)
    bound = Counter(r["job_id"] for r in runs if r["job_id"])
    prefix = f"hpo.{uid[:8]}."
    accounted = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # accounting lags the controller by a moment
        text = slurm_text("sacct", "-n", "-P", "-X", "-S", "now-1days", "-o", "JobID,JobName")
        accounted = {row.split("|")[0] for row in text.splitlines() if row.split("|")[1].startswith(prefix)}
        if set(bound) <= accounted:
            break
        time.sleep(2)
    preempted = sum(1 for path in experiment.glob("runs/*/interruptions.jsonl")
                    for line in path.read_text().splitlines() if json.loads(line).get("reason") == "preempted")
    return {
        "trials": len(trials), "runs": len(runs), "trials_lost": lost,
        "runs_failed_or_lost": [r["run_id"] for r in runs if r["state"] in ("FAILED", "LOST")],
        "restarts": sum(t["restarts"] for t in trials),
        "preemptions_counted": sum(t["preemptions"] for t in trials), "preempted_attempts_recorded": preempted,
        "attempts": sum(len((experiment / "runs" / r["run_id"] / "attempts.jsonl").read_text().splitlines())
                        for r in runs if (experiment / "runs" / r["run_id"] / "attempts.jsonl").exists()),
        "rungs_run_twice": twice,
        "jobs_not_bound_once": sorted(set(accounted) - set(bound)) + [j for j, n in bound.items() if n > 1],
        "metric_rows": rows, "metric_lines": lines,
        "validations_checked": compared, "validations_unequal_to_uninterrupted": unequal,
        "validations_compared_with_fault_free_search": reference_pairs,
        "validations_unequal_to_fault_free_search": reference_unequal,
        "state": summary["state"],
    }


def status_of(root: Path, name: str) -> Dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "hpo_slurm.cli", "status", name, "--root", str(root), "--json",
                           "--trials", "all"], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="6 kills, 2 preemption rounds, 20 s outages")
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--preemptions", type=int, default=None, help="rounds of preemption (each requeues 1-2 jobs)")
    parser.add_argument("--ctld-down", type=float, default=None)
    parser.add_argument("--dbd-down", type=float, default=None)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--sleep", type=float, default=1.0, help="data.sleep_per_unit of the trials")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--tag", default="soak")
    parser.add_argument("--keep", action="store_true", help="keep the experiment folders")
    args = parser.parse_args()
    kills = args.kills if args.kills is not None else (6 if args.short else 20)
    rounds = args.preemptions if args.preemptions is not None else (2 if args.short else 5)
    ctld_down = args.ctld_down if args.ctld_down is not None else (15.0 if args.short else 30.0)
    dbd_down = args.dbd_down if args.dbd_down is not None else (20.0 if args.short else 90.0)
    trials = args.trials if args.trials is not None else (16 if args.short else 32)

    folder = Path(tempfile.mkdtemp(prefix="hpo-soak-"))
    root = folder / "runs"
    config, reference = write_configs(folder, trials, args.sleep)
    wait_idle(600)
    local_slurm("up", *TWO_NODES)
    started_wall = time.time()
    try:
        started = time.monotonic()
        faults = Faults(started, rounds, ctld_down, dbd_down, pace=0.5 if args.short else 1.0)
        print(f"soak: {trials} trials, adaptive_asha, 2 nodes x 2 GPUs; faults as they happen:", flush=True)
        driven = drive(config, root, kills, faults, random.Random(args.seed), budget_s=3600)
        wall = time.monotonic() - started
        faults.finish()
        wait_idle(300)
    finally:
        local_slurm("up")  # the default one-node cluster
    done = subprocess.run([sys.executable, "-m", "hpo_slurm.cli", "launch", str(reference), "--root", str(folder / "reference"),
                           "--executor", "local"], capture_output=True, text=True, timeout=900, cwd=str(REPO))
    if done.returncode != 0:
        raise RuntimeError(f"the fault-free search failed: {done.stderr.strip()[-2000:]}")
    figures = check(root, folder / "reference")
    equal = not figures["validations_unequal_to_uninterrupted"] and not figures["validations_unequal_to_fault_free_search"]
    log_text = (root / NAME / "driver.log").read_text()
    requeued = set(re.findall(r"job (\S+): Slurm requeued it after NODE_FAIL", log_text))
    rows = [
        ("driver SIGKILLs", driven["kills"]),
        ("preemption rounds (urgent jobs)", faults.counts["preemption rounds"]),
        ("attempts ended by a preemption (recorded by the job)", figures["preempted_attempts_recorded"]),
        ("preemptions counted by the trials (node failure included)", figures["preemptions_counted"]),
        ("node failures", faults.counts["node failures"]),
        ("slurmctld restarts (down, s)", f"{faults.counts['controller restarts']} ({faults.ctld_outage_s:.1f})"),
        ("slurmdbd outage, s", round(faults.dbd_outage_s, 1)),
        ("trials / runs / job starts", f"{figures['trials']} / {figures['runs']} / {figures['attempts']}"),
        ("jobs Slurm requeued after the node failure (driver.log)", len(requeued)),
        ("trials lost (not completed, or a restart counted)", len(figures["trials_lost"])),
        ("runs FAILED or LOST", len(figures["runs_failed_or_lost"])),
        ("rungs run twice", len(figures["rungs_run_twice"])),
        ("Slurm jobs not bound to exactly one run", len(figures["jobs_not_bound_once"])),
        ("metric rows in the database / lines in metrics.jsonl", f"{figures['metric_rows']} / {figures['metric_lines']}"),
        ("validations equal to uninterrupted training",
         f"{figures['validations_checked'] - len(figures['validations_unequal_to_uninterrupted'])} of {figures['validations_checked']}"),
        ("validations equal to the fault-free search (where both trained)",
         f"{figures['validations_compared_with_fault_free_search'] - len(figures['validations_unequal_to_fault_free_search'])}"
         f" of {figures['validations_compared_with_fault_free_search']}"),
        ("final metrics equal", "yes" if equal else "no"),
        ("driver exits other than by SIGKILL", driven["driver_exits"]),
        ("wall time, s", round(wall, 1)),
    ]
    print(table(["figure", "value"], rows))
    data = {"args": vars(args), "kills": driven["kills"], "driver_exits": driven["driver_exits"],
            "faults": dict(faults.counts), "fault_log": faults.log, "dbd_outage_s": faults.dbd_outage_s,
            "ctld_outage_s": faults.ctld_outage_s, "requeued_after_node_failure": sorted(requeued),
            "wall_s": wall, "started": started_wall, "final_metrics_equal": equal, **figures,
            "driver_log_waits": [line for line in log_text.splitlines()
                                 if "does not answer" in line or "answers again" in line or "requeued it" in line
                                 or "submission failed" in line or "cannot look up" in line]}
    print(f"results: {save(args.tag, data)}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"experiment folders kept in {folder}")


if __name__ == "__main__":
    main()
