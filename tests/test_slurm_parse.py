"""Slurm output parsers, on literal output captured from Slurm 22.05."""

import pytest

from hpo_slurm.executors.base import JobState
from hpo_slurm.executors.slurm.parse import (
    expand_array_ids, gres_gpus, is_retryable, is_submit_limit, parse_names, parse_sacct, parse_scontrol_config,
    parse_sinfo_gpus, parse_squeue,
)

SACCT = """\
46_0|COMPLETED|0:0
46_1|FAILED|1:0
46_[2-4%2]|PENDING|0:0
50|CANCELLED by 0|0:15
51|PREEMPTED|0:0
52|TIMEOUT|0:0
53|OUT_OF_MEMORY|0:125
54|RUNNING|0:0
"""


def test_sacct_rows_become_statuses_with_arrays_expanded():
    statuses = parse_sacct(SACCT)
    assert statuses["46_0"].state == JobState.COMPLETED and statuses["46_0"].exit_code == 0
    assert statuses["46_1"].state == JobState.FAILED and statuses["46_1"].exit_code == 1
    assert [statuses[f"46_{i}"].state for i in (2, 3, 4)] == [JobState.PENDING] * 3
    assert "46_5" not in statuses
    assert statuses["50"].state == JobState.CANCELLED and statuses["50"].exit_code == 128 + 15
    assert statuses["51"].state == JobState.PREEMPTED
    assert statuses["52"].state == JobState.TIMEOUT
    assert statuses["53"].state == JobState.FAILED
    assert statuses["54"].state == JobState.RUNNING


def test_a_requeued_job_shows_its_latest_attempt():
    statuses = parse_sacct("60|PREEMPTED|0:0\n60|PENDING|0:0\n")
    assert statuses["60"].state == JobState.PENDING


def test_squeue_states():
    statuses = parse_squeue("70_1|RUNNING|None\n70_2|PENDING|Priority\n71|COMPLETING|None\n72|PENDING|BeginTime\n")
    assert statuses["70_1"].state == JobState.RUNNING
    assert statuses["70_2"].state == JobState.PENDING and statuses["70_2"].reason == "Priority"
    assert statuses["71"].state == JobState.RUNNING
    assert statuses["72"].state == JobState.PENDING


def test_array_id_expansion():
    assert expand_array_ids("9_[0-2,5%3]") == ["9_0", "9_1", "9_2", "9_5"]
    assert expand_array_ids("9_4") == ["9_4"]
    assert expand_array_ids("12") == ["12"]


def test_names_map_to_job_ids():
    names = parse_names("80_[0-1]|hpo.ab.t1-r1+1|PENDING\n81|hpo.ab.t3-r1|RUNNING\n"
                        "80_2|hpo.ab.t1-r1+1|COMPLETED\n82|hpo.ab.t4-r1|CANCELLED by 0\n")
    assert names == {"hpo.ab.t1-r1+1": [("80_0", JobState.PENDING), ("80_1", JobState.PENDING),
                                        ("80_2", JobState.COMPLETED)],
                     "hpo.ab.t3-r1": [("81", JobState.RUNNING)], "hpo.ab.t4-r1": [("82", JobState.CANCELLED)]}


def test_scontrol_config_values():
    text = "Configuration data as of 2026-11-22T23:10:00\nMaxArraySize            = 1001\nAccountingStorageType   = accounting_storage/slurmdbd\n"
    config = parse_scontrol_config(text)
    assert config["MaxArraySize"] == "1001"
    assert config["AccountingStorageType"] == "accounting_storage/slurmdbd"


def test_submitted_job_id_and_error_classes():
    assert is_retryable("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation")
    assert is_retryable("sbatch: error: QOSMaxSubmitJobPerUserLimit")
    assert is_retryable("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying")
    assert not is_retryable("sbatch: error: Batch job submission failed: Invalid partition name specified")
    assert not is_retryable("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified")
    # what Slurm 22.05 prints for MaxSubmitJobs (each line alone is recognised)
    assert is_submit_limit("sbatch: error: AssocMaxSubmitJobLimit")
    assert is_submit_limit("sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
                           "(job submit limit, user's size and/or time limits)")
    assert is_submit_limit("sbatch: error: QOSMaxSubmitJobPerUserLimit")
    assert not is_submit_limit("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying")
    assert not is_submit_limit("sbatch: error: Batch job submission failed: Invalid partition name specified")


@pytest.mark.parametrize("gres, gpus", [
    ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:a100:2,gpu:v100:4", 6), ("gpu:a100:2(S:0),gpu:v100:4(S:1)", 6),
    ("gpu:tesla:2(IDX:0,1),lscratch:100", 2), ("gpu:a100", 1), ("gpu", 1), ("(null)", 0), ("lscratch:100", 0),
    ("mps:200,gpu:8(S:0-3)", 8), ("", 0),
])
def test_gpus_in_a_nodes_gres(gres, gpus):
    assert gres_gpus(gres) == gpus


# sinfo -h -a -o '%P|%G' shaped as Slurm 22.05 prints it, for a cluster whose default partition
# mixes node kinds
SINFO = """\
gpu*|gpu:a100:4(S:0-1)
gpu*|gpu:a100:8(S:0-1)
gpu*|(null)
mixed|gpu:a100:2,gpu:v100:4
cpu|(null)
debug|gpu:2
debug|gpu:1
"""


def test_sinfo_gives_the_most_gpus_of_a_node_per_partition_and_the_default():
    assert parse_sinfo_gpus(SINFO) == ({"gpu": 8, "mixed": 6, "cpu": 0, "debug": 2}, "gpu")
    assert parse_sinfo_gpus("cpu|(null)\n") == ({"cpu": 0}, None)  # no default partition
    assert parse_sinfo_gpus("") == ({}, None)
    # captured from scripts/local-slurm.sh's cluster (two nodes of 2 GPUs, grouped on one row)
    assert parse_sinfo_gpus("debug*|gpu:2\nurgent|gpu:2\n") == ({"debug": 2, "urgent": 2}, "debug")
