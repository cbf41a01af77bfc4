"""Exact resume for PyTorch trials: save and restore everything a training loop's future depends on.

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

``save_state`` writes ``<path>/state.pt`` holding the model, optimizer and LR scheduler states, the
caller's ``extra`` values, and every random generator: Python's ``random``, NumPy's global generator (when
NumPy is importable), the torch CPU generator, the CUDA (and MPS) generators when present, and the
caller's own ``generators``. A loop resumed with ``load_state`` continues bit-for-bit as if it had never
stopped, provided it is deterministic to begin with (``torch.set_num_threads`` fixed,
``torch.use_deterministic_algorithms(True)`` on GPU) and consumes randomness only inside the loop.

Data order: a ``DataLoader(shuffle=True)`` draws each epoch's order when its iterator is created, so a
resume in the middle of an epoch needs the order itself, not only the generator. Either keep the
epoch's permutation (a tensor) and the position in it in ``extra``, or create the iterator from a
generator passed in ``generators`` and skip the batches already seen. Sampler or worker state that
lives outside those generators is not captured.

The file loads with ``torch.load(weights_only=True)``: every state is converted to tensors and plain
Python values (NumPy arrays become tagged lists). If ``extra`` or a scheduler holds other objects,
``load_state`` warns and falls back to ``weights_only=False``; that is safe only because the file is
the trial's own checkpoint, written by ``save_state``.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

STATE_FILE = "state.pt"
FORMAT = 1

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


# ---- checkpoints -----------------------------------------------------------------------------------
def save_state(
    path: PathLike,
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = None,
    extra: Any = None,
    generators: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``<path>/state.pt`` (``path`` is a directory, created if needed) and return its path.

    ``extra`` is the loop's own state (its length, the epoch's permutation, a best metric...); keep it
    to tensors and plain Python values so the file loads with ``weights_only=True``.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": extra,
        "rng": rng_state(),
        "generators": {str(name): generator_state(g) for name, g in (generators or {}).items()},
    }
    final = directory / STATE_FILE
    tmp = directory / f".{STATE_FILE}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    return final


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
    initialisation draws random numbers) changes what happens after it. Passing an optimizer,
    scheduler or generator whose state was not saved raises ``KeyError``.
    """
    state = _load(Path(path) / STATE_FILE)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a state saved by hpo_slurm.torch.save_state (format {state.get('format')!r})")
    _unwrap(model).load_state_dict(state["model"], strict=strict)
    if optimizer is not None:
        if state["optimizer"] is None:
            raise KeyError(f"{path}: no optimizer state was saved")
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        if state["scheduler"] is None:
            raise KeyError(f"{path}: no scheduler state was saved")
        scheduler.load_state_dict(state["scheduler"])
    for name, generator in (generators or {}).items():
        if name not in state["generators"]:
            raise KeyError(f"{path}: no state saved for generator {name!r}")
        set_generator_state(generator, state["generators"][name])
    set_rng_state(state["rng"])
    return state["extra"]


def _load(file: Path) -> Dict[str, Any]:
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
