"""Determined's ``DataLoader``: the arguments of torch's, and the trainer builds the real loader.

The trainer asks a ``DataLoader`` for a torch ``DataLoader`` whose batches come from a stream that is
seeded, sharded over the ranks and resumable:

- Epoch ``e`` of the data is the dataset's indices in the order the trial seed and ``e`` alone decide
  (``shuffle=True``: a permutation drawn from a generator seeded with both; ``shuffle=False``: in
  order; a ``sampler`` or ``batch_sampler`` given: as it yields them, after ``set_epoch(e)`` when it has
  one), cut into batches of ``batch_size`` (the last one smaller unless ``drop_last``).
- The epochs follow one another as one stream of batches. Global step ``s`` (one optimizer step of
  every rank) takes the stream's batches ``s*N .. s*N+N-1`` for N ranks, rank ``r`` the ``s*N+r``-th,
  as Determined's ``DistributedBatchSampler`` shards whole batches. A run that resumes at step ``s``
  starts the stream there: it skips the batches already trained and sees exactly the batches an
  uninterrupted run would.
- Validation loaders give each rank the batches ``r, r+N, ...`` of one pass over the data.

Worker processes (``num_workers > 0``) get their seeds from a generator private to the loader, so
building a loader never draws from torch's global generator. Random transforms run in the main
process (``num_workers=0``) draw from the global generators, which checkpoints save, and resume
exactly; in worker processes they do not. The loader's ``generator`` argument is not used for the order
(the trial seed decides it).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Type, Union

import numpy as np
import torch
from torch.utils import data
from torch.utils.data._utils import collate

logger = logging.getLogger("determined.pytorch")

TorchData = Union[Dict[str, torch.Tensor], Sequence[torch.Tensor], torch.Tensor]


class DataLoader:
    """Takes torch ``DataLoader``'s arguments (see the module docstring for what the trainer does with
    them). ``IterableDataset`` is refused (its order cannot be resumed); ``batch_size=None`` needs a
    ``batch_sampler``. Iterating it directly (outside the trainer) gives one pass over the data, shuffled
    from torch's global generator when ``shuffle=True``."""

    def __init__(self, dataset: data.Dataset, batch_size: Optional[int] = 1, shuffle: bool = False,
                 sampler: Optional[Any] = None, batch_sampler: Optional[Any] = None, num_workers: int = 0,
                 collate_fn: Optional[Callable] = None, pin_memory: bool = False, drop_last: bool = False,
                 timeout: float = 0, worker_init_fn: Optional[Callable[[int], None]] = None,
                 multiprocessing_context: Any = None, generator: Any = None, *,
                 prefetch_factor: Optional[int] = None, persistent_workers: bool = False):
        if isinstance(dataset, data.IterableDataset):
            raise ValueError("det.pytorch.DataLoader takes a map-style dataset, not an IterableDataset: its order "
                             "cannot be sharded or resumed (return a torch DataLoader and call "
                             "context.experimental.disable_dataset_reproducibility_checks())")
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing. "
                             "let num_workers > 0 to enable multiprocessing.")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                                 "and drop_last")
            batch_size = None
        elif batch_size is None:
            raise ValueError("det.pytorch.DataLoader needs batch_size or batch_sampler (batch_size=None without "
                             "a batch_sampler is not supported)")
        elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.collate_fn = collate_fn if collate_fn is not None else collate.default_collate
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = persistent_workers

    # ---- the batches of one epoch ------------------------------------------------------------------
    def batches_per_epoch(self) -> int:
        """How many batches one pass over the data gives."""
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        assert self.batch_size is not None
        records = len(self.sampler) if self.sampler is not None else len(self.dataset)  # type: ignore[arg-type]
        return records // self.batch_size if self.drop_last else math.ceil(records / self.batch_size)

    def epoch_batches(self, epoch: int, seed: int) -> Sequence[List[int]]:
        """The batches (lists of dataset indices) of epoch ``epoch`` for trial seed ``seed``."""
        if self.batch_sampler is not None:
            _set_epoch(self.batch_sampler, epoch)
            return [list(batch) for batch in self.batch_sampler]
        if self.sampler is not None:
            _set_epoch(self.sampler, epoch)
            order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        elif self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            order = torch.randperm(len(self.dataset), generator=generator)  # type: ignore[arg-type]
        else:
            order = torch.arange(len(self.dataset))  # type: ignore[arg-type]
        return _Chunks(order, self.batch_size or 1, self.drop_last)

    # ---- torch loaders -----------------------------------------------------------------------------
    def build(self, seed: int, repeat: bool, start_step: int = 0, num_replicas: int = 1, rank: int = 0) -> data.DataLoader:
        """The torch ``DataLoader`` over this rank's share of the stream (module docstring), from global
        step ``start_step``; ``repeat=False``: one pass (validation)."""
        stream = BatchStream(self, seed, repeat, start_step, num_replicas, rank)
        extra: Dict[str, Any] = {}
        if self.num_workers > 0:
            extra = {"prefetch_factor": self.prefetch_factor, "persistent_workers": self.persistent_workers,
                     "multiprocessing_context": self.multiprocessing_context}
        return data.DataLoader(
            self.dataset, batch_sampler=stream, num_workers=self.num_workers, collate_fn=self.collate_fn,
            pin_memory=self.pin_memory, timeout=self.timeout, worker_init_fn=self.worker_init_fn,
            generator=torch.Generator().manual_seed(epoch_seed(seed, -1 - start_step)), **extra)

    def get_data_loader(self, repeat: bool = False, skip: int = 0, num_replicas: int = 1, rank: int = 0) -> data.DataLoader:
        """Determined's method: a torch loader of this rank's batches, ``skip`` global steps in, the
        order seeded from torch's global generator (or the ``generator`` given)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator).item()) if self._draws() else 0
        return self.build(seed, repeat, skip, num_replicas, rank)

    def _draws(self) -> bool:
        return self.shuffle and self.sampler is None and self.batch_sampler is None

    def __iter__(self) -> Iterator:
        return iter(self.get_data_loader())

    def __len__(self) -> int:
        return self.batches_per_epoch()


class BatchStream(data.Sampler):
    """The batch sampler of one rank: its share of the stream of every epoch's batches (module docstring).
    ``len()`` is this rank's number of batches in one pass, as Determined counts them."""

    def __init__(self, loader: DataLoader, seed: int, repeat: bool, start_step: int, num_replicas: int, rank: int):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} does not fit {num_replicas} replicas")
        self._loader = loader
        self._seed = seed
        self._repeat = repeat
        self._start = start_step
        self._replicas = num_replicas
        self._rank = rank
        self._per_epoch = loader.batches_per_epoch()
        if self._per_epoch < 1:
            raise ValueError("the data loader gives no batch: the dataset is empty or smaller than one batch")

    def __len__(self) -> int:
        return self._per_epoch // self._replicas + int(self._per_epoch % self._replicas > self._rank)

    def __iter__(self) -> Iterator[List[int]]:
        position = self._start * self._replicas + self._rank
        current, batches = -1, None
        while True:
            epoch, index = divmod(position, self._per_epoch)
            if not self._repeat and epoch > 0:
                return
            if epoch != current:
                batches = self._loader.epoch_batches(epoch, self._seed)
                if len(batches) != self._per_epoch:
                    raise RuntimeError(f"epoch {epoch} of the data has {len(batches)} batches, epoch 0 had "
                                       f"{self._per_epoch}: a resumable order needs the same number every epoch")
                current = epoch
            assert batches is not None
            yield batches[index]
            position += self._replicas


class _Chunks(Sequence):
    """``order`` cut into batches of ``size`` (index lists), made when asked for."""

    def __init__(self, order: torch.Tensor, size: int, drop_last: bool):
        self._order, self._size = order, size
        self._count = len(order) // size if drop_last else math.ceil(len(order) / size)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        if not 0 <= index < self._count:
            raise IndexError(index)
        return self._order[index * self._size:(index + 1) * self._size].tolist()


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of trial seed ``seed`` (a hash: neighbouring seeds do not share orders)."""
    digest = hashlib.sha256(f"hpo-slurm data order {seed} {epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _set_epoch(sampler: Any, epoch: int) -> None:
    set_epoch = getattr(sampler, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def data_length(batch: Any) -> int:
    """The number of records in a batch: the length of its first array or tensor (in a dict, list or tuple)."""
    if isinstance(batch, (np.ndarray, torch.Tensor)):
        return len(batch)
    if isinstance(batch, dict):
        if not batch:
            raise ValueError("a batch dict must hold at least one array or tensor")
        return data_length(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        if not batch:
            raise ValueError("a batch list or tuple must hold at least one array or tensor")
        return data_length(batch[0])
    raise TypeError(f"cannot tell the length of a batch of type {type(batch).__name__}: override "
                    "PyTorchTrial.get_batch_length")


def to_device(batch: Any, device: torch.device, warned_types: Optional[Set[Type]] = None) -> Any:
    """``batch`` with every tensor (and numeric numpy array) moved to ``device``, through dicts, lists and
    tuples; anything with a ``to`` method is moved with it; other values are returned as they are (a
    warning once per type)."""
    warned = warned_types if warned_types is not None else set()
    if isinstance(batch, dict):
        return {key: to_device(value, device, warned) for key, value in batch.items()}
    if isinstance(batch, list):
        return [to_device(value, device, warned) for value in batch]
    if isinstance(batch, tuple):
        moved = [to_device(value, device, warned) for value in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)
    if isinstance(batch, np.ndarray):
        if batch.dtype.kind in "fciub":
            return torch.from_numpy(batch).to(device)
    elif callable(getattr(batch, "to", None)):
        return batch.to(device)
    if type(batch) not in warned and not isinstance(batch, (str, int, float, bool, type(None))):
        warned.add(type(batch))
        logger.warning("could not move a batch item of type %s to %s", type(batch).__name__, device)
    return batch
