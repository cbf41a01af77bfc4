"""The pieces ``config.py`` builds an experiment config from: a YAML loader with YAML 1.2 scalars,
typed reads that raise ``ConfigError`` naming the key path, unknown-key checks with a did-you-mean,
values JSON can hold and hyperparameter spaces (the ``slurm:`` section is ``config_slurm``). The
``MAX_*`` limits keep numbers where the searchers neither overflow floats nor run forever.

Every check takes the value and its key path (``searcher.max_trials``, ``slurm.setup[2]``) and either
returns the value in its Python form or raises one ``ConfigError`` whose text is one line:
``search.yaml: searcher.max_trials: expected a positive integer, got -3``.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import json
import math
import re
from typing import Any, Dict, Iterable, List, Mapping, NoReturn, Optional, Sequence, Tuple

import yaml

from hpo_slurm.core.errors import ConfigError
from hpo_slurm.config.space import Categorical, Const, Double, Int, Log, Nested

LENGTH_UNITS = ("batches", "records", "epochs")
HP_TYPES = ("const", "int", "double", "log", "categorical")
Length = Tuple[int, str]  # (amount, unit), unit one of LENGTH_UNITS

# Limits no real search reaches; past them the searchers overflow floats or never finish.
MAX_TRIALS = 10_000_000  # trials in a search, grid points included (the grid searcher builds every point)
MAX_LENGTH = 10**15  # training length of a trial, in its unit
MAX_RUNGS = 64  # rungs of an ASHA bracket
MAX_POWER = 300  # base ** x (log hyperparameters) and divisor ** (rungs - 1) stay within 1e-300..1e300
MAX_HP_INT = 2**53  # int hyperparameters: grids and PBT compute them in floats
JSON_MAX_DEPTH = 100  # nesting of const values, categorical vals and data
JSON_MAX_VALUES = 1_000_000  # values in one, counting each YAML alias as a copy


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars, as Determined's CLI (ruamel.yaml) reads them:
    ``1e-4`` is a float, ``1:30:00`` is a string (YAML 1.1 makes it the integer 5400), ``on``/``no``
    are strings, dates stay strings. Duplicate keys are an error instead of last-one-wins."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    try:
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)  # "010" is ten, as in YAML 1.2 (YAML 1.1 reads it as octal eight)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(text)} digits is too long", node.start_mark) from None


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("merge", r"^(?:<<)$", "<"),
):
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def yaml_load(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error becomes ``ConfigError(source, "line N, column M", ...)``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, where, f"not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(source, "", "cannot read the file: its YAML nests too deeply") from None


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

def show(value: Any) -> str:
    """A value as a message shows it, on one line: ``-3``, ``'abc'``, ``true``, ``null``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:
        try:
            return f"an integer of {len(str(abs(value)))} digits"
        except ValueError:  # past sys.get_int_max_str_digits()
            return "an integer of thousands of digits"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, datetime.date):
        return f"a timestamp ({value.isoformat()})"
    if isinstance(value, bytes):
        return "binary data (!!binary)"
    if isinstance(value, (set, frozenset)):
        return "a set (!!set)"
    return type(value).__name__


def suggest(word: Any, choices: Iterable[str], aliases: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The choice ``word`` was most likely meant to be, or None: an alias, a different case, a close
    spelling (difflib), or a prefix (``logarithmic`` -> ``log``)."""
    if not isinstance(word, str) or not word:
        return None
    lowered = {c.lower(): c for c in choices}
    key = word.lower()
    if aliases and key in aliases:
        return aliases[key]
    if key in lowered:
        return lowered[key]
    close = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.6)
    if close:
        return lowered[close[0]]
    if len(key) < 3:
        return None
    prefixed = [c for k, c in lowered.items() if len(k) >= 3 and (key.startswith(k) or k.startswith(key))]
    return prefixed[0] if len(prefixed) == 1 else None


def join(path: str, key: Any) -> str:
    """Key path of ``key`` below ``path``: ``join("searcher", "name") == "searcher.name"``."""
    return f"{path}.{key}" if path else str(key)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number that converts to a finite float (an int past 1.8e308 does not)."""
    try:
        return is_number(value) and math.isfinite(value)
    except OverflowError:
        return False


# ---------------------------------------------------------------------------------------------
# Typed reads
# ---------------------------------------------------------------------------------------------

class Checker:
    """Typed reads of YAML values for one config file; collects warnings as message lines."""

    def __init__(self, source: str):
        self.source = source
        self.warnings: List[str] = []

    def fail(self, path: str, message: str) -> NoReturn:
        raise ConfigError(self.source, path, message)

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}")

    def mapping(self, value: Any, path: str) -> Dict[str, Any]:
        """A mapping with string keys; null reads as an empty mapping."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {show(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(join(path, show(key)), f"expected a string key, got {show(key)}")
        return value

    def check_keys(
        self,
        mapping: Mapping[str, Any],
        path: str,
        known: Iterable[str],
        ignored: Mapping[str, Optional[str]] = {},  # noqa: B006 - read only
        elsewhere: Mapping[str, str] = {},  # noqa: B006 - read only
        warn_ignored: bool = True,
    ) -> List[str]:
        """Fail on the first key that is neither ``known`` nor ``ignored``, suggesting the nearest
        known key; ``elsewhere`` maps keys that are valid somewhere else to the error to give.
        Warns once per ignored key present (``ignored`` maps it to a hint or None) unless
        ``warn_ignored`` is False. Returns the ignored keys present, in file order."""
        known = set(known)
        present = []
        for key in mapping:
            if key in known:
                continue
            if key in ignored:
                present.append(key)
                if warn_ignored:
                    hint = f" ({ignored[key]})" if ignored[key] else ""
                    self.warn(join(path, key), f"not used by hpo-slurm{hint}, ignored")
                continue
            if key in elsewhere:
                self.fail(join(path, key), elsewhere[key])
            guess = suggest(key, sorted(known | set(ignored)))
            if guess:
                self.fail(join(path, key), f"unknown key; did you mean {guess!r}?")
            if len(known) <= 8:
                self.fail(join(path, key), f"unknown key; expected one of {', '.join(sorted(known))}")
            self.fail(join(path, key), "unknown key")
        return present

    def required(self, mapping: Mapping[str, Any], key: str, path: str, hint: str = "") -> Any:
        value = mapping.get(key)
        if value is None:
            self.fail(join(path, key), "missing required key" + (f"; {hint}" if hint else ""))
        return value

    def integer(self, value: Any, path: str, minimum: Optional[int] = None,
                maximum: Optional[int] = None) -> int:
        """An integer (an integral float such as ``1e3`` counts, a bool does not) in range."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not is_int(value) or (minimum is not None and value < minimum) or (
                maximum is not None and value > maximum):
            if minimum == 1 and maximum is None:
                what = "a positive integer"
            elif minimum == 0 and maximum is None:
                what = "a non-negative integer"
            elif minimum is not None and maximum is not None:
                what = f"an integer from {minimum} to {maximum}"
            elif minimum is not None:
                what = f"an integer >= {minimum}"
            else:
                what = "an integer"
            self.fail(path, f"expected {what}, got {show(value)}")
        return value

    def number(
        self,
        value: Any,
        path: str,
        minimum: Optional[float] = None,
        maximum: Optional[float] = None,
        above: Optional[float] = None,
    ) -> float:
        """A finite int or float (not a bool) with ``minimum <= value <= maximum`` and ``value > above``."""
        ok = _is_finite(value)
        ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
        ok = ok and (above is None or value > above)
        if not ok:
            if minimum is not None and maximum is not None:
                what = f"a number from {minimum:g} to {maximum:g}"
            elif above is not None:
                what = f"a number > {above:g}"
            elif minimum is not None:
                what = f"a number >= {minimum:g}"
            else:
                what = "a number"
            self.fail(path, f"expected {what}, got {show(value)}")
        return float(value)

    def at_most(self, value: int, path: str, limit: int, unit: str) -> int:
        """``value`` if it is at most ``limit``; the error names the limit in ``unit``."""
        if value > limit:
            self.fail(path, f"expected at most {limit:,} {unit}, got {show(value)}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {show(value)}")
        return value

    def string(self, value: Any, path: str, what: str = "a non-empty string", multiline: bool = False) -> str:
        """A non-empty string; one line unless ``multiline``."""
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected {what}, got {show(value)}")
        if not multiline and ("\n" in value.strip() or "\r" in value):
            self.fail(path, f"expected {what} on one line, got {show(value)}")
        return value.strip()

    def choice(self, value: Any, path: str, choices: Sequence[str], what: str,
               aliases: Optional[Mapping[str, str]] = None) -> str:
        """One of ``choices``; otherwise an error naming the nearest choice or listing them all."""
        if isinstance(value, str) and value in choices:
            return value
        guess = suggest(value, choices, aliases)
        hint = f"did you mean {guess!r}?" if guess else f"expected one of {', '.join(choices)}"
        self.fail(path, f"unknown {what} {show(value)}; {hint}")

    def length(self, value: Any, path: str, minimum: int = 1) -> Length:
        """A training length: ``{batches: N}``, ``{records: N}``, ``{epochs: N}`` or a bare integer
        of batches, with ``N >= minimum``."""
        if is_int(value) or (isinstance(value, float) and value.is_integer()):
            amount = self.integer(value, path, minimum=minimum)
            return self.at_most(amount, path, MAX_LENGTH, "batches"), "batches"
        if not isinstance(value, dict):
            self.fail(path, f"expected a length such as {{batches: 1000}}, {{epochs: 3}} or an integer "
                            f"number of batches, got {show(value)}")
        mapping = self.mapping(value, path)
        self.check_keys(mapping, path, LENGTH_UNITS)
        if len(mapping) != 1:
            self.fail(path, f"expected exactly one of batches, records or epochs, got {len(mapping)} keys")
        (unit, amount), = mapping.items()
        amount = self.integer(amount, join(path, unit), minimum=minimum)
        return self.at_most(amount, join(path, unit), MAX_LENGTH, unit), unit


# ---------------------------------------------------------------------------------------------
# JSON values (consts, categorical vals, data): the driver stores and hands them on as JSON
# ---------------------------------------------------------------------------------------------

_JSON = "a JSON value (a string, number, true, false, null, list or mapping)"
_NOT_JSON_HINTS = (
    (datetime.date, "quote it to pass it as a string"),
    (bytes, "drop the !!binary tag to pass the text as a string"),
    ((set, frozenset), "write a list instead"),
    (tuple, "write a mapping instead"),
)


def json_value(ck: Checker, value: Any, path: str) -> Any:
    """``value`` as JSON holds it: strings, integers, finite floats, booleans, null, lists and mappings;
    no YAML tags such as ``!!set``, no cycles, at most JSON_MAX_DEPTH deep. Mapping keys that are
    numbers, booleans or null become strings as JSON writes them (``{0: 1.0}`` -> ``{"0": 1.0}``), so the
    trial sees what it would see under Determined."""
    if _json_size(ck, value, path, {}, set()) > JSON_MAX_VALUES:
        ck.fail(path, f"expected at most {JSON_MAX_VALUES:,} values, got more (each YAML alias counts "
                      f"as a copy of its anchor)")
    return _with_string_keys(value)


def _json_key(name: Any) -> Optional[str]:
    """The key JSON writes for a mapping key, or None when JSON has none for it."""
    if isinstance(name, str):
        return name
    if isinstance(name, bool) or name is None:
        return json.dumps(name)
    if isinstance(name, int) or (isinstance(name, float) and math.isfinite(name)):
        return json.dumps(name)
    return None


def _with_string_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_json_key(name): _with_string_keys(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_with_string_keys(item) for item in value]
    return value


def _json_size(ck: Checker, value: Any, path: str, sizes: Dict[int, int], open_ids: set) -> int:
    """Values in ``value`` with aliases expanded; ``sizes`` memoises shared lists and mappings by id,
    ``open_ids`` holds the ones being walked (a cycle)."""
    if value is None or isinstance(value, (str, int)):
        return 1
    if isinstance(value, float):
        if not math.isfinite(value):
            ck.fail(path, f"expected a finite number, got {show(value)}; JSON has no NaN or infinity "
                          f"(quote it to pass it as a string)")
        return 1
    if not isinstance(value, (list, dict)):
        what = "a pair (!!omap or !!pairs)" if isinstance(value, tuple) else show(value)
        hint = next((f"; {hint}" for kind, hint in _NOT_JSON_HINTS if isinstance(value, kind)), "")
        ck.fail(path, f"expected {_JSON}, got {what}{hint}")
    key = id(value)
    if key in open_ids:
        ck.fail(path, "expected a JSON value, got a YAML alias to a value that contains it (a cycle)")
    if key not in sizes:
        if len(open_ids) >= JSON_MAX_DEPTH:
            ck.fail(path, f"expected a value nested at most {JSON_MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            written: Dict[str, Any] = {}
            for name in value:
                text = _json_key(name)
                if text is None:
                    ck.fail(join(path, show(name)), f"expected a string, number, boolean or null key, got {show(name)}")
                if text in written:
                    ck.fail(join(path, text), f"keys {show(written[text])} and {show(name)} are the same key in JSON")
                written[text] = name
            items = [(join(path, _json_key(name)), item) for name, item in value.items()]
        else:
            items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        open_ids.add(key)
        sizes[key] = 1 + sum(_json_size(ck, item, where, sizes, open_ids) for where, item in items)
        open_ids.discard(key)
    return sizes[key]


# ---------------------------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------------------------

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
