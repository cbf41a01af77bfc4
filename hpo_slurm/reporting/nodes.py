"""The nodes a run's job holds, as its attempts file says, and node lists written compactly.

``runs/<run>/attempts.jsonl`` has one JSON object per start of the job (``core.protocol``); the last
one is the attempt that runs now. Its ``"nodes"`` (a list of node names) says where the trial's ranks
are; a line without it (a job started by an older hpo-slurm, a local process) names its ``"host"``.
Only the end of the file is read (``core.protocol.last_attempt``): a job that Slurm requeued many
times costs no more to look at.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from hpo_slurm.core.protocol import last_attempt

_NUMBERED = re.compile(r"(.*?)(\d+)")


def last_attempt_nodes(path: Path) -> Optional[List[str]]:
    """The node names of the last attempt recorded in the attempts file ``path``: its ``nodes`` list,
    else ``[host]``; None when the file is missing or unreadable, or its last line that is a JSON
    object names neither. A line cut short (a job killed while writing it) is skipped."""
    attempt = last_attempt(path)
    return _names(attempt) if attempt is not None else None


def _names(attempt: Dict[str, object]) -> Optional[List[str]]:
    nodes = attempt.get("nodes")
    if isinstance(nodes, list) and nodes and all(isinstance(n, str) and n for n in nodes):
        return list(nodes)
    host = attempt.get("host")
    return [host] if isinstance(host, str) and host else None


def compact_nodes(names: Sequence[str]) -> str:
    """Node names as Slurm writes a host list: ``node1,node2,node3,gpu07,login`` ->
    ``node[1-3],gpu07,login``. Names that differ only in a trailing number share a bracket; a
    zero-padded number only shares one with numbers of its width (``gpu[099-100]``). Groups keep the
    order of their first name; numbers within a group are sorted; repeats are dropped."""
    numbered = {name: _NUMBERED.fullmatch(name) for name in dict.fromkeys(names)}
    padded = {(m.group(1), len(m.group(2))) for m in numbered.values() if m and _is_padded(m.group(2))}
    groups: Dict[Tuple[str, int], List[Tuple[int, str]]] = {}
    order: List[object] = []
    for name, match in numbered.items():
        if not match:
            order.append(name)
            continue
        prefix, digits = match.groups()
        key = (prefix, len(digits))  # gpu099 and gpu100 share a width; node9 and node10 share none
        if key not in padded:
            key = (prefix, 0)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append((int(digits), digits))
    return ",".join(item if isinstance(item, str) else _group(item[0], sorted(groups[item])) for item in order)


def _is_padded(digits: str) -> bool:
    return len(digits) > 1 and digits.startswith("0")


def _group(prefix: str, numbers: List[Tuple[int, str]]) -> str:
    if len(numbers) == 1:
        return prefix + numbers[0][1]
    ranges: List[List[Tuple[int, str]]] = []
    for number in numbers:
        if ranges and number[0] == ranges[-1][-1][0] + 1:
            ranges[-1].append(number)
        else:
            ranges.append([number])
    parts = [r[0][1] if len(r) == 1 else f"{r[0][1]}-{r[-1][1]}" for r in ranges]
    return f"{prefix}[{','.join(parts)}]"
