"""Rich tables for ``status`` and the live view of ``launch``. Colours follow state and disappear
when output is not a terminal."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from rich.console import Console, Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hpo_slurm.config.schema import NO_TARGET
from hpo_slurm.reporting.nodes import compact_nodes

STATE_STYLES = {
    "RUNNING": "cyan", "QUEUED": "blue", "PENDING": "dim", "PAUSED": "yellow", "COMPLETED": "green",
    "STOPPED_EARLY": "magenta", "ERRORED": "red", "STOPPED": "magenta",
}


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _metric(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.6g}"


def _hparams(hparams: Dict[str, Any]) -> str:
    """``optimizer.lr=0.0123 layers=3``: nested keys dotted, floats to four significant digits."""
    return " ".join(f"{key}={_value(value)}" for key, value in _flatten(hparams))


def _flatten(tree: Dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if not isinstance(value, str) else value


PIPE_WIDTH = 160  # when output is not a terminal, wrap tables at this width instead of rich's 80


def output_console(stderr: bool = False) -> Console:
    """A console for command output: the terminal's width on a terminal; when piped or redirected, no
    colour (rich's own rule) and a width of ``$COLUMNS`` or PIPE_WIDTH. Nothing is cut: a cell wider
    than its column (long hyperparameters) folds onto more lines."""
    console = Console(stderr=stderr)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(stderr=stderr, width=PIPE_WIDTH)
    return console


def _title(summary: Dict[str, Any]) -> str:
    """The experiment's name, and its folder (what commands take) when that is spelled otherwise."""
    folder = summary.get("folder", summary["name"])
    return summary["name"] if folder == summary["name"] else f"{summary['name']} ({folder})"


def experiments_table(summaries: List[Dict[str, Any]]) -> Table:
    table = Table(title="Experiments", title_justify="left")
    longest = max((len(_title(s)) for s in summaries), default=4)
    for column in ("name", "state", "searcher", "driver", "progress", "trials", "best"):
        table.add_column(column, no_wrap=True, min_width=min(longest, 40) if column == "name" else None)
    for s in summaries:
        driver = "alive" if s["driver"]["alive"] else "-"
        trials = sum(s["trial_counts"].values())
        best = _metric(s["best"]["metric"]) if s["best"] else "-"
        table.add_row(_title(s), _state(s["state"]), s["searcher"], driver, f"{s['progress']:.0%}", str(trials), best)
    return table


def _run_counts(counts: Dict[str, int], unsubmitted: int) -> List[str]:
    """``3 queued, 1 not yet submitted, 4 running, ...``: SUBMITTED runs split by whether they have a job."""
    parts = []
    for state, n in counts.items():
        if state == "SUBMITTED":
            parts += [f"{n - unsubmitted} queued"] if n - unsubmitted else []
            parts += [f"{unsubmitted} not yet submitted"] if unsubmitted else []
        elif n:
            parts.append(f"{n} {state.lower()}")
    return parts


def compute_text(s: Dict[str, Any]) -> str:
    """The summary's compute: ``GPU-hours 8.00 (4 GPUs per trial × 2.00 job hours)``; with
    ``slots_per_trial`` 0, ``job hours 2.00 (slots_per_trial 0: no GPUs)``."""
    slots, job_hours = s.get("slots_per_trial", 1), s.get("job_hours") or 0
    if not slots:
        return f"job hours {job_hours:.2f} (slots_per_trial 0: no GPUs)"
    gpus = f"{slots} GPU{'s' if slots > 1 else ''} per trial"
    return f"GPU-hours {s['gpu_hours'] or 0:.2f} ({gpus} × {job_hours:.2f} job hours)"


def summary_panel(s: Dict[str, Any]) -> Panel:
    driver = s["driver"]
    driver_text = f"alive (pid {driver['pid']} on {driver['host']})" if driver["alive"] else "not running"
    if driver.get("waiting"):
        driver_text += f", waiting: {driver['waiting']}"
    counts = ", ".join(f"{n} {state.lower()}" for state, n in s["trial_counts"].items() if n)
    runs = ", ".join(_run_counts(s.get("run_counts", {}), s.get("runs_unsubmitted", 0)))
    lines = [
        Text.assemble("state ", _state(s["state"]), f"   searcher {s['searcher']}   executor {s['executor']}"),
        Text(f"driver {driver_text}"),
        Text(f"trials: {counts or 'none yet'}"),
        Text(f"runs: {runs or 'none yet'}"),
        Text(f"{compute_text(s)}   checkpoints {_bytes(s['checkpoint_bytes'])}"),
    ]
    if s.get("pool"):
        lines.append(Text(pool_totals_text(s["pool"])))
    best = s["best"]
    if best:
        direction = "min" if s["smaller_is_better"] else "max"
        lines.append(Text(f"best {s['metric']} ({direction}) {_metric(best['metric'])} — trial {best['trial_id']}: "
                          f"{_hparams(best['hparams'])}", style="bold"))
    bar = ProgressBar(total=1.0, completed=s["progress"], width=40)
    return Panel(Group(*lines, Group(Text(f"progress {s['progress']:.0%}"), bar)), title=_title(s), title_align="left")


COMPACT_BELOW = 130  # narrower consoles get the compact trials table


def run_nodes(runs: List[Dict[str, Any]]) -> str:
    """The nodes of the running runs among ``runs``, compactly (``node[1-2]``); "" when none says."""
    names = [name for r in runs if r.get("state") == "RUNNING" for name in (r.get("nodes") or ())]
    return compact_nodes(names)


def trials_table(trials: List[Dict[str, Any]], limit: Optional[int] = None, width: Optional[int] = None,
                 one_line: bool = False, title: str = "Trials") -> Table:
    """The trials, latest ``limit`` only when given. A ``nodes`` column shows where the running trials
    run, when some shown trial's running run recorded its nodes. Below COMPACT_BELOW columns of
    ``width`` the table drops the job ids, shows restarts, preemptions and stops at the time limit
    (``rst/pre/lim``, the header on two lines) only when some trial has any, and
    lists the hyperparameters one per line (or cut to one line with ``one_line``, for live views that
    must fit the screen), so states and numbers are never cut."""
    compact = width is not None and width < COMPACT_BELOW
    shown = trials if limit is None else trials[-limit:]
    troubled = any(t["restarts"] or t["preemptions"] or t.get("time_limits") for t in shown)
    nodes = {t["id"]: run_nodes(t["runs"]) for t in shown}
    nodes_width = max(map(len, nodes.values()), default=0)
    columns = ["id", "state", "length", "latest", "best"]
    columns += (["rst/pre\n/lim"] if troubled else []) if compact else ["restarts", "preempt", "time lim", "jobs"]
    columns += ["nodes"] if nodes_width else []
    table = Table(title=title, title_justify="left")
    for column in columns:  # never cut a state or a number; the hyperparameters column gives way instead
        table.add_column(column, no_wrap=column in ("id", "state", "length", "latest", "best"),
                         **({"overflow": "fold"} if column == "nodes" else {}))
    spare = (width or 0) - 62 - 10 * troubled - (min(nodes_width, 24) + 3) * bool(nodes_width)
    table.add_column("hyperparameters", overflow="ellipsis" if compact else "fold", no_wrap=compact,
                     max_width=max(12, spare) if compact and one_line else None)
    for t in shown:
        jobs = ",".join(r["job_id"] for r in t["runs"] if r["job_id"])
        trained = t.get("length_trained", t["length_done"])
        target = t["target_length"]  # None: between runs; NO_TARGET: trains until its code stops
        length = str(trained) + (f"→{target}" if target not in (None, NO_TARGET) else "")
        cells = [str(t["id"]), _state(t["state"]), length, _metric(t["latest_metric"]), _metric(t["best_metric"])]
        if compact:
            cells += [f"{t['restarts']}/{t['preemptions']}/{t.get('time_limits', 0)}"] if troubled else []
        else:
            cells += [str(t["restarts"]), str(t["preemptions"]), str(t.get("time_limits", 0)), _short(jobs, 24)]
        cells += [nodes[t["id"]]] if nodes_width else []
        if compact:
            pairs = [f"{key}={_value(value)}" for key, value in _flatten(t["hparams"])]
            cells.append((" " if one_line else "\n").join(pairs))
        else:
            cells.append(_hparams(t["hparams"]))
        table.add_row(*cells)
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


def run_lengths(run: Dict[str, Any]) -> str:
    """``0→64``: where a run starts and the target it trains to; ``40→open-ended`` for a run without a
    target (NO_TARGET: it trains until the trial's code stops)."""
    target = "open-ended" if run["to_length"] == NO_TARGET else str(run["to_length"])
    return f"{run['from_length']}→{target}"


def active_runs_table(summary: Dict[str, Any]) -> Table:
    """The summary's active runs; the title says how many more there are."""
    shown = summary["active_runs"]
    total = sum(summary["run_counts"].get(state, 0) for state in ("SUBMITTED", "RUNNING"))
    more = f" (first {len(shown)} of {total})" if total > len(shown) else ""
    nodes = [run_nodes([r]) for r in shown]
    table = Table(title=f"Active runs{more}", title_justify="left")
    for column in ("run", "trial", "state", "lengths", "job") + (("nodes",) if any(nodes) else ()):
        table.add_column(column, no_wrap=column != "nodes", overflow="fold")
    for r, where in zip(shown, nodes):
        table.add_row(r["run_id"], str(r["trial_id"]), _state(r["state"]), run_lengths(r),
                      r["job_id"] or "-", *([where] if any(nodes) else []))
    return table


POOL_STATE_STYLES = {"running": "cyan", "idle": "yellow", "queued": "blue", "ended": "dim"}


def pool_totals_text(pool: Dict[str, Any]) -> str:
    """``pool: 2 of at most 4 workers live, 1 run queued, worker-hours 3.50 (idle ~0.40)``; the hours
    say over how many workers when older ended ones were not read, and ``idle ?`` when not known."""
    totals = pool["totals"]
    queued = totals["runs_queued"]
    idle = "?" if totals["idle_hours"] is None else f"~{totals['idle_hours']:.2f}"
    counted = (f" over {totals['workers_counted']} of {totals['workers_total']} workers"
               if totals["workers_counted"] < totals["workers_total"] else "")
    return (f"pool: {totals['workers_live']} of at most {pool['max_workers']} workers live, "
            f"{queued} run{'s' * (queued != 1)} queued, worker-hours {totals['worker_hours']:.2f}{counted} "
            f"(idle {idle})")


def _pool_state(worker: Dict[str, Any]) -> Text:
    state = worker["state"]
    text = f"ended ({worker['ended_how']})" if state == "ended" and worker.get("ended_how") else state
    if worker.get("silent"):
        text += f" (silent {_duration(worker['beat_age_s'])})"
    return Text(text, style=POOL_STATE_STYLES.get(state, ""))


def _duration(seconds: Optional[float]) -> str:
    """``45s``, ``12m``, ``3.5h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 3600 else f"{seconds / 3600:.1f}h"


def pool_table(pool: Dict[str, Any], width: Optional[int] = None) -> Table:
    """The pool's workers (``status.summarize``'s ``pool``): worker, job, state, the run it holds, how
    long it idles, runs done, host. Below COMPACT_BELOW columns of ``width`` the job ids are dropped
    and the host folds, so states and numbers are never cut."""
    compact = width is not None and width < COMPACT_BELOW
    columns = ["worker"] + ([] if compact else ["job"]) + ["state", "run", "idle", "runs", "host"]
    table = Table(title="Pool", title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column != "host", overflow="fold")
    for w in pool["workers"]:
        cells = [w["name"]] + ([] if compact else [w["job_id"] or "-"])
        cells += [_pool_state(w), w["run"] or "-", _duration(w["idle_s"]), str(w["runs"]), w["host"] or "-"]
        table.add_row(*cells)
    return table


def summary_head(summary: Dict[str, Any], width: Optional[int] = None) -> List[Any]:
    """What every view of a search starts with: the summary panel, then the pool's workers when the
    search has a pool with workers (``pool``)."""
    head: List[Any] = [summary_panel(summary)]
    if summary.get("pool") and summary["pool"]["workers"]:
        head.append(pool_table(summary["pool"], width=width))
    return head


def print_summary(summary: Dict[str, Any], console: Optional[Console] = None) -> None:
    """``summary_head``, then the trial listing when the summary has one (``trials``), else the active
    runs and the top trials."""
    console = console or output_console()
    for part in summary_head(summary, console.width):
        console.print(part)
    if "trials" in summary:
        if summary["trials"]:
            console.print(trials_table(summary["trials"], width=console.width))
        return
    if summary.get("active_runs"):
        console.print(active_runs_table(summary))
    if summary.get("top_trials"):
        direction = "smallest" if summary["smaller_is_better"] else "largest"
        title = f"Top {len(summary['top_trials'])} trials by {summary['metric']} ({direction} first)"
        console.print(trials_table(summary["top_trials"], width=console.width, title=title))
