"""The wave chain of a capped sweep as a state machine: every transition of ``waves.transition``, and
chains of array folders judged through it (no Slurm: jobs by name come from a dict)."""

from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Tuple

import pytest

from hpo_slurm.core.fsio import write_json_atomic
from hpo_slurm.core.protocol import RunSpec
from hpo_slurm.executors.array.files import ArrayFolders
from hpo_slurm.executors.array.manifest import ArrayManifest
from hpo_slurm.executors.array.waves import (
    ArrayStatus, Observation, WaveState, chain_states, parse_placeholder, placeholder, transition,
)
from hpo_slurm.executors.base import JobState, SchedulerError

S, O = WaveState, Observation
# (state of the array before, what is seen of this array) -> this array's state
TABLE = {
    # the array is out: the state before does not matter; a live wave job of its own submits the next one
    **{(before, O.ARRAY_OUT_WAVE_LIVE): S.SUBMITTED_NEXT_WAVE_DUE for before in S},
    **{(before, O.ARRAY_OUT): S.SUBMITTED for before in S},
    # not out, but its own wave job decides
    **{(before, O.WAVE_LIVE): S.PENDING for before in S},
    **{(before, O.WAVE_ENDED): S.BROKEN for before in S},
    **{(before, O.NO_MANIFEST): S.BROKEN for before in S},
    # not out and no wave job yet: coming only while a live wave job up the chain will get to it
    (S.CHAIN_START, O.NO_WAVE): S.BROKEN,  # the sweep itself should have submitted it or its wave job
    (S.SUBMITTED_NEXT_WAVE_DUE, O.NO_WAVE): S.PENDING,
    (S.SUBMITTED, O.NO_WAVE): S.BROKEN,
    (S.PENDING, O.NO_WAVE): S.PENDING,
    (S.BROKEN, O.NO_WAVE): S.BROKEN,
}


def test_the_table_covers_every_state_and_observation():
    assert set(TABLE) == set(itertools.product(WaveState, Observation))


@pytest.mark.parametrize("before,seen", sorted(TABLE, key=lambda key: (key[0].value, key[1].value)),
                         ids=lambda value: value.name)
def test_transition(before, seen):
    assert transition(before, seen) is TABLE[(before, seen)]


def test_only_arrays_that_are_out_count_as_out():
    assert {state for state in WaveState if state.out} == {S.SUBMITTED, S.SUBMITTED_NEXT_WAVE_DUE}


def test_placeholders():
    assert placeholder(3, 7) == "array-3_7"
    assert parse_placeholder("array-3_7") == (3, "7")
    assert parse_placeholder("1234_7") is None and parse_placeholder("array-3") is None


# ---- chains of folders ----------------------------------------------------------------------------

def spec(run_id: str, experiment_dir: str = "/x/exp") -> RunSpec:
    return RunSpec(experiment_dir=experiment_dir, context_dir=f"{experiment_dir}/context", trial_id=1, run_id=run_id,
                   hparams={"lr": 0.1}, target_length=10, entrypoint="python3 train.py")


def make_chain(folders: ArrayFolders, count: int) -> None:
    """A capped sweep's chain: array 0 submitted by the sweep, arrays 1.. by wave jobs."""
    for index in range(count):
        folders.write_manifest(ArrayManifest.of(
            index, "/x/exp", f"hpo.u.array-{index}", (spec(f"t{index}-r1"),),
            wave_name=f"hpo.u.wave-{index}" if index else None,
            previous=index - 1 if index else None, next=index + 1 if index + 1 < count else None,
        ))


def judge(folders: ArrayFolders, indexes: List[int], jobs: Dict[str, List[Tuple[str, JobState]]]) -> Dict[int, ArrayStatus]:
    asked: List[List[str]] = []

    def lookup(names):
        asked.append(sorted(names))
        return jobs

    states = chain_states(indexes, folders, lookup)
    assert len(asked) <= 1  # one query for every chain involved
    return states


def states_of(statuses: Dict[int, ArrayStatus]) -> Dict[int, Optional[WaveState]]:
    return {index: status.state for index, status in statuses.items()}


def test_a_chain_while_its_waves_run(tmp_path):
    folders = ArrayFolders(tmp_path / "jobs")
    make_chain(folders, 4)
    folders.record_submitted(0, "100")
    folders.record_wave(1, "101")
    # wave 1 is running: array 1 is coming, and so are 2 and 3, whose wave jobs wave 1 and 2 will submit
    assert states_of(judge(folders, [0, 1, 2, 3], {"hpo.u.wave-1": [("101", JobState.RUNNING)]})) == {
        0: S.SUBMITTED, 1: S.PENDING, 2: S.PENDING, 3: S.PENDING}
    # wave 1 submitted array 1 (found by name, then recorded) and is about to submit wave 2
    jobs = {"hpo.u.wave-1": [("101", JobState.RUNNING)], "hpo.u.array-1": [("102_0", JobState.PENDING)]}
    assert judge(folders, [1, 2], jobs) == {1: ArrayStatus(S.SUBMITTED_NEXT_WAVE_DUE, "102"), 2: ArrayStatus(S.PENDING)}
    assert folders.submitted_id(1) == "102"
    # wave 1 ended after submitting wave 2, which waits
    folders.record_wave(2, "103")
    jobs = {"hpo.u.wave-1": [("101", JobState.COMPLETED)], "hpo.u.wave-2": [("103", JobState.PENDING)]}
    assert states_of(judge(folders, [1, 2, 3], jobs)) == {1: S.SUBMITTED, 2: S.PENDING, 3: S.PENDING}


def test_a_chain_that_broke(tmp_path):
    folders = ArrayFolders(tmp_path / "jobs")
    make_chain(folders, 4)
    folders.record_submitted(0, "100")
    # the sweep never submitted wave 1: nothing will submit arrays 1..3
    assert states_of(judge(folders, [1, 2, 3], {})) == {1: S.BROKEN, 2: S.BROKEN, 3: S.BROKEN}
    # wave 1 ended without submitting its array, or wave 2 after it
    folders.record_wave(1, "101")
    assert states_of(judge(folders, [1, 2, 3], {"hpo.u.wave-1": [("101", JobState.FAILED)]})) == {
        1: S.BROKEN, 2: S.BROKEN, 3: S.BROKEN}
    # array 1 is out but its wave job ended without submitting wave 2
    folders.record_submitted(1, "102")
    assert states_of(judge(folders, [2, 3], {"hpo.u.wave-1": [("101", JobState.COMPLETED)]})) == {
        2: S.BROKEN, 3: S.BROKEN}
    # an unreadable manifest: its array is not coming (unless it is out)
    (folders.manifest_path(3)).write_text("{")
    assert states_of(judge(folders, [3], {})) == {3: S.BROKEN}
    folders.record_submitted(3, "200")
    assert judge(folders, [3], {}) == {3: ArrayStatus(S.SUBMITTED, "200")}


def test_a_chain_whose_previous_pointers_loop_is_broken_not_endless(tmp_path):
    folders = ArrayFolders(tmp_path / "jobs")
    for index, previous in ((0, 1), (1, 0)):
        folders.write_manifest(ArrayManifest.of(index, "/x/exp", f"a{index}", (spec(f"t{index}-r1"),),
                                                wave_name=f"w{index}", previous=previous))
    assert states_of(judge(folders, [0, 1], {})) == {0: S.BROKEN, 1: S.BROKEN}


def test_a_lookup_that_fails_propagates(tmp_path):
    folders = ArrayFolders(tmp_path / "jobs")
    make_chain(folders, 2)

    def unreachable(names):
        raise SchedulerError("squeue: Socket timed out")

    with pytest.raises(SchedulerError):
        chain_states([1], folders, unreachable)
    assert folders.submitted_id(1) is None


def test_folders_number_arrays_in_order(tmp_path):
    folders = ArrayFolders(tmp_path / "jobs")
    assert folders.indexes() == [] and folders.next_index() == 0
    for index in (0, 2, 10):
        folders.write_manifest(ArrayManifest.of(index, "/x/exp", f"a{index}", (spec("r"),)))
    (tmp_path / "jobs" / "array-x").mkdir()
    assert folders.indexes() == [0, 2, 10] and folders.next_index() == 11
    write_json_atomic(folders.folder(2) / "submitted.json", {"job": "no id"})
    assert folders.submitted_id(2) is None and folders.manifest(5) is None
