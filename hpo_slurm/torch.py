"""Exact resume for PyTorch trials, in one process or in every rank of a distributed trial.

One process:

    from hpo_slurm import trial
    from hpo_slurm.torch import load_state, save_state

    ctx = trial.init()
    model, optimizer, scheduler = build(ctx.hparams)          # seeded from the hyperparameters
    batches = torch.Generator().manual_seed(seed)             # the data order's own generator
    extra = {"length": 0}
    if ctx.latest_checkpoint is not None:
        extra = load_state(ctx.latest_checkpoint, model, optimizer, scheduler, generators={"data": batches})
    ...
    with ctx.checkpoint(length) as path:
        save_state(path, model, optimizer, scheduler, extra={"length": length}, generators={"data": batches})

A distributed trial (``resources.slots_per_trial: N``) runs the script in N ranks; every rank makes the
same calls:

    from torch.nn.parallel import DistributedDataParallel
    from hpo_slurm.torch import close_distributed, init_distributed, load_state, save_state

    ctx = trial.init()
    device = init_distributed(ctx)                 # the process group: nccl on GPUs, gloo on CPU
    torch.manual_seed(seed + ctx.rank)             # each rank draws its own dropout noise; DDP
    model, optimizer, scheduler = build(ctx.hparams)  # copies rank 0's initial weights to every rank
    model.to(device)
    batches = torch.Generator().manual_seed(seed)  # one data order, the same in every rank
    extra = {"length": 0}
    if ctx.latest_checkpoint is not None:
        extra = load_state(ctx.latest_checkpoint, model, optimizer, scheduler, generators={"data": batches})
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ...                                            # each rank trains on its shard of every batch and
    ...                                            # calls ctx.should_stop() at the same steps
    with ctx.checkpoint(length) as path:           # every rank enters it; one shared folder
        save_state(path, ddp, optimizer, scheduler, extra={"length": length}, generators={"data": batches})
    close_distributed()

What is saved: ``save_state`` writes ``<path>/state.pt`` holding the model, optimizer and LR scheduler
states, the caller's ``extra`` values, and every random generator: Python's ``random``, NumPy's global
generator (when NumPy is importable), the torch CPU generator, the CUDA (and MPS) generators when
present, and the caller's own ``generators``. A loop resumed with ``load_state`` continues bit-for-bit as
if it had never stopped, provided it is deterministic to begin with (``torch.set_num_threads`` fixed,
``torch.use_deterministic_algorithms(True)`` on GPU) and consumes randomness only inside the loop.

Distributed: a process is one rank of several when a process group of more than one rank is
initialized, or else when ``$WORLD_SIZE`` is above 1. Then rank 0 alone writes ``state.pt`` (model,
optimizer, scheduler and ``extra``, which DDP keeps equal in every rank), and every rank ``k`` writes
``rng-rank<k>.pt`` with its own random generators and ``generators``, since each rank's differ. Every
rank calls ``load_state`` on the same folder and gets the shared states and its own generators back.
Neither involves a collective. A DDP loop resumed so continues bit-for-bit when its collectives are
deterministic (gloo on CPU is). A checkpoint loaded by another number of ranks than saved it restores
the weights, optimizer, scheduler, ``extra`` and the caller's ``generators`` (rank 0's), but not the
global random generators, and warns.

Large models: ``save_state(..., sharded=True)`` saves the model and optimizer through
``torch.distributed.checkpoint`` into ``<path>/sharded/``, every rank writing its own shard (a model
sharded with FSDP's ``fully_shard`` is never gathered in one process); the rest is saved as above.
It is a collective, and so is ``load_state`` of such a checkpoint: call both in every rank, after
building (and sharding) the model and optimizer as for a fresh start.

Data order: a ``DataLoader(shuffle=True)`` draws each epoch's order when its iterator is created, so a
resume in the middle of an epoch needs the order itself, not only the generator. Either keep the
epoch's permutation (a tensor) and the position in it in ``extra``, or create the iterator from a
generator passed in ``generators`` and skip the batches already seen. Sampler or worker state that
lives outside those generators is not captured.

The files load with ``torch.load(weights_only=True)``: every state is converted to tensors and plain
Python values (NumPy arrays become tagged lists). If ``extra`` or a scheduler holds other objects,
``load_state`` warns and falls back to ``weights_only=False``; that is safe only because the file is
the trial's own checkpoint, written by ``save_state``.
"""

from __future__ import annotations

import datetime
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

STATE_FILE = "state.pt"
RANK_FILE = "rng-rank{rank}.pt"  # one per rank of a distributed trial
SHARDED_DIR = "sharded"  # torch.distributed.checkpoint's folder when saved with sharded=True
FORMAT = 2
FORMATS = (1, 2)  # 1: one process, no world_size or sharded keys

PathLike = Union[str, "os.PathLike[str]"]


# ---- random generators ------------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """Every global random generator's state, as tensors and plain Python values."""
    state: Dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np = _numpy()
    if np is not None:
        state["numpy"] = _encode(np.random.get_state(legacy=False))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if _mps_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``rng_state`` captured. Generators this machine lacks are skipped; a job resumed on
    fewer GPUs restores the first ones."""
    random.setstate(_python_state(state["python"]))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    np = _numpy()
    if np is not None and "numpy" in state:
        np.random.set_state(_decode(state["numpy"]))
    if "cuda" in state and torch.cuda.is_available():
        saved = list(state["cuda"])
        for device in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(_byte_tensor(saved[device]), device)
    if "mps" in state and _mps_available():
        torch.mps.set_rng_state(_byte_tensor(state["mps"]))


def generator_state(generator: Any) -> Dict[str, Any]:
    """The state of one caller-owned generator: ``torch.Generator``, ``random.Random``,
    ``numpy.random.Generator`` or ``numpy.random.RandomState``."""
    if isinstance(generator, torch.Generator):
        return {"kind": "torch", "state": generator.get_state()}
    if isinstance(generator, random.Random):
        return {"kind": "python", "state": generator.getstate()}
    np = _numpy()
    if np is not None and isinstance(generator, np.random.Generator):
        return {"kind": "numpy", "state": _encode(generator.bit_generator.state)}
    if np is not None and isinstance(generator, np.random.RandomState):
        return {"kind": "numpy_legacy", "state": _encode(generator.get_state(legacy=False))}
    raise TypeError(f"cannot save the state of a {type(generator).__name__}; pass a torch.Generator, "
                    "random.Random or numpy.random.Generator")


def set_generator_state(generator: Any, saved: Mapping[str, Any]) -> None:
    """Restore into ``generator`` what ``generator_state`` captured; TypeError when the kinds differ."""
    kind = saved["kind"]
    if kind != generator_state(generator)["kind"]:
        raise TypeError(f"checkpoint holds a {kind} generator state, got a {type(generator).__name__}")
    if kind == "torch":
        generator.set_state(_byte_tensor(saved["state"]))
    elif kind == "python":
        generator.setstate(_python_state(saved["state"]))
    elif kind == "numpy":
        generator.bit_generator.state = _decode(saved["state"])
    else:
        generator.set_state(_decode(saved["state"]))


# ---- distributed trials ----------------------------------------------------------------------------
def init_distributed(
    ctx: Any = None,
    backend: Optional[str] = None,
    timeout: Optional[datetime.timedelta] = None,
) -> torch.device:
    """Join this trial's process group and return the device this rank trains on.

    The rank, local rank and world size are ``ctx.rank``, ``ctx.local_rank`` and ``ctx.world_size``;
    what ``ctx`` lacks (or all of it when ``ctx`` is None) comes from ``$RANK``, ``$LOCAL_RANK`` and
    ``$WORLD_SIZE`` (defaults 0, 0 and 1). The device is ``cuda:<local rank>`` when CUDA is available,
    made the current CUDA device, else the CPU. A world size of 1 stops there: no process group.
    Otherwise the default process group is initialized from ``$MASTER_ADDR`` and ``$MASTER_PORT``
    (``env://``) with ``backend``: by default nccl when CUDA is available, else gloo. Called again once
    the group exists, it returns the device.

    Raises RuntimeError when the rank variables are not integers or are inconsistent, when
    ``$MASTER_ADDR`` or ``$MASTER_PORT`` is missing, when CUDA shows no device for the local rank, or
    when a process group of another rank or size is already initialized.
    """
    rank, local_rank, world_size = _ranks(ctx)
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} has no GPU: CUDA shows {torch.cuda.device_count()} "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size == 1:
        return device
    dist = torch.distributed
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
            raise RuntimeError(f"a process group is initialized as rank {dist.get_rank()} of "
                               f"{dist.get_world_size()}, not rank {rank} of {world_size}")
        return device
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"${' and $'.join(missing)} not set: a distributed trial's ranks meet there "
                           "(run the trial through hpo-slurm)")
    if backend is None:
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    options: Dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **options)
    return device


def close_distributed() -> None:
    """Leave the process group ``init_distributed`` joined; nothing when there is none. Call it in
    every rank once training is done."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _ranks(ctx: Any) -> Tuple[int, int, int]:
    """(rank, local rank, world size) from ``ctx``'s attributes, else the environment."""

    def value(attribute: str, variable: str, default: int) -> int:
        found = getattr(ctx, attribute, None) if ctx is not None else None
        if found is None:
            found = os.environ.get(variable, default)
        try:
            return int(found)
        except (TypeError, ValueError):
            raise RuntimeError(f"${variable}: expected an integer, got {found!r}") from None

    rank, local_rank = value("rank", "RANK", 0), value("local_rank", "LOCAL_RANK", 0)
    world_size = value("world_size", "WORLD_SIZE", 1)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise RuntimeError(f"rank {rank} (local rank {local_rank}) does not fit a world of {world_size}")
    return rank, local_rank, world_size


def _world() -> Tuple[int, int]:
    """(rank, world size) of this process: its process group's, else the environment's."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, _, world_size = _ranks(None)
    return rank, world_size


# ---- checkpoints -----------------------------------------------------------------------------------
def save_state(
    path: PathLike,
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = None,
    extra: Any = None,
    generators: Optional[Mapping[str, Any]] = None,
    sharded: bool = False,
) -> Path:
    """Save into the directory ``path`` (created if needed) and return the path of its ``state.pt``.

    ``extra`` is the loop's own state (its length, the epoch's permutation, a best metric...); keep it
    to tensors and plain Python values so the file loads with ``weights_only=True``. In a distributed
    trial every rank calls this with the same ``path``: rank 0 writes ``state.pt``, each rank its
    ``rng-rank<k>.pt`` (module docstring). ``sharded=True`` saves the model and optimizer through
    ``torch.distributed.checkpoint``, each rank its shard: a collective, which in a trial of several
    ranks needs the process group (RuntimeError without one).
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    rank, world_size = _world()
    own = {"rng": rng_state(), "generators": {str(name): generator_state(g) for name, g in (generators or {}).items()}}
    if sharded:
        _save_sharded(directory / SHARDED_DIR, model, optimizer, world_size)
    if rank == 0:
        state = {
            "format": FORMAT,
            "world_size": world_size,
            "sharded": sharded,
            "has_optimizer": optimizer is not None,
            "model": None if sharded else _unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None and not sharded else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "extra": extra,
            **(own if world_size == 1 else {"rng": None, "generators": None}),
        }
        _write(directory / STATE_FILE, state)
    if world_size > 1:
        mine = {"format": FORMAT, "rank": rank, "world_size": world_size, **own}
        _write(directory / RANK_FILE.format(rank=rank), mine)
    return directory / STATE_FILE


def load_state(
    path: PathLike,
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = None,
    generators: Optional[Mapping[str, Any]] = None,
    strict: bool = True,
) -> Any:
    """Restore what ``save_state`` wrote into ``path`` (a checkpoint directory) and return ``extra``.

    Build the model, optimizer and scheduler exactly as for a fresh start, then call this: it
    overwrites their states and sets every random generator last, so nothing done before it (model
    initialisation draws random numbers) changes what happens after it. In a distributed trial every
    rank calls it (a collective when the checkpoint is sharded) and gets its own rank's generators.
    Passing an optimizer, scheduler or generator whose state was not saved raises ``KeyError`` before
    anything is changed.
    """
    directory = Path(path)
    state = load_file(directory / STATE_FILE)
    if state.get("format") not in FORMATS:
        raise ValueError(f"{path}: not a state saved by hpo_slurm.torch.save_state (format {state.get('format')!r})")
    if optimizer is not None and not state.get("has_optimizer", state["optimizer"] is not None):
        raise KeyError(f"{path}: no optimizer state was saved")
    if scheduler is not None and state["scheduler"] is None:
        raise KeyError(f"{path}: no scheduler state was saved")
    own = _own_state(directory, state)
    for name in generators or {}:
        if name not in own["generators"]:
            raise KeyError(f"{path}: no state saved for generator {name!r}")
    if state.get("sharded"):
        _load_sharded(directory / SHARDED_DIR, model, optimizer, strict)
    else:
        _unwrap(model).load_state_dict(state["model"], strict=strict)
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    for name, generator in (generators or {}).items():
        set_generator_state(generator, own["generators"][name])
    if own["rng"] is not None:
        set_rng_state(own["rng"])
    return state["extra"]


def _own_state(directory: Path, state: Mapping[str, Any]) -> Dict[str, Any]:
    """This rank's saved generators: ``{"rng": ..., "generators": ...}``; ``rng`` is None when the
    checkpoint was saved by another number of ranks (then ``generators`` are rank 0's)."""
    rank, world_size = _world()
    saved = int(state.get("world_size", 1))
    if saved == world_size:
        if saved == 1:
            return {"rng": state["rng"], "generators": state["generators"]}
        own = load_file(directory / RANK_FILE.format(rank=rank))
        if (own.get("rank"), own.get("world_size")) != (rank, world_size):
            raise ValueError(f"{directory}: {RANK_FILE.format(rank=rank)} holds rank {own.get('rank')!r} "
                             f"of {own.get('world_size')!r}")
        return own
    if rank == 0:
        warnings.warn(
            f"{directory} was saved by {saved} rank(s) and is loaded by {world_size}: the weights, optimizer, "
            "scheduler, extra and the generators passed in (rank 0's) are restored, the global random "
            "generators are not, so the run does not continue exactly as it would have",
            stacklevel=3,
        )
    source = state if saved == 1 else load_file(directory / RANK_FILE.format(rank=0))
    return {"rng": None, "generators": source["generators"]}


def _sharded_states(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> Dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def _check_group(world_size: int) -> None:
    """A sharded checkpoint of several ranks is a collective: they need their process group."""
    if world_size > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(f"a sharded checkpoint of {world_size} ranks is a collective: call init_distributed first")


def _save_sharded(directory: Path, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
                  world_size: int) -> None:
    import torch.distributed.checkpoint as dcp

    _check_group(world_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process")
        dcp.save(_sharded_states(model, optimizer), checkpoint_id=str(directory))


def _load_sharded(directory: Path, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer],
                  strict: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    _check_group(_world()[1])
    states = _sharded_states(model, optimizer)  # filled in place: the shards this rank holds
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(states, checkpoint_id=str(directory), planner=DefaultLoadPlanner(allow_partial_load=not strict))
    options = StateDictOptions(strict=strict)
    if optimizer is None:
        set_model_state_dict(model, states["model"], options=options)
    else:
        set_state_dict(model, optimizer, model_state_dict=states["model"], optim_state_dict=states["optimizer"],
                       options=options)


def _write(file: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to ``file`` atomically: a reader sees the old file or the whole new one."""
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, file)


def load_file(file: Path) -> Dict[str, Any]:
    """A file ``torch.save`` wrote for a checkpoint, onto the CPU: with ``weights_only=True`` when it
    loads so, else (objects in a scheduler's or callback's state) in full, with a warning: it is the
    trial's own checkpoint. ``FileNotFoundError`` when there is no such file."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no saved state (was the checkpoint written with save_state?)")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        warnings.warn(
            f"{file} holds objects weights_only loading refuses ({str(exc).splitlines()[0]}); loading it "
            "with weights_only=False because it is this trial's own checkpoint",
            stacklevel=3,
        )
        return torch.load(file, map_location="cpu", weights_only=False)


# ---- helpers -------------------------------------------------------------------------------------
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DataParallel / DistributedDataParallel, so checkpoints load either way."""
    wrappers = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def _byte_tensor(value: Any) -> torch.Tensor:
    return value.to(device="cpu", dtype=torch.uint8) if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.uint8)


def _python_state(value: Any) -> tuple:
    """``random.setstate`` wants tuples; accept the lists a JSON round trip would leave."""
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


def _numpy():  # type: ignore[no-untyped-def]
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available() and hasattr(torch, "mps"))


def _encode(value: Any) -> Any:
    """NumPy arrays and scalars inside a generator state -> tagged plain values (weights_only-safe)."""
    np = _numpy()
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_encode(item) for item in value)
    if np is not None and isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if np is not None and isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            np = _numpy()
            return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode(item) for item in value)
    return value
