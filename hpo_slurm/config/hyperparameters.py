"""The ``hyperparameters:`` section: Determined's hyperparameter types (const, int, double, log,
categorical, nested mappings) parsed into ``config.space`` objects, and grid sizes."""

from __future__ import annotations

import copy
import math
from typing import Any

from hpo_slurm.config.checks import HP_TYPES, JSON_MAX_DEPTH, MAX_HP_INT, MAX_POWER, MAX_TRIALS, Checker, join, show, suggest
from hpo_slurm.config.json_values import json_value
from hpo_slurm.config.space import Categorical, Const, Double, Int, Log, Nested

_HP_KEYS = {
    "const": ("type", "val"),
    "int": ("type", "minval", "maxval", "count"),
    "double": ("type", "minval", "maxval", "count"),
    "log": ("type", "minval", "maxval", "base", "count"),
    "categorical": ("type", "vals"),
}
_HP_ALIASES = {
    "logarithmic": "log", "loguniform": "log", "log_uniform": "log", "float": "double", "real": "double",
    "uniform": "double", "integer": "int", "randint": "int", "choice": "categorical", "constant": "const",
}


def parse_hyperparameters(ck: Checker, value: Any, path: str = "hyperparameters", depth: int = 0) -> Nested:
    """Determined's hyperparameters as a ``Nested`` tree, in file order. A mapping with a ``type`` key
    is a parameter; a mapping without one nests further (so does one whose ``type`` is itself a
    mapping: a nested hyperparameter named ``type``); anything else (scalars, lists) is a const."""
    mapping = ck.mapping(value, path)
    if depth >= JSON_MAX_DEPTH:
        ck.fail(path, f"expected hyperparameters nested at most {JSON_MAX_DEPTH} levels deep")
    return Nested(tuple((name, _hp_node(ck, node, join(path, name), depth + 1)) for name, node in mapping.items()))


def _hp_node(ck: Checker, value: Any, path: str, depth: int):
    if not isinstance(value, dict):
        return Const(copy.deepcopy(json_value(ck, value, path)))
    if "type" not in value or isinstance(value["type"], dict):  # a nested hyperparameter may be named type
        return parse_hyperparameters(ck, value, path, depth) if value else Const({})
    kind = value["type"]
    if kind not in HP_TYPES:
        guess = suggest(kind, HP_TYPES, _HP_ALIASES)
        hint = (f"did you mean {guess!r}?" if guess else
                f"expected one of {', '.join(HP_TYPES)} (a nested hyperparameter named 'type' is "
                f"written type: {{type: const, val: ...}})")
        ck.fail(join(path, "type"), f"unknown hyperparameter type {show(kind)}; {hint}")
    ck.check_keys(value, path, _HP_KEYS[kind])
    if kind == "const":
        if "val" not in value:
            ck.fail(join(path, "val"), "missing required key")
        return Const(copy.deepcopy(json_value(ck, value["val"], join(path, "val"))))
    if kind == "categorical":
        vals = ck.required(value, "vals", path)
        if not isinstance(vals, list) or not vals:
            ck.fail(join(path, "vals"), f"expected a non-empty list, got {show(vals)}")
        return Categorical(tuple(copy.deepcopy(json_value(ck, vals, join(path, "vals")))))
    minval, maxval = (_bound(ck, kind, ck.required(value, key, path), join(path, key))
                      for key in ("minval", "maxval"))
    if maxval <= minval:
        what = "an integer" if kind == "int" else "a number"
        ck.fail(join(path, "maxval"), f"expected {what} greater than minval ({minval:g}), got {maxval:g}")
    if not math.isfinite(maxval - minval):  # a double sampled in an infinite range is inf or nan
        ck.fail(join(path, "maxval"), f"expected maxval - minval to be a finite float, "
                                      f"got {maxval:g} - {minval:g}")
    count = value.get("count")
    count = None if count is None else ck.integer(count, join(path, "count"), minimum=1)
    if kind == "int":
        return Int(minval, maxval, count)
    if kind == "double":
        return Double(minval, maxval, count)
    base = value.get("base")
    base = 10.0 if base is None else ck.number(base, join(path, "base"), above=0)
    if base == 1:
        ck.fail(join(path, "base"), "expected a number > 0 other than 1, got 1")
    for key, exponent in (("minval", minval), ("maxval", maxval)):
        if abs(exponent * math.log10(base)) > MAX_POWER:
            ck.fail(join(path, key), f"expected base ** {key} from 1e-{MAX_POWER} to 1e{MAX_POWER}, "
                                     f"got {base:g} ** {exponent:g}")
    return Log(minval, maxval, base, count)


def _bound(ck: Checker, kind: str, value: Any, path: str) -> float:
    """An int hyperparameter's minval or maxval (within MAX_HP_INT), or a double or log's."""
    if kind != "int":
        return ck.number(value, path)
    value = ck.integer(value, path)
    if abs(value) > MAX_HP_INT:
        ck.fail(path, f"expected an integer from {-MAX_HP_INT} to {MAX_HP_INT}, got {show(value)}")
    return value


def require_grid_counts(ck: Checker, space: Nested, path: str = "hyperparameters") -> None:
    """Grid search needs ``count`` on every int, double and log hyperparameter."""
    for keys, param in space.leaves():
        if isinstance(param, (Int, Double, Log)) and param.count is None:
            ck.fail(".".join((path,) + keys + ("count",)),
                    "missing; grid search needs a count on every int, double and log hyperparameter")


def require_grid_size(ck: Checker, space: Nested) -> int:
    """The grid's size; the grid searcher builds every point, so more than MAX_TRIALS is an error."""
    size = grid_size(space)
    if size > MAX_TRIALS:
        many = f"{size:,}" if size < 10**15 else f"{size:.1e}" if size.bit_length() < 1000 else "over 1e300"
        ck.fail("searcher", f"grid search over {many} points (one trial each); expected at most "
                            f"{MAX_TRIALS:,}: lower the hyperparameters' counts or categorical vals")
    return size


def grid_size(space: Nested) -> int:
    """Points in the grid, computed without building it (``Nested.grid_size`` builds each axis)."""
    size = 1
    for _, param in space.leaves():
        if isinstance(param, Int):
            size *= min(param.count or 0, param.maxval - param.minval + 1)
        elif isinstance(param, (Double, Log)):
            size *= param.count or 0
        elif isinstance(param, Categorical):
            size *= len(param.vals)
    return size
