"""Typed reads of config values: each takes the value and its key path (``searcher.max_trials``,
``slurm.setup[2]``) and returns the value in its Python form or raises one ``ConfigError`` whose text
is one line: ``search.yaml: searcher.max_trials: expected a positive integer, got -3``. Unknown keys
get a did-you-mean. The ``MAX_*`` limits keep numbers where the searchers neither overflow floats nor
run forever.
"""

from __future__ import annotations

import datetime
import difflib
import math
from typing import Any, Dict, Iterable, List, Mapping, NoReturn, Optional, Sequence, Tuple

from hpo_slurm.core.errors import ConfigError

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
