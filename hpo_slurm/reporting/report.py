"""One self-contained HTML page about an experiment: the summary, the best trial, the pictures of
``hpo-slurm plot`` (PNG inlined as base64 data URIs) and the trial table. No scripts, no external
files: it can be mailed, attached to an issue or opened from a shared filesystem."""

from __future__ import annotations

import base64
import datetime
import html
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

from hpo_slurm.reporting.best import best_trial, render_yaml
from hpo_slurm.core.errors import UserError
from hpo_slurm.reporting.results import Results, compute_label, leaf_value, searched_leaves, total_compute_hours
from hpo_slurm.config.space import Const

STATE_COLOURS = {
    "RUNNING": "#0e7490", "QUEUED": "#1d4ed8", "PENDING": "#6b7280", "PAUSED": "#a16207",
    "COMPLETED": "#15803d", "STOPPED_EARLY": "#a21caf", "ERRORED": "#b91c1c", "STOPPED": "#a21caf",
}
CAPTIONS = {
    "learning_curves": "Learning curves: the searcher's metric against length, coloured by how far each trial got.",
    "best_vs_compute": "Best result so far against the compute spent.",
    "hyperparameters": "Each trial's best result against each searched hyperparameter.",
    "parallel_coordinates": "The best trials across every hyperparameter.",
}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1280px;
       color: #111827; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #e5e7eb; }
.state { font-weight: 600; } .muted { color: #6b7280; }
table { border-collapse: collapse; font-size: 0.9em; }
.wide { overflow-x: auto; max-width: 100%; } table.trials { font-size: 0.82em; }
th, td { padding: 0.25em 0.5em; border-bottom: 1px solid #e5e7eb; text-align: left; vertical-align: top; }
th { background: #f9fafb; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th { width: 12em; }
tr.best td { background: #fef9c3; }
pre { background: #f3f4f6; padding: 0.8em; overflow-x: auto; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #e5e7eb; }
figcaption { color: #4b5563; font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _state(state: str) -> str:
    return f'<span class="state" style="color:{STATE_COLOURS.get(state, "#111827")}">{_e(state)}</span>'


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.6g}"


def _when(moment: Optional[float]) -> str:
    if not moment:
        return "-"
    return datetime.datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M:%S")


def _summary_rows(summary: Dict[str, Any], results: Results) -> List[tuple]:
    driver = summary["driver"]
    counts = ", ".join(f"{n} {state.lower()}" for state, n in summary["trial_counts"].items() if n) or "none yet"
    best = summary["best"]
    direction = "lower" if results.smaller_is_better else "higher"
    return [
        ("state", _state(summary["state"])),
        ("searcher", _e(f"{summary['searcher']} with {summary['sampler']} sampling, on {summary['executor']}")),
        ("metric", _e(f"{summary['metric']} ({direction} is better)")),
        ("progress", _e(f"{summary['progress']:.0%}")),
        ("trials", _e(counts)),
        (compute_label(results).split(" (")[0], _e(f"{total_compute_hours(results):.4g}") +
         f' <span class="muted">{_e(compute_label(results))}</span>'),
        ("best", _e(f"{_num(best['metric'])} (trial {best['trial_id']}, at {best['length']} {results.unit})")
         if best else "-"),
        ("driver", _e(f"alive, pid {driver['pid']} on {driver['host']}" if driver["alive"] else "not running")),
        ("created", _e(_when(summary["created_at"]))),
        ("ended", _e(_when(summary["ended_at"]))),
    ]


def _trial_table(results: Results, best_id: Optional[int]) -> str:
    leaves = [name for name, param in searched_leaves(results.config.hyperparameters)]
    consts = [".".join(path) for path, param in results.config.hyperparameters.leaves() if isinstance(param, Const)]
    runs: Dict[int, int] = {}
    for run in results.runs:
        runs[run["trial_id"]] = runs.get(run["trial_id"], 0) + 1
    parents = any(t["parent"] for t in results.trials)
    head = ["trial", "state"] + (["parent"] if parents else []) + [
        f"length ({results.unit})", f"best {results.metric}", "at length", "latest", "runs", "restarts",
        "preempted", "time limits"] + leaves
    lines = ['<div class="wide"><table class="trials"><thead><tr>'
             + "".join(f"<th>{_e(h).replace('.', '.<wbr>')}</th>" for h in head) + "</tr></thead><tbody>"]
    for t in results.trials:
        cells = [
            f'<td class="num">{t["id"]}</td>', f"<td>{_state(t['state'])}</td>",
            *([f'<td class="num">{_e(t["parent"] or "")}</td>'] if parents else []),
            f'<td class="num">{t["validated_length"] or 0}</td>',
            f'<td class="num">{_num(t["best_metric"])}</td>', f'<td class="num">{_e(t["best_length"] or "")}</td>',
            f'<td class="num">{_num(t["latest_metric"])}</td>', f'<td class="num">{runs.get(t["id"], 0)}</td>',
            f'<td class="num">{t["restarts"] or 0}</td>', f'<td class="num">{t["preemptions"] or 0}</td>',
            f'<td class="num">{t.get("time_limits") or 0}</td>',
        ] + [f"<td>{_e(_hp(leaf_value(t['hparams'], name)))}</td>" for name in leaves]
        row_class = ' class="best"' if t["id"] == best_id else ""
        lines.append(f"<tr{row_class}>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table></div>")
    if consts:
        fixed = ", ".join(f"{name}={_hp(leaf_value(results.trials[0]['hparams'], name))}" for name in consts) \
            if results.trials else ", ".join(consts)
        lines.append(f'<p class="muted">Constant for every trial: {_e(fixed)}</p>')
    return "\n".join(lines)


def _hp(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(results: Results, summary: Dict[str, Any], images: Dict[str, bytes]) -> str:
    """The page, from the results, ``status.summarize`` output and PNG bytes by figure stem."""
    try:
        best = best_trial(results)
    except UserError:
        best = None
    version = metadata.version("hpo-slurm")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(results.layout.name)}: hpo-slurm report</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(results.layout.name)}</h1>",
        f'<p class="muted">{_e(results.config.description)} Report written {_e(_when(results.read_at))} '
        f"from {_e(results.layout.dir)} by hpo-slurm {_e(version)}.</p>",
        "<h2>Summary</h2><table class=\"summary\">",
        *(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in _summary_rows(summary, results)),
        "</table>", "<h2>Best trial</h2>",
    ]
    if best:
        parts.append(f"<pre>{_e(render_yaml(best, results.config.hyperparameters))}</pre>")
    else:
        parts.append(f"<p>No trial has reported {_e(results.metric)} yet.</p>")
    parts.append("<h2>Pictures</h2>")
    for stem, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure id="{_e(stem)}"><img alt="{_e(CAPTIONS.get(stem, stem))}" '
                     f'src="data:image/png;base64,{data}"><figcaption>{_e(CAPTIONS.get(stem, stem))}</figcaption></figure>')
    parts += ["<h2>Trials</h2>", _trial_table(results, best["trial_id"] if best else None), "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(results: Results, summary: Dict[str, Any], out: Path, on_figure=None) -> Path:
    """Draw the pictures and write the page to ``out`` (published by rename). ``on_figure(stem)`` is
    called after each picture, for progress display."""
    from hpo_slurm.reporting.plots import FIGURES, png_bytes, require_matplotlib

    require_matplotlib()
    images = {}
    for stem, draw in FIGURES.items():
        images[stem] = png_bytes(draw(results))
        if on_figure:
            on_figure(stem)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(results, summary, images), encoding="utf-8")
    tmp.replace(out)
    return out
