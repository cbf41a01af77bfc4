"""How a sweep's tasks are cut into job arrays: below MaxArraySize, and in waves when the cluster caps
how many jobs a user may have queued. Pure functions (parsers tested on literal sacctmgr output).

Slurm counts every task of an array as one job against MaxSubmitJobs. A capped sweep goes out as a
chain: array 1, then a wave job (``--dependency=afterany`` on array 1) that submits array 2 and the
next wave job, and so on. While a wave job runs, its array and the next wave job are queued with it,
so a wave holds at most ``room - 2`` tasks. ``plan_requests`` applies this to a batch of runs: each
array holds consecutive runs with the same GPUs per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from hpo_slurm.executors.base import JobRequest


@dataclass(frozen=True)
class Limits:
    max_array_size: int = 1001  # MaxArraySize: task indices must stay below it
    room: Optional[int] = None  # more jobs the user may queue now (cap minus queued); None: no cap
    source: str = ""  # which cap, for messages: "MaxSubmitJobs 100 (40 queued)"


@dataclass(frozen=True)
class Plan:
    sizes: List[int]  # tasks per array, in submission order
    waves: bool  # True: one array at a time, each submitted by a wave job when the previous ended

    @property
    def count(self) -> int:
        return sum(self.sizes)


def plan_arrays(count: int, limits: Limits) -> Plan:
    """Split ``count`` tasks into arrays. Everything goes at once when it fits the user's cap (or there
    is none); otherwise waves of ``room - 2`` tasks (at least 1)."""
    if count <= 0:
        return Plan([], False)
    largest = max(1, limits.max_array_size)
    room = limits.room
    waves = room is not None and count > room
    if waves:
        largest = min(largest, max(1, room - 2))
    sizes = [min(largest, count - start) for start in range(0, count, largest)]
    return Plan(sizes, waves and len(sizes) > 1)


@dataclass(frozen=True)
class PlannedArray:
    """One array of a submission: its number ``n`` (folder ``jobs/array-<n>/``), its runs in task
    order, the time limit of its tasks (the longest of its runs'; None when one has none) and the
    GPUs of each task."""

    index: int
    requests: Sequence[JobRequest]
    time_minutes: Optional[int]
    gpus: int


def plan_requests(requests: Sequence[JobRequest], limits: Limits, first_index: int) -> Tuple[List[PlannedArray], Plan]:
    """The arrays for ``requests``, numbered from ``first_index``: consecutive requests with the same
    GPUs, each group split by ``plan_arrays``; the plan goes in waves when any group needs them."""
    arrays: List[PlannedArray] = []
    plan_sizes: List[int] = []
    waves = False
    index = first_index
    start = 0
    while start < len(requests):
        end = start
        while end < len(requests) and requests[end].gpus == requests[start].gpus:
            end += 1
        group = list(requests[start:end])
        plan = plan_arrays(len(group), limits)
        waves = waves or plan.waves
        offset = 0
        for size in plan.sizes:
            chunk = group[offset:offset + size]
            times = [r.time_minutes for r in chunk]
            longest = None if None in times else max(t for t in times if t is not None)
            arrays.append(PlannedArray(index, chunk, longest, chunk[0].gpus))
            plan_sizes.append(size)
            index += 1
            offset += size
        start = end
    return arrays, Plan(plan_sizes, waves)


# ---- limits -------------------------------------------------------------------------------------

def positive_int(text: str) -> Optional[int]:
    """``text`` as a positive integer, else None (Slurm's blank or 0 means no cap)."""
    text = text.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def parse_assoc(text: str) -> Dict[str, object]:
    """``sacctmgr -n -P show assoc where user=U format=MaxSubmit,GrpSubmit,QOS,DefaultQOS`` ->
    {"max_submit": smallest per-user cap or None, "qos": [names], "default_qos": name or None}."""
    caps: List[int] = []
    qos: List[str] = []
    default_qos = None
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 4:
            continue
        for value in fields[:2]:
            cap = positive_int(value)
            if cap is not None:
                caps.append(cap)
        qos.extend(q for q in fields[2].split(",") if q.strip() and q.strip() not in qos)
        default_qos = default_qos or (fields[3].strip() or None)
    return {"max_submit": min(caps) if caps else None, "qos": qos, "default_qos": default_qos}


def parse_qos(text: str) -> Dict[str, Optional[int]]:
    """``sacctmgr -n -P show qos format=Name,MaxSubmitPU,GrpSubmit`` -> qos name -> per-user cap."""
    caps: Dict[str, Optional[int]] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3 or not fields[0].strip():
            continue
        found = [c for c in (positive_int(fields[1]), positive_int(fields[2])) if c is not None]
        caps[fields[0].strip()] = min(found) if found else None
    return caps


def user_cap(assoc: Dict[str, object], qos_caps: Dict[str, Optional[int]], qos: Optional[str]) -> Optional[int]:
    """The smallest cap on a user's queued jobs from their association and the QOS the jobs use
    (``slurm.qos``, else the association's default QOS, else ``normal``)."""
    caps: List[int] = []
    if assoc.get("max_submit"):
        caps.append(int(assoc["max_submit"]))  # type: ignore[arg-type]
    name = qos or assoc.get("default_qos") or "normal"
    if qos_caps.get(str(name)):
        caps.append(int(qos_caps[str(name)]))  # type: ignore[arg-type]
    return min(caps) if caps else None
