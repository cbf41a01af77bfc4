"""The pictures of a search, drawn with matplotlib (the optional ``plots`` extra) on the Agg backend.

Every ``*_figure(results)`` function returns a new ``matplotlib.figure.Figure`` (never pyplot, so no
global figure registry and no display is touched) with a title, axis labels with units and a
legend. ``figures(results)`` returns all four by file stem; ``write_pngs`` saves them. Lines of
trials carry ``gid="trial-<id>"`` so tests (and people poking at figures) can find them.
Without matplotlib every entry point raises a UserError saying how to install it.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from hpo_slurm.core.errors import UserError
from hpo_slurm.reporting.results import (Results, best_so_far, compute_label, leaf_value, length_reached, parent_length,
                      ranked_trials, searched_leaves, total_compute_hours, validation_curves)
from hpo_slurm.config.space import Categorical, Int, Log

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

DPI = 100
LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}
NO_DATA = "no validation of {metric} reported yet"
INSTALL_HINT = "matplotlib is not installed; install the plots extra: pip install 'hpo-slurm[plots]'"


def require_matplotlib() -> None:
    """Raise a UserError with the install command when matplotlib cannot be imported."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc


def _new_figure(width: float, height: float) -> "Figure":
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _metric_label(results: Results) -> str:
    better = "lower" if results.smaller_is_better else "higher"
    return f"{results.metric} ({better} is better)"


def _use_log(values: Sequence[float], ratio: float) -> bool:
    return bool(values) and min(values) > 0 and max(values) / min(values) >= ratio


def _length_colours(results: Results) -> Dict[int, Any]:
    """Length reached -> colour: the further a trial got, the darker (viridis, yellow left out)."""
    from matplotlib import colormaps

    lengths = sorted({length_reached(t) for t in results.trials if length_reached(t)})
    cmap = colormaps["viridis"]
    if len(lengths) == 1:
        return {lengths[0]: cmap(0.3)}
    return {n: cmap(0.8 - 0.8 * i / (len(lengths) - 1)) for i, n in enumerate(lengths)}


def _length_legend(results: Results, colours: Dict[int, Any], lines: bool = True) -> List[Any]:
    from matplotlib.lines import Line2D

    counts: Dict[int, int] = {}
    for trial in results.trials:
        counts[length_reached(trial)] = counts.get(length_reached(trial), 0) + 1
    return [Line2D([], [], color=colour, lw=2 if lines else 0, marker="o", ms=4 if lines else 6,
                   label=f"reached {n} {results.unit} ({counts.get(n, 0)} trial{'s' * (counts.get(n, 0) != 1)})")
            for n, colour in sorted(colours.items())]


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _short(value: float) -> str:
    return f"{value:.4g}"


def _plain_log_axis(axis) -> None:
    """Log axis ticks written 0.01, 0.1, 1 instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def learning_curves_figure(results: Results) -> "Figure":
    """The searcher's metric against length for every trial, coloured by the length the trial
    reached; dashed vertical lines at the lengths where trials stopped (ASHA rungs, PBT rounds; none
    in a search without max_length, whose trials stop wherever their code does); the best trial drawn
    thick; a PBT child joined to its parent's checkpoint by a dotted line."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    figure = _new_figure(10, 6)
    ax = figure.add_subplot()
    curves = validation_curves(results)
    ax.set_title(f"{results.layout.name}: learning curves of {len(curves)} trials "
                 f"({results.config.searcher.name})", loc="left")
    ax.set_xlabel(f"length ({results.unit})")
    ax.set_ylabel(_metric_label(results))
    if not curves:
        _no_data(ax, NO_DATA.format(metric=results.metric))
        return figure
    colours = _length_colours(results)
    ranked = ranked_trials(results)
    best_id = ranked[0]["id"] if ranked else None
    inherited = False
    for trial_id, curve in curves.items():
        trial = results.trial(trial_id)
        colour = colours.get(length_reached(trial), "grey")
        xs, ys = [p[0] for p in curve], [p[1] for p in curve]
        start = parent_length(trial)
        parent_curve = dict(curves.get(trial["parent"], [])) if trial["parent"] else {}
        if start is not None and start in parent_curve:
            inherited = True
            ax.plot([start, xs[0]], [parent_curve[start], ys[0]], ls=":", lw=1, color=colour, alpha=0.8)
        width = 3.0 if trial_id == best_id else 1.3
        ax.plot(xs, ys, marker="o", ms=4, lw=width, color=colour, alpha=0.9, gid=f"trial-{trial_id}",
                zorder=3 if trial_id == best_id else 2)
    all_x = sorted({x for curve in curves.values() for x, _ in curve})
    all_y = [y for curve in curves.values() for _, y in curve]
    stops = sorted(colours)
    handles = _length_legend(results, colours)
    if len(stops) > 1 and not results.config.searcher.open_ended:  # open-ended trials stop anywhere
        what = "round ends" if results.config.searcher.name == "pbt" else "rung lengths"
        for n in stops:
            ax.axvline(n, color="grey", ls="--", lw=0.8, zorder=1)
        handles.append(Line2D([], [], color="grey", ls="--", lw=0.8, label=f"{what}: {', '.join(map(str, stops))}"))
    if inherited:
        handles.append(Line2D([], [], color="grey", ls=":", lw=1, label="dotted: started from a parent's checkpoint"))
    if best_id is not None:
        best = ranked[0]
        handles.append(Line2D([], [], color=colours.get(length_reached(best), "grey"), lw=3,
                              label=f"thick: best, trial {best_id}, {_short(best['best_metric'])} "
                                    f"at {best['best_length']} {results.unit}"))
    if _use_log(all_x, 8):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(stops if len(stops) > 1 else all_x))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.set_xlim(left=0)
    if _use_log(all_y, 30):
        ax.set_yscale("log")
        _plain_log_axis(ax.yaxis)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="best", fontsize=9, title="colour: length reached", title_fontsize=9)
    return figure


def best_vs_compute_figure(results: Results) -> "Figure":
    """Best value of the metric so far (a step line) against cumulative compute, every validation
    as a grey dot behind it. Compute is GPU-hours, or job hours when trials use no GPU. The legend says
    how many jobs were preempted and how many stopped at their time limit, when any were."""
    from matplotlib.ticker import FuncFormatter

    figure = _new_figure(10, 6)
    ax = figure.add_subplot()
    ax.set_title(f"{results.layout.name}: best {results.metric} so far against compute spent", loc="left")
    ax.set_xlabel(compute_label(results))
    ax.set_ylabel(_metric_label(results))
    points = best_so_far(results)
    if not points:
        _no_data(ax, NO_DATA.format(metric=results.metric))
        return figure
    hours = [p[0] for p in points]
    total = max(total_compute_hours(results), hours[-1])
    ax.scatter(hours, [p[1] for p in points], s=14, color="grey", alpha=0.5, label="each validation", zorder=2)
    xs, ys = [0.0] + hours + [total], [points[0][2]] + [p[2] for p in points] + [points[-1][2]]
    ax.step(xs[1:], ys[1:], where="post", color="tab:blue", lw=2.2, label="best so far", zorder=3, gid="best-so-far")
    preempted, timed_out = (sum(t.get(key) or 0 for t in results.trials) for key in ("preemptions", "time_limits"))
    if preempted or timed_out:  # the compute includes the work those jobs did before they stopped
        ax.plot([], [], " ", label=f"interrupted jobs: {preempted} preempted, {timed_out} at the time limit",
                gid="interruptions")
    final = points[-1]
    winner = next(p for p in points if p[2] == final[2])
    ax.annotate(f"best {_short(final[2])} (trial {winner[3]})\nafter {winner[0]:.3g} of {total:.3g} hours",
                xy=(winner[0], winner[2]), xytext=(10, 40 if results.smaller_is_better else -40),
                textcoords="offset points", arrowprops={"arrowstyle": "->", "color": "tab:blue"}, fontsize=10,
                bbox={"boxstyle": "round", "fc": "white", "ec": "tab:blue", "alpha": 0.9})
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    if _use_log([p[1] for p in points], 30):
        ax.set_yscale("log")
        _plain_log_axis(ax.yaxis)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right" if results.smaller_is_better else "lower right", fontsize=9)
    return figure


def _jittered(positions: List[float], spread: float = 0.25) -> List[float]:
    """Spread points sharing a categorical position evenly across ``±spread`` (deterministic)."""
    seen: Dict[float, int] = {}
    totals: Dict[float, int] = {}
    for p in positions:
        totals[p] = totals.get(p, 0) + 1
    out = []
    for p in positions:
        k, n = seen.get(p, 0), totals[p]
        seen[p] = k + 1
        out.append(p if n == 1 else p - spread + 2 * spread * k / (n - 1))
    return out


def hyperparameters_figure(results: Results) -> "Figure":
    """One panel per searched hyperparameter: each trial's best metric against its value, coloured by
    length reached. Categorical values on a categorical axis, log hyperparameters on a log axis."""
    from matplotlib.ticker import MaxNLocator

    leaves = searched_leaves(results.config.hyperparameters)
    scored = sorted(ranked_trials(results), key=lambda t: t["id"])  # jitter must not follow the metric
    columns = min(3, max(1, len(leaves)))
    rows = max(1, math.ceil(len(leaves) / columns))
    width = 4.2 * columns + 0.6
    figure = _new_figure(width, 3.6 * rows + 0.8)
    title = f"{results.layout.name}: best {results.metric} of each trial against each hyperparameter"
    figure.suptitle(textwrap.fill(title, int(width * 10)), x=0.01, ha="left")  # ~10 characters an inch
    if not leaves or not scored:
        _no_data(figure.add_subplot(), "no searched hyperparameters (all const)" if not leaves
                 else NO_DATA.format(metric=results.metric))
        return figure
    colours = _length_colours(results)
    best_id = ranked_trials(results)[0]["id"]
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    y_log = _use_log([t["best_metric"] for t in scored], 30)
    for index, (name, param) in enumerate(leaves):
        ax = axes[index // columns][index % columns]
        trials = [t for t in scored if leaf_value(t["hparams"], name) is not None]
        values = [leaf_value(t["hparams"], name) for t in trials]
        if isinstance(param, Categorical):
            labels = [str(v) for v in param.vals]
            xs = _jittered([float(labels.index(str(v))) if str(v) in labels else -1.0 for v in values])
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.6, len(labels) - 0.4)
            kind = "categorical"
        else:
            xs = [float(v) for v in values]
            kind = "int" if isinstance(param, Int) else "log" if isinstance(param, Log) else "double"
            if isinstance(param, Log):
                ax.set_xscale("log", base=param.base)
                _plain_log_axis(ax.xaxis)
            if isinstance(param, Int):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ys = [t["best_metric"] for t in trials]
        ax.scatter(xs, ys, c=[colours.get(length_reached(t), "grey") for t in trials], s=36,
                   edgecolors="white", linewidths=0.5, zorder=2, gid=f"hp-{name}")
        for x, t in zip(xs, trials):
            if t["id"] == best_id:
                ax.scatter([x], [t["best_metric"]], marker="*", s=220, color="red", edgecolors="black",
                           linewidths=0.6, zorder=3, label=f"best: trial {best_id}")
        ax.set_title(f"{name} ({kind})", fontsize=10)
        ax.set_xlabel(name)
        if index % columns == 0:
            ax.set_ylabel(_metric_label(results))
        if y_log:
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
        ax.grid(True, alpha=0.3)
    for index in range(len(leaves), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    handles = _length_legend(results, colours, lines=False)
    star = axes[0][0].get_legend_handles_labels()
    figure.legend(handles=handles + star[0], loc="outside lower center", ncols=min(4, len(handles) + 1),
                  fontsize=9, title="colour: length reached", title_fontsize=9)
    return figure


def _axis_position(param: Any, value: Any) -> float:
    """Where ``value`` sits on a parallel axis scaled to [0, 1] by the hyperparameter's range."""
    if isinstance(param, Categorical):
        labels = [str(v) for v in param.vals]
        return labels.index(str(value)) / (len(labels) - 1) if str(value) in labels else 0.5
    low, high = float(param.minval), float(param.maxval)
    x = math.log(float(value), param.base) if isinstance(param, Log) else float(value)
    return 0.5 if high == low else (x - low) / (high - low)


def _axis_ticks(param: Any) -> List[Tuple[float, str]]:
    if isinstance(param, Categorical):
        n = len(param.vals)
        return [(i / (n - 1), str(v)) for i, v in enumerate(param.vals)]
    if isinstance(param, Log):
        return [(0.0, _short(param.base ** param.minval)), (1.0, _short(param.base ** param.maxval))]
    return [(0.0, _short(param.minval)), (1.0, _short(param.maxval))]


def parallel_coordinates_figure(results: Results, top: Optional[int] = None) -> "Figure":
    """One vertical axis per searched hyperparameter (scaled to its search range, log where the
    hyperparameter is log) and a last axis for the metric; the ``top`` best trials (default: a quarter
    of the scored trials, 5 to 10) coloured by metric, the others in light grey behind them."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    leaves = searched_leaves(results.config.hyperparameters)
    scored = ranked_trials(results)
    figure = _new_figure(max(8.0, 1.9 * (len(leaves) + 1) + 2.5), 6)
    ax = figure.add_subplot()
    if top is None:
        top = min(10, max(5, math.ceil(len(scored) / 4)))
    shown = scored[:top]
    others = f"; grey: the other {len(scored) - len(shown)}" if len(scored) > len(shown) else ""
    ax.set_title(f"{results.layout.name}: the {len(shown)} best of {len(scored)} trials by {results.metric}"
                 f"{others}", loc="left")
    if not leaves or not scored:
        ax.set_title(f"{results.layout.name}: the best trials across the hyperparameters", loc="left")
        _no_data(ax, "no searched hyperparameters (all const)" if not leaves else NO_DATA.format(metric=results.metric))
        return figure
    metrics = [t["best_metric"] for t in scored]
    metric_log = _use_log(metrics, 30)
    scale = math.log10 if metric_log else float
    low, high = scale(min(metrics)), scale(max(metrics))
    spread = (high - low) or 1.0
    names = [name for name, _ in leaves] + [results.metric]
    best_v, worst_v = shown[0]["best_metric"], shown[-1]["best_metric"]
    truncated = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.85, 256)))  # no pale yellow
    mappable = ScalarMappable(norm=Normalize(vmin=min(best_v, worst_v), vmax=max(best_v, worst_v)),
                              cmap=truncated if results.smaller_is_better else truncated.reversed())

    def ys(trial) -> List[float]:
        return [_axis_position(p, leaf_value(trial["hparams"], n)) for n, p in leaves] + \
               [(scale(trial["best_metric"]) - low) / spread]

    xs = list(range(len(names)))
    for trial in scored[top:]:
        ax.plot(xs, ys(trial), color="lightgrey", lw=1, zorder=1, gid=f"trial-{trial['id']}")
    labelled = []
    for rank, trial in reversed(list(enumerate(shown))):
        ax.plot(xs, ys(trial), color=mappable.to_rgba(trial["best_metric"]), lw=3 if rank == 0 else 1.6, alpha=0.95,
                zorder=3 if rank == 0 else 2, gid=f"trial-{trial['id']}", marker="o", ms=3)
        if rank < 3:
            labelled.append((ys(trial)[-1], trial["id"]))
    for y, label_y, trial_id in _spread_labels(labelled, gap=0.05):
        ax.annotate(f"trial {trial_id}", xy=(xs[-1], y), xytext=(xs[-1] + 0.12, label_y), va="center", fontsize=9,
                    bbox=LABEL_BOX, zorder=4, arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.6})
    for x, (name, param) in enumerate(leaves):
        for position, label in _axis_ticks(param):
            ax.text(x - 0.04, position, label, ha="right", va="center", fontsize=8, color="dimgrey",
                    bbox=LABEL_BOX, zorder=4)
    for position, value in ((0.0, min(metrics)), (1.0, max(metrics))):
        ax.text(xs[-1] - 0.04, position, _short(value), ha="right", va="center", fontsize=8, color="dimgrey",
                bbox=LABEL_BOX, zorder=4)
    for x in xs:
        ax.axvline(x, color="black", lw=0.8, zorder=0)
    kinds = ["log" if isinstance(p, Log) else "categorical" if isinstance(p, Categorical) else "int"
             if isinstance(p, Int) else "double" for _, p in leaves]
    better = "lower" if results.smaller_is_better else "higher"
    last = f"best{', log' if metric_log else ''}, {better} is better"
    ax.set_xticks(xs, [f"{n}\n({k})" for n, k in zip(names, kinds + [last])], fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(-0.5, xs[-1] + 0.7)
    ax.set_ylim(-0.06, 1.06)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    bar = figure.colorbar(mappable, ax=ax, shrink=0.8, pad=0.01)
    bar.set_label(f"{results.metric} of the coloured trials")
    return figure


def _spread_labels(points: List[Tuple[float, int]], gap: float) -> List[Tuple[float, float, int]]:
    """(y, label y, id): label positions moved apart so no two are closer than ``gap``."""
    out: List[Tuple[float, float, int]] = []
    for y, ident in sorted(points):
        label_y = max(y, out[-1][1] + gap) if out else y
        out.append((y, label_y, ident))
    return out


FIGURES = {
    "learning_curves": learning_curves_figure,
    "best_vs_compute": best_vs_compute_figure,
    "hyperparameters": hyperparameters_figure,
    "parallel_coordinates": parallel_coordinates_figure,
}


def figures(results: Results) -> Dict[str, "Figure"]:
    """Every picture, by file stem, in reading order."""
    require_matplotlib()
    return {stem: draw(results) for stem, draw in FIGURES.items()}


def png_bytes(figure: "Figure") -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_pngs(results: Results, out_dir: Path, on_figure=None) -> List[Path]:
    """Write ``<stem>.png`` for every figure into ``out_dir`` (created) and return the paths.
    ``on_figure(stem)`` is called after each file, for progress display."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    require_matplotlib()
    paths = []
    for stem, draw in FIGURES.items():
        path = out_dir / f"{stem}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(png_bytes(draw(results)))
        tmp.replace(path)
        paths.append(path)
        if on_figure:
            on_figure(stem)
    return paths
