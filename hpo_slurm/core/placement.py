"""Where a trial's ranks go: ``slots_per_trial`` GPUs split over nodes of ``gpus_per_node`` GPUs each.

A trial of N > 1 slots runs as N processes (ranks), one per GPU. On one node when N fits on a node;
otherwise over N / gpus_per_node whole nodes, which needs N to be a multiple of gpus_per_node (the
rule Determined applies to ``slots_per_trial`` and its ``slots_per_node``). A trial of 0 or 1 slots
is one process on one node. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


class PlacementError(ValueError):
    """No node layout holds the trial: the message says why and what would fit."""


@dataclass(frozen=True)
class Placement:
    """``nodes`` nodes with ``ranks_per_node`` ranks each; ``gpus_per_rank`` is 1, or 0 for a trial
    that uses no GPU."""

    nodes: int = 1
    ranks_per_node: int = 1
    gpus_per_rank: int = 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def gpus_per_node(self) -> int:
        return self.ranks_per_node * self.gpus_per_rank

    @property
    def distributed(self) -> bool:
        """More than one rank: the job launches and coordinates ranks."""
        return self.world_size > 1

    def node_gpus(self, trial_gpus: int) -> int:
        """The GPUs a job asks of each of its nodes for a trial of ``trial_gpus``: one node's ranks'
        when the trial has several ranks, else all of them (on its one node)."""
        return self.gpus_per_node if self.distributed else trial_gpus


def place(slots: int, gpus_per_node: Optional[int] = None) -> Placement:
    """The placement of a trial of ``slots`` GPUs on nodes of ``gpus_per_node`` GPUs (None: not known,
    so the trial must fit on one node as asked). Raises ``PlacementError`` when no layout holds it."""
    if slots < 0:
        raise PlacementError(f"expected a number of GPUs of at least 0, got {slots}")
    if slots <= 1:
        return Placement(1, 1, slots)
    if gpus_per_node is None or slots <= gpus_per_node:
        return Placement(1, slots, 1)
    if gpus_per_node < 1:
        raise PlacementError(f"{slots} GPUs per trial, but the nodes have no GPUs")
    if slots % gpus_per_node:
        lower = slots - slots % gpus_per_node
        upper = lower + gpus_per_node
        raise PlacementError(
            f"{slots} GPUs cannot be split over whole nodes of {gpus_per_node} GPUs: use at most "
            f"{gpus_per_node} (one node) or a multiple of {gpus_per_node} (such as {lower} or {upper})")
    return Placement(slots // gpus_per_node, gpus_per_node, 1)
