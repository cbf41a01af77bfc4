"""Shared helpers of the benchmark scripts: configs derived from benchmarks/configs, statistics,
tables and JSON output. The scripts run from the repository root: ``python benchmarks/NAME.py``."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import yaml

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
RESULTS = HERE / "results"
ASHA_ONLY = ("mode", "divisor", "max_rungs", "bracket_rungs", "num_rungs", "stop_once")


def write_config(base: str, target: Path, seed: Optional[int] = None, **searcher: Any) -> Path:
    """``benchmarks/configs/<base>`` with the searcher fields replaced (keys the new searcher does not
    take are dropped), written to ``target``."""
    data = yaml.safe_load((CONFIGS / base).read_text())
    section = data["searcher"]
    name = searcher.get("name", section["name"])
    if name != section["name"]:
        for key in ASHA_ONLY:
            section.pop(key, None)
    if name == "async_halving":
        section.setdefault("divisor", 4)
    section.update(searcher)
    if seed is not None:
        data["reproducibility"] = {"experiment_seed": seed}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: List[Sequence[Any]]) -> str:
    def show(value: Any) -> str:
        if isinstance(value, float):
            if value != value:
                return "-"
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    cells = [[show(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join([line, rule, *body])


def machine() -> Dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_at_start": load, "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def save(name: str, data: Dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1, sort_keys=True))
    return path


def run_child(script: Path, *args: str, timeout: float = 3600) -> Dict[str, Any]:
    """Run ``python script args`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(HERE.parent))
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
