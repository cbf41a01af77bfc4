"""Values JSON can hold (consts, categorical vals, ``data:``): the driver stores them and hands them
on as JSON, so YAML-only values are refused with a hint, mapping keys become strings, and size and
nesting are bounded."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Dict, Optional

from hpo_slurm.config.checks import JSON_MAX_DEPTH, JSON_MAX_VALUES, Checker, join, show

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
