"""Hyperparameter spaces: Determined's const, int, double, log and categorical, nested to any depth.

A space is a tree of ``Nested`` mappings whose leaves are parameters. Every sampled configuration is a
plain nested dict of JSON values with the same shape. Sampling, grids and PBT exploration take an
explicit ``Rng``, so they are pure and deterministic.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from hpo_slurm.core.rng import Rng


@dataclass(frozen=True)
class Const:
    val: Any

    def sample(self, rng: Rng) -> Any:
        return self.val

    def grid(self) -> List[Any]:
        return [self.val]


@dataclass(frozen=True)
class Int:
    """Integers in [minval, maxval], both inclusive."""

    minval: int
    maxval: int
    count: Optional[int] = None

    def sample(self, rng: Rng) -> int:
        return rng.randint(self.minval, self.maxval)

    def grid(self) -> List[int]:
        count = min(_grid_count(self), self.maxval - self.minval + 1)
        if count == 1:
            return [round_half_away((self.minval + self.maxval) / 2.0)]
        span = self.maxval - self.minval
        return [round_half_away(self.minval + i * span / (count - 1)) for i in range(count)]

    def perturb(self, value: int, multiplier: float) -> int:
        scaled = value * multiplier
        moved = math.floor(scaled) if multiplier < 1 else math.ceil(scaled)
        return max(self.minval, min(self.maxval, int(moved)))


@dataclass(frozen=True)
class Double:
    minval: float
    maxval: float
    count: Optional[int] = None

    def sample(self, rng: Rng) -> float:
        return rng.uniform(self.minval, self.maxval)

    def grid(self) -> List[float]:
        return _linspace(self.minval, self.maxval, _grid_count(self))

    def perturb(self, value: float, multiplier: float) -> float:
        return max(self.minval, min(self.maxval, value * multiplier))


@dataclass(frozen=True)
class Log:
    """``base ** x`` for x uniform in [minval, maxval]."""

    minval: float
    maxval: float
    base: float = 10.0
    count: Optional[int] = None

    def sample(self, rng: Rng) -> float:
        return self.base ** rng.uniform(self.minval, self.maxval)

    def grid(self) -> List[float]:
        return [self.base**x for x in _linspace(self.minval, self.maxval, _grid_count(self))]

    def perturb(self, value: float, multiplier: float) -> float:
        low, high = self.base**self.minval, self.base**self.maxval
        return max(low, min(high, value * multiplier))


@dataclass(frozen=True)
class Categorical:
    vals: Tuple[Any, ...]

    def sample(self, rng: Rng) -> Any:
        return self.vals[rng.randint(0, len(self.vals) - 1)]

    def grid(self) -> List[Any]:
        return list(self.vals)


Param = Union[Const, Int, Double, Log, Categorical]


@dataclass(frozen=True)
class Nested:
    """An ordered mapping of names to parameters or further ``Nested`` mappings."""

    items: Tuple[Tuple[str, Union[Param, "Nested"]], ...]

    def leaves(self, prefix: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], Param]]:
        """Every parameter with its key path, in declaration order."""
        for name, node in self.items:
            if isinstance(node, Nested):
                yield from node.leaves(prefix + (name,))
            else:
                yield prefix + (name,), node

    def searched(self) -> List[Tuple[Tuple[str, ...], Param]]:
        """The leaves a search chooses (every one but the consts), with their key paths, in order."""
        return [(path, param) for path, param in self.leaves() if not isinstance(param, Const)]

    def sample(self, rng: Rng) -> Dict[str, Any]:
        """One configuration, drawing leaves in declaration order."""
        return build({path: param.sample(rng) for path, param in self.leaves()})

    def grid(self) -> List[Dict[str, Any]]:
        """The cartesian product of every leaf's grid values; the first leaf varies slowest."""
        leaves = list(self.leaves())
        value_lists = [param.grid() for _, param in leaves]
        return [
            build({path: value for (path, _), value in zip(leaves, combo)})
            for combo in itertools.product(*value_lists)
        ]

    def grid_size(self) -> int:
        return math.prod(len(param.grid()) for _, param in self.leaves())

    def explore(
        self,
        old: Dict[str, Any],
        rng: Rng,
        resample_probability: float,
        perturb_factor: float,
        resample: Optional[Callable[[], Dict[str, Any]]] = None,
    ) -> Dict[str, Any]:
        """PBT's explore step: each leaf is resampled with ``resample_probability``, else multiplied
        by ``1 - perturb_factor`` or ``1 + perturb_factor`` (even odds) and clamped to its range; ints
        round down when shrinking and up when growing. Consts and categoricals keep their value when
        not resampled. A resampled leaf is the leaf's own uniform draw, or, with ``resample``, its
        value in the configuration ``resample()`` returns (a model's pick)."""
        values = {}
        for path, param in self.leaves():
            if rng.random() < resample_probability:
                values[path] = param.sample(rng) if resample is None else lookup(resample(), path)
                continue
            value = lookup(old, path)
            shrink = rng.random() < 0.5
            if isinstance(param, (Int, Double, Log)):
                multiplier = 1 - perturb_factor if shrink else 1 + perturb_factor
                value = param.perturb(value, multiplier)
            values[path] = value
        return build(values)


def round_half_away(x: float) -> int:
    """Round half away from zero, as Go's math.Round (Python's round() rounds half to even)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def lookup(config: Dict[str, Any], path: Sequence[str]) -> Any:
    node: Any = config
    for key in path:
        node = node[key]
    return node


def build(values: Dict[Tuple[str, ...], Any]) -> Dict[str, Any]:
    """Nested dict from ``{key_path: value}``."""
    root: Dict[str, Any] = {}
    for path, value in values.items():
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return root


def _grid_count(param: Union[Int, Double, Log]) -> int:
    if param.count is None:
        raise ValueError("grid search needs a count on every int, double and log hyperparameter")
    return param.count


def _linspace(low: float, high: float, count: int) -> List[float]:
    if count == 1:
        return [(low + high) / 2.0]
    return [low + i * (high - low) / (count - 1) for i in range(count)]
