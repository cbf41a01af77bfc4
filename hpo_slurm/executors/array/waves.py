"""Where each array of a wave chain stands: out, still to come, or never coming.

A capped sweep goes out as a chain: the sweep submits array 1 and the wave job of array 2; each wave
job waits for the previous array (``--dependency=afterany``), submits its own array, then the wave
job of the next one. Runs of an array that is not out yet are bound to placeholder ids
``array-<n>_<task>`` (``placeholder``).

The chain is an explicit state machine. Walking the chain from its first array, ``transition`` takes
the state of the array before (``WaveState.CHAIN_START`` for the first) and what one look at Slurm and
the array's folder shows of the array (an ``Observation``) to the array's state. Only an array with
no wave job of its own (``Observation.NO_WAVE``) depends on the array before it: it is still coming
while a live wave job up the chain will get to it. ``chain_states`` makes the observations (one
lookup of jobs by name for all the arrays involved) and walks the chains.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from hpo_slurm.executors.array.files import ArrayFolders
from hpo_slurm.executors.array.manifest import ArrayManifest
from hpo_slurm.executors.base import JobState

PLACEHOLDER = re.compile(r"^array-(\d+)_(\d+)$")

JobsByName = Dict[str, List[Tuple[str, JobState]]]


def placeholder(index: int, task: int) -> str:
    """The job id a run of array ``index`` is bound to until the array is out."""
    return f"array-{index}_{task}"


def parse_placeholder(job_id: str) -> Optional[Tuple[int, str]]:
    """(array number, task) of a placeholder id; None for a real job id."""
    match = PLACEHOLDER.match(job_id)
    return (int(match.group(1)), match.group(2)) if match else None


class WaveState(enum.Enum):
    """The state of one array of a chain, as one look at Slurm and the files shows it."""

    CHAIN_START = "chain start"  # before the first array: the sweep submitted all it would
    SUBMITTED_NEXT_WAVE_DUE = "submitted, next wave due"  # out; its wave job is live and submits the next one
    SUBMITTED = "submitted"  # out; no wave job after it will be submitted by its own
    PENDING = "pending"  # not out; a live wave job up the chain will submit it
    BROKEN = "broken"  # not out, and nothing alive will submit it

    @property
    def out(self) -> bool:
        """Whether the array itself was submitted."""
        return self in (WaveState.SUBMITTED, WaveState.SUBMITTED_NEXT_WAVE_DUE)


class Observation(enum.Enum):
    """What one look shows of one array: whether it is out (its job id recorded in submitted.json or
    its job found by name) and whether its wave job (recorded in wave.json or found by name) is live."""

    ARRAY_OUT_WAVE_LIVE = "array out, its wave job still queued or running"
    ARRAY_OUT = "array out, its wave job ended or there is none"
    WAVE_LIVE = "array not out, its wave job queued or running"
    WAVE_ENDED = "array not out, its wave job ended"
    NO_WAVE = "array not out, no wave job for it"
    NO_MANIFEST = "array not out, its manifest cannot be read"


def transition(previous: WaveState, seen: Observation) -> WaveState:
    """The state of an array from the state of the array before it in the chain and what is seen of
    the array itself. Pure."""
    if seen is Observation.ARRAY_OUT_WAVE_LIVE:
        return WaveState.SUBMITTED_NEXT_WAVE_DUE
    if seen is Observation.ARRAY_OUT:
        return WaveState.SUBMITTED
    if seen is Observation.WAVE_LIVE:
        return WaveState.PENDING
    if seen in (Observation.WAVE_ENDED, Observation.NO_MANIFEST):
        return WaveState.BROKEN
    # NO_WAVE: the wave job that submitted the array before (or that will) submits this one's next
    if previous in (WaveState.SUBMITTED_NEXT_WAVE_DUE, WaveState.PENDING):
        return WaveState.PENDING
    return WaveState.BROKEN


@dataclass(frozen=True)
class ArrayStatus:
    state: WaveState
    job_id: Optional[str] = None  # the array's job id when it is out


def chain_states(indexes: Sequence[int], folders: ArrayFolders,
                 lookup: Callable[[Sequence[str]], JobsByName]) -> Dict[int, ArrayStatus]:
    """The status of each array in ``indexes``. ``lookup`` finds this user's jobs by name (one call,
    for the arrays and wave jobs of every chain involved); it raises SchedulerError when Slurm cannot
    answer, which propagates: a chain is never judged broken from a failed query. An array found by
    name but not recorded gets its ``submitted.json`` written."""
    manifests: Dict[int, Optional[ArrayManifest]] = {}
    todo = list(indexes)
    while todo:
        index = todo.pop()
        if index in manifests:
            continue
        manifest = folders.manifest(index)
        manifests[index] = manifest
        if manifest is not None and manifest.previous is not None:
            todo.append(manifest.previous)
    names = [n for m in manifests.values() if m is not None for n in (m.job_name, m.wave_name) if n]
    by_name = lookup(names) if names else {}
    seen: Dict[int, Tuple[Observation, Optional[str]]] = {}

    def observe(index: int) -> Tuple[Observation, Optional[str]]:
        if index not in seen:
            seen[index] = _observe(index, manifests.get(index), folders, by_name)
        return seen[index]

    def state_of(index: int) -> WaveState:
        chain = [index]  # this array, then the ones before it while they have no wave job of their own
        while observe(chain[-1])[0] is Observation.NO_WAVE:  # NO_WAVE: its manifest was read
            previous = manifests[chain[-1]].previous  # type: ignore[union-attr]
            if previous is None or previous in chain:
                break
            chain.append(previous)
        state = WaveState.CHAIN_START
        for link in reversed(chain):
            state = transition(state, observe(link)[0])
        return state

    return {index: ArrayStatus(state_of(index), observe(index)[1]) for index in indexes}


def _observe(index: int, manifest: Optional[ArrayManifest], folders: ArrayFolders,
             by_name: JobsByName) -> Tuple[Observation, Optional[str]]:
    """What is seen of array ``index``, and its job id when it is out."""
    job_id = folders.submitted_id(index)
    if job_id is None and manifest is not None:
        jobs = by_name.get(manifest.job_name, [])
        if jobs:
            job_id = sorted(jobs)[0][0].split("_")[0]
            folders.record_submitted(index, job_id)
    wave_jobs = by_name.get(manifest.wave_name, []) if manifest is not None and manifest.wave_name else []
    wave_submitted = manifest is not None and (bool(wave_jobs) or folders.wave_recorded(index))
    wave_live = any(state.live for _, state in wave_jobs)
    if job_id is not None:
        return (Observation.ARRAY_OUT_WAVE_LIVE if wave_submitted and wave_live else Observation.ARRAY_OUT), job_id
    if manifest is None:
        return Observation.NO_MANIFEST, None
    if not wave_submitted:
        return Observation.NO_WAVE, None
    return (Observation.WAVE_LIVE if wave_live else Observation.WAVE_ENDED), None
