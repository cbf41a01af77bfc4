"""Rich tables for ``status`` and the live view of ``launch``. Colours follow state and disappear
when output is not a terminal."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from rich.console import Console, Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "RUNNING": "cyan", "QUEUED": "blue", "PENDING": "dim", "PAUSED": "yellow", "COMPLETED": "green",
    "STOPPED_EARLY": "magenta", "ERRORED": "red", "STOPPED": "magenta",
}


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _metric(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.6g}"


def _hparams(hparams: Dict[str, Any], width: int = 70) -> str:
    """``optimizer.lr=0.0123 layers=3``: nested keys dotted, floats to four significant digits."""
    text = " ".join(f"{key}={_value(value)}" for key, value in _flatten(hparams))
    return text if len(text) <= width else text[: width - 1] + "…"


def _flatten(tree: Dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if not isinstance(value, str) else value


def experiments_table(summaries: List[Dict[str, Any]]) -> Table:
    table = Table(title="Experiments", title_justify="left")
    for column in ("name", "state", "searcher", "driver", "progress", "trials", "best"):
        table.add_column(column)
    for s in summaries:
        driver = "alive" if s["driver"]["alive"] else "-"
        trials = sum(s["trial_counts"].values())
        best = _metric(s["best"]["metric"]) if s["best"] else "-"
        table.add_row(s["name"], _state(s["state"]), s["searcher"], driver, f"{s['progress']:.0%}", str(trials), best)
    return table


def summary_panel(s: Dict[str, Any]) -> Panel:
    driver = s["driver"]
    driver_text = f"alive (pid {driver['pid']} on {driver['host']})" if driver["alive"] else "not running"
    counts = ", ".join(f"{n} {state.lower()}" for state, n in s["trial_counts"].items() if n)
    lines = [
        Text.assemble("state ", _state(s["state"]), f"   searcher {s['searcher']}   executor {s['executor']}"),
        Text(f"driver {driver_text}"),
        Text(f"trials: {counts or 'none yet'}"),
        Text(f"GPU-hours {s['gpu_hours'] or 0:.2f}   checkpoints {_bytes(s['checkpoint_bytes'])}"),
    ]
    best = s["best"]
    if best:
        direction = "min" if s["smaller_is_better"] else "max"
        lines.append(Text(f"best {s['metric']} ({direction}) {_metric(best['metric'])} — trial {best['trial_id']}: "
                          f"{_hparams(best['hparams'], 100)}", style="bold"))
    bar = ProgressBar(total=1.0, completed=s["progress"], width=40)
    return Panel(Group(*lines, Group(Text(f"progress {s['progress']:.0%}"), bar)), title=s["name"], title_align="left")


def trials_table(trials: List[Dict[str, Any]], limit: Optional[int] = None) -> Table:
    table = Table(title="Trials", title_justify="left")
    for column in ("id", "state", "length", "latest", "best", "restarts", "preempt", "jobs", "hyperparameters"):
        table.add_column(column, overflow="fold" if column == "hyperparameters" else "ellipsis")
    shown = trials if limit is None else trials[-limit:]
    for t in shown:
        jobs = ",".join(r["job_id"] for r in t["runs"] if r["job_id"])
        length = str(t["length_done"]) + (f"→{t['target_length']}" if t["target_length"] else "")
        table.add_row(str(t["id"]), _state(t["state"]), length, _metric(t["latest_metric"]), _metric(t["best_metric"]),
                      str(t["restarts"]), str(t["preemptions"]), _short(jobs, 24), _hparams(t["hparams"]))
    return table


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _bytes(count: int) -> str:
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def print_summary(summary: Dict[str, Any], console: Optional[Console] = None) -> None:
    console = console or Console()
    console.print(summary_panel(summary))
    if summary.get("trials"):
        console.print(trials_table(summary["trials"]))
