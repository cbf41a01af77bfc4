"""The driver-to-job protocol: what the driver and a job say to each other through files in the
experiment folder. Standard library only: both sides import it.

Metrics lines (``trials/<id>/metrics.jsonl``), appended by the trial, one JSON object a line:
``{"kind": "training"|"validation", "length": int >= 0, "metrics": {...}, "run": str, "time": float}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple


@dataclass(frozen=True)
class MetricLine:
    kind: str  # "validation" or "training"
    length: int
    metrics: Dict[str, Any]
    run: str
    time: float


def read_new_lines(path: Path, offset: int) -> Tuple[List[MetricLine], int, List[str]]:
    """Complete lines after ``offset``: (parsed lines, the offset after the last complete line,
    warnings for lines that are not valid metric records). A torn last line (no newline yet) is left
    for the next read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset, []
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset, []
    lines, warnings = [], []
    position = offset
    for raw in data[: end + 1].split(b"\n")[:-1]:
        line_offset = position
        position += len(raw) + 1
        if not raw.strip():
            continue
        try:
            lines.append(parse_line(raw))
        except ValueError as exc:
            warnings.append(f"{path}: byte {line_offset}: skipped a malformed metrics line ({exc})")
    return lines, offset + end + 1, warnings


def parse_line(raw: bytes) -> MetricLine:
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    kind, length, metrics = record.get("kind"), record.get("length"), record.get("metrics")
    if kind not in ("validation", "training"):
        raise ValueError(f"kind {kind!r}")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError(f"length {length!r}")
    if not isinstance(metrics, dict):
        raise ValueError("metrics is not an object")
    return MetricLine(kind, length, metrics, str(record.get("run", "")), float(record.get("time", 0.0)))
