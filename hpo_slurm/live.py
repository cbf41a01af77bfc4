"""Live views: the driver's own view during ``launch`` and ``status --watch``."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live

from .driver import Driver
from .layout import ExperimentLayout
from .runner import run_driver
from .status import summarize
from .views import print_summary, summary_panel, trials_table

REFRESH_S = 1.0
VISIBLE_TRIALS = 15


def _renderable(layout: ExperimentLayout) -> Group:
    summary = summarize(layout)
    return Group(summary_panel(summary), trials_table(summary["trials"], limit=VISIBLE_TRIALS))


def drive_with_view(layout: ExperimentLayout) -> Driver:
    """Run the driver in the foreground; on a terminal, refresh a live view once a second."""
    console = Console(stderr=True)
    if not console.is_terminal:
        driver = run_driver(layout)
        print_summary(summarize(layout), Console())
        return driver
    last = [0.0]
    with Live(console=console, auto_refresh=False, transient=False) as live:

        def refresh(driver: Driver) -> None:
            now = time.monotonic()
            if now - last[0] >= REFRESH_S:
                last[0] = now
                live.update(_renderable(layout), refresh=True)

        driver = run_driver(layout, on_tick=refresh)
        live.update(_renderable(layout), refresh=True)
    return driver


def watch_status(layout: ExperimentLayout) -> None:
    """Refresh the summary in place until Ctrl-C."""
    console = Console()
    try:
        with Live(_renderable(layout), console=console, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(REFRESH_S)
                live.update(_renderable(layout), refresh=True)
    except KeyboardInterrupt:
        pass
