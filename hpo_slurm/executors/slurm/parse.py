"""Pure parsers for Slurm's command output, tested on literal output. No subprocesses here."""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Optional, Tuple

from hpo_slurm.executors.base import JobState, JobStatus

# sacct/squeue state names -> what the driver needs to know.
STATES = {
    "PENDING": JobState.PENDING, "REQUEUED": JobState.PENDING, "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING, "CONFIGURING": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING, "RESIZING": JobState.RUNNING, "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED, "NODE_FAIL": JobState.NODE_FAIL, "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED,
    "PREEMPTED": JobState.PREEMPTED,
    "TIMEOUT": JobState.TIMEOUT, "DEADLINE": JobState.TIMEOUT,
}

_ARRAY_RANGE = re.compile(r"^(?P<base>\d+)_\[(?P<spec>[^\]]+)\]$")

RETRYABLE = (
    "socket timed out", "temporarily unable", "resource temporarily unavailable", "try again",
    "qosmaxsubmitjob", "assocmaxsubmitjob", "maxsubmitjobs", "job violates accounting/qos policy",
    "slurm_persist_conn_open", "unable to contact slurm controller", "connection refused",
    "sending/receiving data", "communications connection failure",
    # munged down or restarting: no credential could be made, so nothing reached the controller
    "protocol authentication error", "munge encode failed",
)

SUBMIT_LIMIT = ("maxsubmitjob", "job submit limit")
UNREACHABLE = (
    "socket timed out", "unable to contact slurm controller", "connection refused", "sending/receiving data",
    "communications connection failure", "slurm_persist_conn_open", "temporarily unable", "timed out after",
    "protocol authentication error", "munge encode failed",
)
# --test-only judges against the nodes that are up now and the jobs queued now: these say nothing
# about whether the job itself is acceptable (a real sbatch would queue it)
NOT_JUDGED_NOW = ("requested node configuration is not available", "job violates accounting/qos policy")


def state_of(text: str) -> JobState:
    """``CANCELLED by 1000`` -> CANCELLED; unknown names count as RUNNING (still to be watched)."""
    name = text.strip().split(" ")[0].rstrip("+")
    return STATES.get(name, JobState.RUNNING)


def expand_array_ids(job_id: str) -> List[str]:
    """``1234_[0-3,7%2]`` -> 1234_0 .. 1234_3, 1234_7; any other id is returned as it is."""
    match = _ARRAY_RANGE.match(job_id)
    if not match:
        return [job_id]
    spec = match.group("spec").split("%")[0]
    ids = []
    for part in spec.split(","):
        if "-" in part:
            first, last = part.split("-")
            ids.extend(f"{match.group('base')}_{i}" for i in range(int(first), int(last) + 1))
        elif part:
            ids.append(f"{match.group('base')}_{part}")
    return ids


def _rows(text: str, columns: int) -> Iterator[List[str]]:
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) >= columns:
            yield fields


def parse_sacct(text: str) -> Dict[str, JobStatus]:
    """``sacct -n -P -X -o JobID,State,ExitCode,JobName`` -> job id -> status. The last row for an id
    wins (a requeued job shows its latest attempt last)."""
    statuses: Dict[str, JobStatus] = {}
    for job_id, state, exit_code, *_ in _rows(text, 3):
        code: Optional[int] = None
        if ":" in exit_code:
            status_code, signal_number = exit_code.split(":", 1)
            code = int(status_code) if status_code.isdigit() else None
            if code == 0 and signal_number.isdigit() and int(signal_number):
                code = 128 + int(signal_number)
        status = JobStatus(state_of(state), exit_code=code, reason=state.strip())
        for expanded in expand_array_ids(job_id.strip()):
            statuses[expanded] = status
    return statuses


def parse_squeue(text: str) -> Dict[str, JobStatus]:
    """``squeue -h -r -o %i|%T|%r`` -> job id -> status."""
    statuses: Dict[str, JobStatus] = {}
    for job_id, state, reason, *_ in _rows(text, 3):
        for expanded in expand_array_ids(job_id.strip()):
            statuses[expanded] = JobStatus(state_of(state), reason=reason.strip())
    return statuses


def parse_names(text: str) -> Dict[str, List[Tuple[str, JobState]]]:
    """``JobID|JobName|State`` rows (squeue ``-o %i|%j|%T`` or sacct ``-o JobID,JobName,State``) ->
    name -> [(job id, state)], array ranges expanded to one id per task."""
    names: Dict[str, List[Tuple[str, JobState]]] = {}
    for job_id, name, state, *_ in _rows(text, 3):
        for expanded in expand_array_ids(job_id.strip()):
            names.setdefault(name.strip(), []).append((expanded, state_of(state)))
    return names


def parse_scontrol_config(text: str) -> Dict[str, str]:
    """``scontrol show config`` -> key -> value."""
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


_GRES_DETAIL = re.compile(r"\([^)]*\)")  # "(S:0-1)", "(IDX:0,2)": sockets or indices, not counts


def gres_gpus(gres: str) -> int:
    """GPUs in one node's generic resources as sinfo's ``%G`` shows them: ``gpu:4`` -> 4,
    ``gpu:a100:4(S:0-1)`` -> 4, ``gpu:a100:2,gpu:v100:4`` -> 6 (every GPU type counts), ``gpu:a100``
    -> 1 (no count is one), ``(null)`` or only other resources (``lscratch:100``) -> 0."""
    total = 0
    for entry in _GRES_DETAIL.sub("", gres).split(","):
        parts = entry.strip().split(":")
        if parts[0] != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 else ""
        total += int(count) if count.isdigit() else 1
    return total


def parse_sinfo_gpus(text: str) -> Tuple[Dict[str, int], Optional[str]]:
    """``sinfo -h -a -o %P|%G`` -> (partition -> the most GPUs any node of it has, the default
    partition's name or None). A partition's rows are its groups of alike nodes; sinfo marks the
    default partition with ``*``."""
    most: Dict[str, int] = {}
    default = None
    for partition, gres, *_ in _rows(text, 2):
        name = partition.strip()
        if name.endswith("*"):
            name = default = name[:-1]
        most[name] = max(most.get(name, 0), gres_gpus(gres.strip()))
    return most, default


def _mentions(message: str, fragments) -> bool:
    lowered = message.lower()
    return any(fragment in lowered for fragment in fragments)


def is_submit_limit(message: str) -> bool:
    """Whether sbatch refused for a cap on the user's queued jobs (each array task counts as one)."""
    return _mentions(message, SUBMIT_LIMIT)


def is_unreachable(message: str) -> bool:
    """Whether an sbatch error means the controller did not answer (nothing was judged)."""
    return _mentions(message, UNREACHABLE)


def is_not_judged_now(message: str) -> bool:
    """Whether an ``sbatch --test-only`` refusal depends on the moment (a queued-jobs cap, nodes down or
    drained) rather than on the job."""
    return _mentions(message, SUBMIT_LIMIT + NOT_JUDGED_NOW)


def is_retryable(message: str) -> bool:
    """Whether an sbatch error can pass if tried again later (busy controller, submit limits)."""
    return _mentions(message, RETRYABLE)
