"""``hpo-slurm preview``'s output: a search's plan (``searchers.preview.build_plan``) as tables."""

from __future__ import annotations

from typing import Any, Dict

from rich.console import Console
from rich.table import Table


def render_plan(plan: Dict[str, Any]) -> None:
    """Print ``plan`` as rich tables on stdout; a plan without lengths (``open_ended``) as one line."""
    console = Console()
    unit = plan["unit"]
    trials = plan["total_trials"]
    if plan.get("open_ended"):
        console.print(f"[bold]{plan['searcher']}[/bold]: {trials} trial{'' if trials == 1 else 's'}, each "
                      f"trains until its code stops (no searcher.max_length), so there is no total length "
                      f"or GPU-hour estimate; lengths are counted in {unit}")
        return
    console.print(
        f"[bold]{plan['searcher']}[/bold]: {trials} trial{'' if trials == 1 else 's'}, "
        f"{plan['total_length']:,} {unit} of training in total"
    )
    if plan.get("brackets"):
        table = Table(title="Brackets")
        for column in ("Bracket", "Rungs", f"Rung lengths ({unit})", "Trials", "Max concurrent"):
            table.add_column(column, justify="right")
        for index, bracket in enumerate(plan["brackets"], start=1):
            table.add_row(
                str(index),
                str(bracket["num_rungs"]),
                ", ".join(str(length) for length in bracket["rung_lengths"]),
                str(bracket["max_trials"]),
                str(bracket["max_concurrent_trials"]),
            )
        console.print(table)
    inherited = any(row["trained"] != row["length"] * row["trials"] for row in plan["plan"])
    table = Table(title="Where trials stop")
    for column in (f"Length ({unit})", "Trials", f"Trained ({unit})"):
        table.add_column(column, justify="right")
    for row in plan["plan"]:
        table.add_row(f"{row['length']:,}", str(row["trials"]), f"{row['trained']:,}")
    table.add_row("total", str(trials), f"{plan['total_length']:,}", style="bold")
    console.print(table)
    if inherited:
        console.print(f"Trials that start from another trial's checkpoint train only the {unit} past it, "
                      "so Trained is less than Length × Trials.")
    if "gpu_hours" not in plan:
        return
    gpus = plan["gpus_per_trial"]
    job_hours = plan["job_hours"]
    if gpus:
        console.print(f"Estimated [bold]{plan['gpu_hours']:,.2f} GPU-hours[/bold] "
                      f"({gpus} GPU{'s' if gpus > 1 else ''} per trial × {job_hours:,.2f} job hours)")
    else:
        console.print(f"Estimated [bold]{job_hours:,.2f} job hours[/bold] (slots_per_trial 0: no GPUs)")
