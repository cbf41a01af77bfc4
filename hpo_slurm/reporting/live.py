"""Live views and progress bars: the driver's view during ``launch``, ``status --watch``, and the
progress of long operations. On a terminal they redraw in place (rich Live, no alternate screen, no
background refresh thread); when output is not a terminal they print plain text, without ANSI codes."""

from __future__ import annotations

import contextlib
import datetime
import time
from typing import Any, Callable, Iterator, Optional

from rich.console import Console, Group
from rich.live import Live

from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.reporting.status import TrialsWanted, summarize
from hpo_slurm.reporting.views import output_console, print_summary, summary_head, trials_table

REFRESH_S = 1.0
VISIBLE_TRIALS = 15
ProgressCallback = Callable[[float, Optional[float]], None]


def _renderable(layout: ExperimentLayout, width: Optional[int] = None) -> Group:
    """One frame: ``summary_head`` (the summary panel, the pool's workers), then the latest trials."""
    summary = summarize(layout, trials=VISIBLE_TRIALS)
    return Group(*summary_head(summary, width),
                 trials_table(summary["trials"], limit=VISIBLE_TRIALS, width=width, one_line=True))


@contextlib.contextmanager
def live_view(layout: ExperimentLayout) -> Iterator[Optional[Callable[[Any], None]]]:
    """The view of a search whose driver runs in the foreground for as long as the block runs. Yields
    the callback the driver calls after each tick: on a terminal it redraws the view at most once a
    second; when stderr is not a terminal it is None and the summary is printed once, at the end."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        print_summary(summarize(layout), output_console())
        return
    last = [0.0]
    with Live(console=console, auto_refresh=False, transient=False, screen=False) as live:

        def refresh(driver: Any) -> None:
            now = time.monotonic()
            if now - last[0] >= REFRESH_S:
                last[0] = now
                live.update(_renderable(layout, console.width), refresh=True)

        yield refresh
        live.update(_renderable(layout, console.width), refresh=True)


def watch_status(layout: ExperimentLayout, console: Optional[Console] = None, interval: float = REFRESH_S,
                 iterations: Optional[int] = None, trials: "TrialsWanted" = None) -> None:
    """Show the experiment's summary every ``interval`` seconds until Ctrl-C (or ``iterations``
    times). On a terminal the view (summary and the latest VISIBLE_TRIALS trials) is redrawn in
    place; otherwise each refresh is printed after a timestamp line, so a log or a pipe gets a plain
    record: the summary, and the trials ``trials`` asks for (``status.summarize``)."""
    console = console or output_console()
    count = 0
    try:
        if console.is_terminal:
            with Live(_renderable(layout, console.width), console=console, auto_refresh=False, screen=False,
                      transient=False) as live:
                while iterations is None or count + 1 < iterations:
                    time.sleep(interval)
                    live.update(_renderable(layout, console.width), refresh=True)
                    count += 1
            return
        while iterations is None or count < iterations:
            if count:
                time.sleep(interval)
            console.print(f"--- {datetime.datetime.now():%Y-%m-%d %H:%M:%S} ---")
            print_summary(summarize(layout, trials=trials), console)
            console.file.flush()  # a pipe is block-buffered: each record must reach `tail -f` whole
            count += 1
    except KeyboardInterrupt:
        pass


@contextlib.contextmanager
def progress(description: str, unit: str = "items", console: Optional[Console] = None) -> Iterator[ProgressCallback]:
    """Yield ``update(completed, total=None)`` for a long operation counted in ``unit`` ("items" or
    "bytes"). On a terminal (stderr) it drives a transient rich progress bar that disappears when the
    block ends; otherwise it does nothing, so scripts and logs stay clean. This is the callback
    ``experiment.create(progress=...)`` takes."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield lambda completed, total=None: None
        return
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    counter = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(TextColumn("{task.description}"), BarColumn(), counter, TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(completed: float, total: Optional[float] = None) -> None:
            bar.update(task, completed=completed, **({"total": total} if total is not None else {}))

        yield update
