"""Where the TPE model sees a configuration: each searched leaf of a space as a coordinate of the unit
cube (a category as its index), and back.

- a double maps linearly, a log in log space, an int as a continuous value over
  [minval - 0.5, maxval + 0.5] (its bin's centre when decoded), a categorical to the index of its value;
- a value that does not fit (a missing key, an unknown category, a non-number) encodes as nan, and the
  model leaves that configuration out.

``Encoding`` is a space's encoder; ``EncodedRows`` keeps the encoded rows of a search's trials by trial
id, so a sampler encodes each trial once instead of at every draw. No I/O, no global state.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from hpo_slurm.config.space import Categorical, Const, Double, Int, Log, Nested, Param, build, lookup

_NUMBER_TYPES = {int, float}


class Dim:
    """One searched leaf: how its values map into [0, 1] (or onto category indices) and back."""

    def __init__(self, param: Param):
        self.param = param
        self.categories = 0                       # > 0: a categorical with that many values
        if isinstance(param, Categorical):
            if not param.vals:
                raise ValueError("a categorical hyperparameter needs at least one value")
            self.categories = len(param.vals)
            self._index: Dict[Any, int] = {}
            for i, val in enumerate(param.vals):
                try:
                    self._index.setdefault((type(val), val), i)
                except TypeError:                 # unhashable: found by the slow path
                    pass
        elif isinstance(param, Int):
            self.low, self.width = param.minval - 0.5, float(param.maxval - param.minval + 1)
        elif isinstance(param, Double):                 # in halves: no overflow on huge ranges
            self.low = float(param.minval) / 2.0
            self.width = float(param.maxval) / 2.0 - self.low
        elif isinstance(param, Log):
            self.low, self.width = float(param.minval), float(param.maxval - param.minval)
            self.log_base = math.log(param.base)
        else:
            raise TypeError(f"not a hyperparameter: {param!r}")

    @property
    def continuous(self) -> bool:
        return self.categories == 0

    def encode(self, value: Any) -> float:
        """``value`` in the unit interval (a category's index), or nan when it does not fit."""
        if value is _MISSING:
            return math.nan
        if self.categories:
            return self._category(value)
        return float(self.encode_column([value])[0])

    def encode_column(self, values: List[Any]) -> np.ndarray:
        """``encode`` of each value. A value's code never depends on the others in ``values`` (numbers
        all go through the same numpy arithmetic), so rows encoded one at a time or all at once agree
        to the last bit."""
        if self.categories:
            try:
                return np.array([self._index[(type(v), v)] for v in values], dtype=float)
            except (KeyError, TypeError):
                return np.array([self.encode(v) for v in values], dtype=float)
        x = None
        if set(map(type, values)) <= _NUMBER_TYPES:
            try:
                x = np.array(values, dtype=float)
            except OverflowError:                 # an int beyond float's range
                pass
        if x is None:
            x = np.array([_number(v) for v in values], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if isinstance(self.param, Log):
                x = np.log(np.where(x > 0.0, x, np.nan)) / self.log_base if self.log_base else x * np.nan
            elif isinstance(self.param, Double):
                x = x / 2.0
            if self.width <= 0.0:
                u = np.where(np.isfinite(x), 0.5, np.nan)
            else:
                u = np.clip((x - self.low) / self.width, 0.0, 1.0)
        return np.where(np.isfinite(x), u, np.nan)

    def _category(self, value: Any) -> float:
        try:
            return float(self._index[(type(value), value)])
        except (KeyError, TypeError):
            pass
        vals = self.param.vals
        for i, val in enumerate(vals):
            try:
                if val == value:
                    return float(i)
            except Exception:                     # a value whose comparison raises does not match
                pass
        plain = _plain(value)                     # e.g. a tuple that came back from JSON as a list
        for i, val in enumerate(vals):
            if _plain(val) == plain:
                return float(i)
        return math.nan

    def decode(self, u: float) -> Any:
        param = self.param
        if self.categories:
            return copy.deepcopy(param.vals[int(u)])
        if isinstance(param, Int):
            return min(param.maxval, param.minval + math.floor(u * self.width))
        if isinstance(param, Double):
            x = (1.0 - u) * float(param.minval) + u * float(param.maxval)
            return min(float(param.maxval), max(float(param.minval), x))
        x = self.low + u * self.width
        bounds = (param.base ** param.minval, param.base ** param.maxval)
        return min(max(bounds), max(min(bounds), param.base ** x))


def _number(value: Any) -> float:
    """A plain int or float (not a bool) as a float; nan for anything else or out of float's range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Encoding:
    """A space's searched leaves (``dims``, at ``paths``) and how configurations map to rows of the
    model's coordinates and back. Built once per space; holds no results."""

    def __init__(self, space: Nested):
        searched = space.searched()
        self.space = space
        self.dims = [Dim(param) for _, param in searched]
        self.paths = [path for path, _ in searched]

    def rows(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """One row per config, in order; a config that does not fit the space gets a row with nan."""
        rows = np.empty((len(configs), len(self.dims)))
        for c, (dim, path) in enumerate(zip(self.dims, self.paths)):
            rows[:, c] = dim.encode_column(_column(configs, path))
        return rows

    def decode(self, vector: np.ndarray) -> Dict[str, Any]:
        """The configuration (consts included) at the encoded point ``vector``."""
        values: Dict[Tuple[str, ...], Any] = {}
        searched = iter(zip(self.dims, vector.tolist()))
        for path, param in self.space.leaves():
            if isinstance(param, Const):
                values[path] = copy.deepcopy(param.val)
            else:
                dim, u = next(searched)
                values[path] = dim.decode(u)
        return build(values)


class EncodedRows:
    """The encoded hyperparameters of trials, by trial id, in one array that grows as needed: a trial
    is encoded once, on first use, and its row is reused until ``forget``. Derived data only: the
    rows are what ``encoding.rows`` gives for the same hyperparameters."""

    def __init__(self, encoding: Encoding):
        self.encoding = encoding
        self._slot: Dict[int, int] = {}
        self._free: List[int] = []
        self._array = np.empty((64, len(encoding.dims)))

    def rows(self, trial_ids: Sequence[int], hparams: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
        """One row per id of ``trial_ids``, in order; ``hparams``: str(trial id) -> hyperparameters, read
        for the ids not encoded yet."""
        slot = self._slot
        missing = [trial_id for trial_id in trial_ids if trial_id not in slot]
        if missing:
            missing = list(dict.fromkeys(missing))
            encoded = self.encoding.rows([hparams[str(trial_id)] for trial_id in missing])
            for trial_id, row in zip(missing, encoded):
                slot[trial_id] = self._take()
                self._array[slot[trial_id]] = row
        return self._array[[slot[trial_id] for trial_id in trial_ids]]

    def forget(self, trial_id: int) -> None:
        """The row of ``trial_id`` is no longer needed (its slot is reused)."""
        index = self._slot.pop(trial_id, None)
        if index is not None:
            self._free.append(index)

    def _take(self) -> int:
        """A free slot: a forgotten one, else the next unused (slots in use and free ones are always
        0 .. n-1, so with none free the next is ``len(_slot)``), growing the array when it is full."""
        if self._free:
            return self._free.pop()
        used = len(self._slot)
        if used == len(self._array):
            self._array = np.concatenate([self._array, np.empty_like(self._array)])
        return used


_MISSING = object()


def _column(configs: Sequence[Mapping[str, Any]], path: Tuple[str, ...]) -> List[Any]:
    """The value at ``path`` of every config (``_MISSING`` where there is none)."""
    try:
        if len(path) == 1:
            key = path[0]
            return [config[key] for config in configs]
        return [lookup(config, path) for config in configs]  # type: ignore[arg-type]
    except (KeyError, TypeError, IndexError):
        pass
    values = []
    for config in configs:
        try:
            values.append(lookup(config, path))  # type: ignore[arg-type]
        except (KeyError, TypeError, IndexError):
            values.append(_MISSING)
    return values
