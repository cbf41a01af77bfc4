"""Determined's ``DistributedContext`` on hpo-slurm: a trial's place among its ranks, and object collectives.

hpo-slurm starts one process per rank with torch.distributed's ``env://`` variables set
(``hpo_slurm.tasks.ranks``). ``DistributedContext.from_torch_distributed()`` reads them: RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, and the node's place from GROUP_RANK / GROUP_WORLD_SIZE (set by
torchrun) or else NODE_RANK and WORLD_SIZE / LOCAL_WORLD_SIZE (set by hpo-slurm). A missing variable
raises ``KeyError``, as in Determined (scripts catch it to fall back to a single process).

The collectives (``broadcast``, ``gather``, ``allgather`` and their ``_local`` forms) move picklable
Python objects. With one rank (one rank per node for the ``_local`` forms) they need nothing. With
more they run torch.distributed's object collectives, so the script must have called
``torch.distributed.init_process_group(...)`` first (a ``RuntimeError`` says so otherwise); they use a
gloo group (the world group when its backend is gloo, else one made at the first collective). As in
every collective, every rank (every rank of the node for ``_local``) calls them in the same order.
The first ``_local`` collective on several nodes is also the one where the per-node groups are made,
which every rank of the trial must join.

Constructor arguments of Determined's ZMQ transport (``chief_ip``, ``pub_port``, ``pull_port``,
``port_offset``, ``force_tcp``) are accepted and unused. torch is imported only by the collectives.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from hpo_slurm.compat.errors import Unsupported


class DistributedContext:
    """This process's place in the trial: ``rank`` of ``size``; ``local_rank`` of ``local_size`` on its
    node; ``cross_rank`` (the node) of ``cross_size`` nodes. Give all six, or none (a single process)."""

    def __init__(self, *, rank: Optional[int] = None, size: Optional[int] = None, local_rank: Optional[int] = None,
                 local_size: Optional[int] = None, cross_rank: Optional[int] = None,
                 cross_size: Optional[int] = None, chief_ip: Optional[str] = None, pub_port: int = 0,
                 pull_port: int = 0, port_offset: int = 0, force_tcp: bool = False) -> None:
        given = (rank, size, local_rank, local_size, cross_rank, cross_size)
        if sum(x is not None for x in given) not in (0, 6):
            raise ValueError("rank, size, local_rank, local_size, cross_rank and cross_size must all be "
                             "provided if any are provided")
        self.rank = int(rank) if rank is not None else 0
        self.size = int(size) if size is not None else 1
        self.local_rank = int(local_rank) if local_rank is not None else 0
        self.local_size = int(local_size) if local_size is not None else 1
        self.cross_rank = int(cross_rank) if cross_rank is not None else 0
        self.cross_size = int(cross_size) if cross_size is not None else 1
        if not (0 <= self.rank < self.size and 0 <= self.local_rank < self.local_size
                and 0 <= self.cross_rank < self.cross_size):
            raise ValueError(f"inconsistent ranks: rank {self.rank} of {self.size}, local {self.local_rank} of "
                             f"{self.local_size}, cross {self.cross_rank} of {self.cross_size}")
        self._chief_ip = chief_ip
        self._world_group: Any = None  # the gloo group of every rank, made at the first collective
        self._local_group: Any = None  # the gloo group of this node's ranks
        self._local_ranks: List[int] = []  # their global ranks, local chief first

    # ---- construction from an environment ---------------------------------------------------------
    @classmethod
    def from_torch_distributed(cls, chief_ip: Optional[str] = None) -> "DistributedContext":
        """From torch.distributed's ``env://`` variables (see the module docstring); ``KeyError`` when
        one is missing."""
        env = os.environ
        size, local_size = int(env["WORLD_SIZE"]), int(env["LOCAL_WORLD_SIZE"])
        if "GROUP_RANK" in env:
            cross_rank = int(env["GROUP_RANK"])
        elif "NODE_RANK" in env:
            cross_rank = int(env["NODE_RANK"])
        else:
            raise KeyError("GROUP_RANK")
        cross_size = int(env["GROUP_WORLD_SIZE"]) if "GROUP_WORLD_SIZE" in env else max(1, size // max(1, local_size))
        return cls(rank=int(env["RANK"]), size=size, local_rank=int(env["LOCAL_RANK"]), local_size=local_size,
                   cross_rank=cross_rank, cross_size=cross_size, chief_ip=chief_ip)

    @classmethod
    def from_horovod(cls, hvd: Any, chief_ip: Optional[str] = None) -> "DistributedContext":
        raise Unsupported("DistributedContext.from_horovod",
                          "use torch.distributed and DistributedContext.from_torch_distributed()")

    @classmethod
    def from_deepspeed(cls, chief_ip: Optional[str] = None) -> "DistributedContext":
        raise Unsupported("DistributedContext.from_deepspeed",
                          "use torch.distributed and DistributedContext.from_torch_distributed()")

    @classmethod
    def from_tf_config(cls) -> Any:
        raise Unsupported("DistributedContext.from_tf_config",
                          "use torch.distributed and DistributedContext.from_torch_distributed()")

    # ---- where this process is --------------------------------------------------------------------
    def get_rank(self) -> int:
        return self.rank

    def get_size(self) -> int:
        return self.size

    def get_local_rank(self) -> int:
        return self.local_rank

    def get_local_size(self) -> int:
        return self.local_size

    def get_cross_rank(self) -> int:
        return self.cross_rank

    def get_cross_size(self) -> int:
        return self.cross_size

    def get_num_agents(self) -> int:
        """The number of nodes (Determined's agents)."""
        return self.cross_size

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def is_local_chief(self) -> bool:
        return self.local_rank == 0

    def close(self) -> None:
        """Nothing to release: the groups belong to torch.distributed's process group."""

    # ---- collectives ------------------------------------------------------------------------------
    def broadcast(self, stuff: Any = None) -> Any:
        """Every rank gets the chief's ``stuff``."""
        return self._broadcast(stuff, "broadcast", local=False)

    def gather(self, stuff: Any) -> Optional[List[Any]]:
        """The chief gets every rank's ``stuff`` in rank order; the other ranks get None."""
        return self._gather(stuff, "gather", local=False)

    def allgather(self, stuff: Any) -> List[Any]:
        """Every rank gets every rank's ``stuff`` in rank order."""
        return self._allgather(stuff, "allgather", local=False)

    def broadcast_local(self, stuff: Any = None) -> Any:
        """Every rank of this node gets the local chief's ``stuff``."""
        return self._broadcast(stuff, "broadcast_local", local=True)

    def gather_local(self, stuff: Any) -> Optional[List[Any]]:
        """The local chief gets the ``stuff`` of every rank of its node in local-rank order; the others None."""
        return self._gather(stuff, "gather_local", local=True)

    def allgather_local(self, stuff: Any) -> List[Any]:
        """Every rank of this node gets the ``stuff`` of every rank of the node in local-rank order."""
        return self._allgather(stuff, "allgather_local", local=True)

    def _broadcast(self, stuff: Any, what: str, local: bool) -> Any:
        if self._size(local) < 2:
            return stuff
        dist, group, index, chief = self._among(what, local)
        box = [stuff if index == 0 else None]
        dist.broadcast_object_list(box, src=chief, group=group)
        return box[0]

    def _gather(self, stuff: Any, what: str, local: bool) -> Optional[List[Any]]:
        size = self._size(local)
        if size < 2:
            return [stuff]
        dist, group, index, chief = self._among(what, local)
        out: Optional[List[Any]] = [None] * size if index == 0 else None
        dist.gather_object(stuff, out, dst=chief, group=group)
        return out

    def _allgather(self, stuff: Any, what: str, local: bool) -> List[Any]:
        size = self._size(local)
        if size < 2:
            return [stuff]
        dist, group, _, _ = self._among(what, local)
        out: List[Any] = [None] * size
        dist.all_gather_object(out, stuff, group=group)
        return out

    def _size(self, local: bool) -> int:
        return self.local_size if local else self.size

    def _among(self, what: str, local: bool) -> Tuple[Any, Any, int, int]:
        """For a collective over every rank, or over this node's (``local``): torch.distributed, the gloo
        group, this process's place in it, and the global rank of the group's chief."""
        dist = self._dist(what)
        if local:
            group = self._local()
            return dist, group, self.local_rank, self._local_ranks[0]
        return dist, self._world(), self.rank, 0

    # ---- torch.distributed ------------------------------------------------------------------------
    def _dist(self, what: str) -> Any:
        """torch.distributed, which must be initialized with this context's world size."""
        dist = sys.modules.get("torch.distributed")
        if dist is None or not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                f"DistributedContext.{what}() with {self.size} ranks runs over torch.distributed: call "
                "torch.distributed.init_process_group(...) first")
        if dist.get_world_size() != self.size or dist.get_rank() != self.rank:
            raise RuntimeError(
                f"DistributedContext is rank {self.rank} of {self.size} but torch.distributed's process group "
                f"is rank {dist.get_rank()} of {dist.get_world_size()}")
        return dist

    def _world(self) -> Any:
        """The gloo group of every rank: None (torch's default group) when that is gloo; no reference to
        it is kept, so ``destroy_process_group()`` really ends it."""
        dist = sys.modules["torch.distributed"]
        if dist.get_backend() == "gloo":
            return None
        if self._world_group is None:
            self._world_group = dist.new_group(backend="gloo")
        return self._world_group

    def _local(self) -> Any:
        """The gloo group of this node's ranks: the world's when the trial has one node, else one group per
        node, made by every rank (each rank's node comes from an allgather)."""
        if self._local_group is not None:
            return self._local_group
        if self.local_size == self.size:
            self._local_ranks = list(range(self.size))
            return self._world()
        dist = sys.modules["torch.distributed"]
        places = self.allgather((self.cross_rank, self.local_rank, self.rank))
        nodes: Dict[int, List[Any]] = {}
        for cross_rank, local_rank, rank in places:
            nodes.setdefault(cross_rank, []).append((local_rank, rank))
        for cross_rank in sorted(nodes):  # every rank makes every group, in the same order
            members = [rank for _, rank in sorted(nodes[cross_rank])]
            group = dist.new_group(ranks=members, backend="gloo")
            if cross_rank == self.cross_rank:
                self._local_group, self._local_ranks = group, members
        return self._local_group


class DummyDistributedContext(DistributedContext):
    """A single process: rank 0 of 1 on one node."""

    def __init__(self) -> None:
        super().__init__(rank=0, size=1, local_rank=0, local_size=1, cross_rank=0, cross_size=1)
