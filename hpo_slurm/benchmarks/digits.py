"""A tabular learning-curve benchmark from real training: an MLP on scikit-learn's digits.

``benchmarks/make_digits_table.py`` trained every configuration of a 576-point grid for 30 epochs
(Adam, cross-entropy, 1,437 training / 360 validation images) and recorded the validation loss after
every epoch and the measured seconds of every epoch; the table ships as
``hpo_slurm/benchmarks/data/digits_mlp.json.gz``. ``objective`` looks a configuration up:

* ``lr``: 8 values log-spaced 1e-4 .. 1e-1; ``weight_decay``: 0, 1e-4, 1e-2; ``width``: 16, 32, 64,
  128; ``depth``: 1, 2, 3; ``batch_size``: 32, 128 (``benchmarks/configs/digits.yaml`` searches
  exactly this grid);
* a value on the grid is used as is; one in between maps to the nearest grid value, in log space
  for ``lr``, ``weight_decay``, ``width`` and ``batch_size`` (for ``weight_decay`` the grid's 0
  stands for 1e-6, one grid step below 1e-4, so positive values under 1e-5 map to 0, and so do
  negative ones), to the nearest integer for ``depth``;
* ``length`` is epochs: 1..30, longer lengths count as 30; length 0 is the untrained network at
  0 seconds.

Returns ``{"loss": validation loss after that epoch, "seconds": measured training seconds of epochs
1..length}``. Pure standard library: the table is read once (lazily) with ``importlib.resources``,
so this also works from an installed wheel and needs neither torch nor numpy.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from importlib import resources
from types import MappingProxyType
from typing import Any, Dict, Mapping, Sequence, Tuple

NAMES = ("lr", "width", "depth", "weight_decay", "batch_size")
TABLE = "digits_mlp.json.gz"
ZERO_DECAY_STANDS_FOR = 1e-6  # the grid's weight_decay 0, placed one grid step below 1e-4 in log space


class Table:
    """The loaded table, read-only (mappings are proxies, sequences tuples): the grid, and per
    configuration (a tuple of grid indices in ``NAMES`` order) its losses (index 0 = untrained, then
    epochs 1..``epochs``) and cumulative seconds (index 0 = 0)."""

    def __init__(self, raw: Mapping[str, Any]):
        self.epochs: int = int(raw["epochs"])
        grid = {name: tuple(raw["grid"][name]) for name in NAMES}
        self.grid: Mapping[str, Tuple[Any, ...]] = MappingProxyType(grid)
        rows: Dict[Tuple[int, ...], Tuple[Tuple[float, ...], Tuple[float, ...]]] = {}
        for row in raw["configs"]:
            key = tuple(self.grid[name].index(row[name]) for name in NAMES)
            cumulative, total = [0.0], 0.0
            for seconds in row["seconds"]:
                total += seconds
                cumulative.append(total)
            rows[key] = ((row["loss0"], *row["loss"]), tuple(cumulative))
        self.rows: Mapping[Tuple[int, ...], Tuple[Tuple[float, ...], Tuple[float, ...]]] = MappingProxyType(rows)

    def __len__(self) -> int:
        return len(self.rows)


@functools.lru_cache(maxsize=1)
def load() -> Table:
    """The shipped table, read and indexed once."""
    data = resources.files("hpo_slurm.benchmarks").joinpath("data", TABLE).read_bytes()
    return Table(json.loads(gzip.decompress(data)))


def _nearest(values: Sequence[float], value: float, log: bool) -> int:
    def position(v: float) -> float:
        return math.log(v) if log else v
    target = position(value)
    return min(range(len(values)), key=lambda i: (abs(position(values[i]) - target), i))


def grid_index(name: str, value: Any, grid: Sequence[Any]) -> int:
    """The index in ``grid`` of the grid value nearest to ``value`` (see the module docstring)."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    for index, candidate in enumerate(grid):
        if value == candidate:
            return index
    if name == "depth":
        return _nearest(grid, value, log=False)
    if name == "weight_decay":
        stand_in = [v if v > 0 else ZERO_DECAY_STANDS_FOR for v in grid]
        return _nearest(stand_in, max(value, ZERO_DECAY_STANDS_FOR * 1e-3), log=True)
    if value <= 0:  # lr, width, batch_size: the smallest grid value
        return min(range(len(grid)), key=lambda i: grid[i])
    return _nearest(grid, value, log=True)


def config_of(hparams: Mapping[str, Any]) -> Dict[str, Any]:
    """The grid configuration ``hparams`` maps to."""
    table = load()
    return {name: table.grid[name][grid_index(name, hparams[name], table.grid[name])] for name in NAMES}


def objective(hparams: Dict[str, Any], length: int) -> Dict[str, float]:
    """Validation loss after ``length`` epochs and the cumulative measured seconds to get there."""
    table = load()
    key = tuple(grid_index(name, hparams[name], table.grid[name]) for name in NAMES)
    losses, seconds = table.rows[key]
    epoch = min(max(int(length), 0), table.epochs)
    return {"loss": losses[epoch], "seconds": seconds[epoch]}
