"""Distributed trials as the config declares them: ``slurm.gpus_per_node`` (Determined's
``slurm.slots_per_node``) with ``resources.slots_per_trial`` must give a node layout, the sbatch options
hpo-slurm sets for it are refused in ``extra_args``/``sbatch_args``, and a partition's GPUs per node
come from the real cluster's ``sinfo``."""

from __future__ import annotations

import os
import re

import pytest
from click.testing import CliRunner

from hpo_slurm.cli import cli
from hpo_slurm.config.schema import parse_config
from hpo_slurm.core.errors import ConfigError, UserError
from hpo_slurm.core.placement import Placement, place
from slurm_cluster import require_cluster, slurm

BASE = {
    "entrypoint": "python3 train.py",
    "hyperparameters": {"lr": {"type": "log", "minval": -4, "maxval": -1}},
    "searcher": {"name": "random", "metric": "loss", "max_trials": 4, "max_length": 100},
}


def parse(slots=None, **slurm_keys):
    data = dict(BASE, slurm=slurm_keys)
    if slots is not None:
        data["resources"] = {"slots_per_trial": slots}
    return parse_config(data, "search.yaml")


def error(slots=None, **slurm_keys) -> str:
    with pytest.raises(ConfigError) as info:
        parse(slots, **slurm_keys)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("key", ["gpus_per_node", "slots_per_node"])
def test_gpus_per_node_under_either_name(key):
    config = parse(16, **{key: 8})
    assert config.slurm.gpus_per_node == 8 and config.warnings == ()
    assert place(config.slots_per_trial, config.slurm.gpus_per_node) == Placement(2, 8, 1)
    assert parse(4).slurm.gpus_per_node is None  # not known: the trial must fit on one node


@pytest.mark.parametrize("slots, gpus_per_node, placement", [
    (0, 4, Placement(1, 1, 0)), (1, 4, Placement(1, 1, 1)), (3, 4, Placement(1, 3, 1)), (4, 4, Placement(1, 4, 1)),
    (8, 4, Placement(2, 4, 1)), (12, 4, Placement(3, 4, 1)),
])
def test_slots_per_trial_that_fit(slots, gpus_per_node, placement):
    config = parse(slots, gpus_per_node=gpus_per_node)
    assert place(config.slots_per_trial, config.slurm.gpus_per_node) == placement


@pytest.mark.parametrize("slots, slurm_keys, message", [
    (6, {"gpus_per_node": 4}, "resources.slots_per_trial: 6 GPUs cannot be split over whole nodes of 4 GPUs: use "
                              "at most 4 (one node) or a multiple of 4 (such as 4 or 8)"),
    (12, {"slots_per_node": 8}, "resources.slots_per_trial: 12 GPUs cannot be split over whole nodes of 8 GPUs: "
                                "use at most 8 (one node) or a multiple of 8 (such as 8 or 16)"),
    (None, {"gpus_per_node": 4, "slots_per_node": 4}, "slurm.slots_per_node: the same setting as "
                                                      "slurm.gpus_per_node (Determined's name for it); keep one"),
    (None, {"gpus_per_node": 0}, "slurm.gpus_per_node: expected a positive integer, got 0"),
    (None, {"slots_per_node": "4"}, "slurm.slots_per_node: expected a positive integer, got '4'"),
    (None, {"gpus_per_node": 2.5}, "slurm.gpus_per_node: expected a positive integer, got 2.5"),
    (None, {"extra_args": {"nodes": 2}}, "slurm.extra_args.nodes: --nodes cannot be set here; set "
                                         "resources.slots_per_trial and slurm.gpus_per_node instead"),
    (None, {"extra_args": {"ntasks": 8}}, "slurm.extra_args.ntasks: --ntasks cannot be set here; set "
                                          "resources.slots_per_trial and slurm.gpus_per_node instead"),
    (None, {"sbatch_args": ["--exclusive", "--ntasks-per-node=4"]},
     "slurm.sbatch_args[1]: --ntasks-per-node cannot be set here; set resources.slots_per_trial and "
     "slurm.gpus_per_node instead"),
    (None, {"sbatch_args": ["--nodes 2"]}, "slurm.sbatch_args[0]: --nodes cannot be set here; set "
                                           "resources.slots_per_trial and slurm.gpus_per_node instead"),
    (None, {"extra_args": {"gpus-per-node": 4}}, "slurm.extra_args.gpus-per-node: --gpus-per-node cannot be set "
                                                 "here; set resources.slots_per_trial, slurm.gpus_per_node (and "
                                                 "slurm.gpu_type) instead"),
])
def test_bad_placement_settings_name_the_key(slots, slurm_keys, message):
    assert error(slots, **slurm_keys) == f"search.yaml: {message}"


def test_a_misfit_is_one_line_exit_2_and_nothing_created(tmp_path, monkeypatch):
    (tmp_path / "search.yaml").write_text(
        "entrypoint: python3 train.py\n"
        "searcher: {name: single, metric: loss, max_length: 10}\n"
        "resources: {slots_per_trial: 6}\n"
        "slurm: {slots_per_node: 4}\n")
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    for args in (["preview", "search.yaml"], ["launch", "search.yaml", "--root", str(root), "--executor", "local"]):
        done = CliRunner().invoke(cli, args)
        assert done.exit_code == 2, done.output
        assert done.stdout == "" and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
        assert done.stderr.startswith("hpo-slurm: search.yaml: resources.slots_per_trial: 6 GPUs cannot be split")
    assert not root.exists()


# ---- the real cluster (scripts/local-slurm.sh: partitions debug, the default, and urgent) ----------

def node_gpus() -> int:
    """The most GPUs of any node, as scontrol reports each node's Gres (not through sinfo)."""
    most = 0
    for line in slurm("scontrol", "show", "node", "-o").splitlines():
        gres = re.search(r"\bGres=(\S*)", line)
        counts = re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres.group(1)) if gres else []
        most = max(most, sum(map(int, counts)))
    return most


def test_partition_gpus_per_node_on_the_cluster():
    from hpo_slurm.executors.slurm.commands import partition_gpus_per_node

    require_cluster()
    expected = node_gpus() or None
    assert partition_gpus_per_node(None) == partition_gpus_per_node("debug") == expected
    assert partition_gpus_per_node("urgent") == expected
    with pytest.raises(UserError, match=r"Slurm has no partition 'nosuch' \(sinfo lists: debug, urgent\)"):
        partition_gpus_per_node("nosuch")


def test_sinfo_that_cannot_answer_is_a_scheduler_error(tmp_path, monkeypatch):
    """A controller that does not answer: sinfo's own last line, as SchedulerError (never None)."""
    from hpo_slurm.executors.base import SchedulerError
    from hpo_slurm.executors.slurm.commands import partition_gpus_per_node

    fake = tmp_path / "sinfo"
    fake.write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(SchedulerError, match=r"^sinfo failed: slurm_load_partitions: Unable to contact slurm "
                                             r"controller \(connect failure\)$"):
        partition_gpus_per_node("debug")
