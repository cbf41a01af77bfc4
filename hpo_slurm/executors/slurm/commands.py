"""Running Slurm's client commands (sbatch, squeue, sacct, scancel, scontrol, sacctmgr, sinfo) with a time limit.

Arguments go to the command as a list, never through a shell."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from hpo_slurm.core.errors import UserError
from hpo_slurm.executors.base import REQUEUED_AFTER, JobState, JobStatus, SchedulerError, SubmitError
from hpo_slurm.executors.slurm.outages import Outages
from hpo_slurm.executors.slurm.parse import (
    is_not_judged_now, is_retryable, is_unreachable, parse_names, parse_sacct, parse_scontrol_config, parse_sinfo_gpus,
    parse_squeue,
)

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 60


def run_slurm(args: Sequence[str], cwd: Optional[Path] = None) -> str:
    """Run a Slurm client command; its stdout. Raises OSError (no such command), CalledProcessError
    (non-zero exit, with stderr) or TimeoutExpired (the controller did not answer in time)."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                          cwd=str(cwd) if cwd else None)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, list(args), done.stdout, done.stderr)
    return done.stdout


def query_slurm(args: Sequence[str]) -> str:
    """``run_slurm`` for a query whose failure means "cannot tell": raises SchedulerError instead."""
    try:
        return run_slurm(args)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SchedulerError(f"{args[0]} failed: {_describe(exc)}") from exc


def sbatch(script: Path, cwd: Path, dependency: Optional[str] = None, test_only: bool = False) -> str:
    """Submit ``script`` from ``cwd`` (relative #SBATCH paths resolve there); its job id. Raises
    SubmitError with sbatch's own message."""
    args = ["sbatch", "--parsable"] + ([f"--dependency={dependency}"] if dependency else [])
    args += ["--test-only"] if test_only else []
    try:
        out = run_slurm(args + [str(script)], cwd=cwd)
    except subprocess.CalledProcessError as exc:
        message = " ".join((exc.stderr or exc.stdout or str(exc)).split())[-500:]
        message = message if message.startswith("sbatch") else f"sbatch: {message}"
        raise SubmitError(message, retry=is_retryable(message)) from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise SubmitError(f"sbatch: {exc}", retry=True) from None
    if test_only:
        return ""
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise SubmitError(f"sbatch printed no job id: {out.strip()[:200]!r}", retry=False)
    return job_id


def check_script(script: Path, cwd: Path) -> Optional[str]:
    """Let ``sbatch --test-only`` judge a job script. None when Slurm would take it; a warning when it
    cannot judge it now (a queued-jobs cap, nodes down or drained: a real sbatch would queue it).
    Raises SubmitError with sbatch's reason when Slurm refuses the script, SchedulerError when the
    controller does not answer."""
    try:
        sbatch(script, cwd=cwd, test_only=True)
    except SubmitError as exc:
        message = str(exc)
        if is_unreachable(message):
            raise SchedulerError(message) from None
        if is_not_judged_now(message):
            return f"sbatch --test-only could not judge the jobs now ({message}); submitting anyway"
        raise
    return None


def check_before_launch(render: Callable[[Path], str], what: str) -> Optional[str]:
    """``check_script`` on ``render(folder)`` written into a fresh temporary folder, for a search that
    does not exist yet: a refusal is a UserError, "Slurm refuses <what>: <sbatch's reason>"."""
    with tempfile.TemporaryDirectory(prefix="hpo-slurm-check-") as folder:
        script = Path(folder) / "check.sbatch"
        script.write_text(render(Path(folder)))
        try:
            return check_script(script, Path(folder))
        except SubmitError as exc:
            raise UserError(f"Slurm refuses {what}: {exc}") from None


REQUEUE_CANDIDATES = (JobState.NODE_FAIL, JobState.PREEMPTED)


def poll_jobs(job_ids: Sequence[str], user: str, accounting: Optional[bool],
              outages: Optional[Outages] = None) -> Dict[str, JobStatus]:
    """Every job's state from one sacct call (when the cluster keeps accounting) and one squeue call for
    the jobs sacct does not list, or lists as ended by a node failure or a preemption (squeue's word
    wins while it still holds such a job: Slurm requeued it). A job in neither is UNKNOWN: gone. A failed query never looks like a
    vanished job: when sacct could not answer (or ``accounting`` is None, not known) such a job is
    UNKNOWN unconfirmed, to be judged by its result file; when squeue could not, PENDING unconfirmed.
    A job sacct lists as ended by a node failure or a preemption and squeue as pending again is PENDING
    with the reason ``REQUEUED_AFTER`` + sacct's state.
    A failing query is logged through ``outages`` (once while it keeps failing, once when it answers
    again), or with a warning each time without it."""
    if not job_ids:
        return {}
    outages = outages or _EveryTime()
    found: Dict[str, JobStatus] = {}
    unseen = JobStatus(JobState.UNKNOWN)
    unaccounted = JobStatus(JobState.UNKNOWN, reason="sacct failed", confirmed=False)
    if accounting is None:
        unseen = unaccounted
    elif accounting:
        bases = sorted({j.split("_")[0] for j in job_ids})
        try:
            found = parse_sacct(query_slurm(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode",
                                             "-j", ",".join(bases)]))
            outages.answered("sacct")
        except SchedulerError as exc:
            outages.failed("sacct", str(exc), "jobs that leave squeue are judged by their result files, "
                                              "the others wait in the state squeue gives")
            unseen = unaccounted
    # sacct's latest record of a job Slurm requeues after a node failure or a preemption still says how
    # that allocation ended until the job starts again; squeue knows it is queued again
    missing = [j for j in job_ids if j not in found or found[j].state in REQUEUE_CANDIDATES]
    if missing:
        try:
            queued = parse_squeue(query_slurm(["squeue", "-h", "-r", "-u", user, "-o", "%i|%T|%r"]))
            outages.answered("squeue")
        except SchedulerError as exc:
            outages.failed("squeue", str(exc), "the jobs sacct cannot place wait as queued, nothing is "
                                               "judged from squeue until it answers")
            queued, unseen = {}, JobStatus(JobState.PENDING, reason="squeue failed", confirmed=False)
            found.update((j, unseen) for j in missing if j in found)  # requeued or not: not known now
        for j in missing:
            if j in queued:
                ended = found.get(j)  # how the allocation before this requeue ended, when sacct says
                requeued = ended is not None and ended.state in REQUEUE_CANDIDATES and queued[j].state == JobState.PENDING
                found[j] = replace(queued[j], reason=f"{REQUEUED_AFTER}{ended.reason}") if requeued else queued[j]
    return {j: found.get(j, unseen) for j in job_ids}


class _EveryTime(Outages):
    """For callers that keep no ``Outages``: a warning for every failure, nothing when it answers."""

    def failed(self, what: str, error: str, meanwhile: str) -> None:
        log.warning("%s; %s", error, meanwhile)

    def answered(self, what: str) -> None:
        pass


def cluster_config() -> Dict[str, str]:
    """``scontrol show config`` as key -> value; SchedulerError when the controller does not answer."""
    return parse_scontrol_config(query_slurm(["scontrol", "show", "config"]))


def partition_gpus_per_node(partition: Optional[str]) -> Optional[int]:
    """The most GPUs any node of ``partition`` (the cluster's default partition when None) has, from
    one ``sinfo`` call; None when its nodes have no GPUs. Raises SchedulerError when sinfo cannot
    answer, UserError when Slurm has no such partition (or no default one)."""
    most, default = parse_sinfo_gpus(query_slurm(["sinfo", "-h", "-a", "-o", "%P|%G"]))
    name = partition if partition is not None else default
    if name is None:
        raise UserError("Slurm has no default partition; set slurm.partition")
    if name not in most:
        known = ", ".join(sorted(most)) or "none"
        raise UserError(f"Slurm has no partition {name!r} (sinfo lists: {known})")
    return most[name] or None


def has_accounting(cluster: Dict[str, str]) -> bool:
    """Whether sacct can answer for ended jobs on this cluster."""
    return cluster.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"


def scancel(job_ids: Sequence[str]) -> None:
    """One scancel for all the jobs (Slurm sends SIGTERM, then SIGKILL after KillWait). A non-zero exit
    means some jobs had already ended, and scancel still cancelled the others; a command that could not
    run or reach the controller raises SchedulerError, so the caller can try again."""
    if not job_ids:
        return
    try:
        run_slurm(["scancel", *job_ids])
    except subprocess.CalledProcessError:
        pass
    except (OSError, subprocess.SubprocessError) as exc:
        raise SchedulerError(f"scancel failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    stderr = getattr(exc, "stderr", None)
    return stderr.strip().splitlines()[-1] if isinstance(stderr, str) and stderr.strip() else str(exc)


def jobs_named(names: Sequence[str], user: str, accounting: bool) -> Dict[str, List[Tuple[str, JobState]]]:
    """Name -> [(job id, state)] of this user's jobs with those names (squeue, and sacct for ended ones;
    array ranges expanded). Raises SchedulerError when squeue (or sacct, with accounting) cannot answer:
    "no such job" is never concluded from a failed query, since it would have the job submitted twice."""
    found: Dict[str, List[Tuple[str, JobState]]] = {}
    if not names:
        return found
    joined = ",".join(sorted(set(names)))
    commands = [["squeue", "-h", "-r", "-u", user, "--name", joined, "-o", "%i|%j|%T"]]
    if accounting:
        commands.append(["sacct", "-n", "-P", "-X", "-S", "now-30days", "--name", joined, "-o", "JobID,JobName,State"])
    for command in commands:
        for name, jobs in parse_names(query_slurm(command)).items():
            found.setdefault(name, []).extend(jobs)
    return found
