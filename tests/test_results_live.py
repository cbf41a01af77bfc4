"""Terminal output: colours follow state on a terminal and vanish when piped; `status --watch` redraws
in place on a terminal and prints a plain record otherwise; progress bars only on a terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from hpo_slurm.experiment import folder as experiment
from hpo_slurm.reporting import live, views
from hpo_slurm.config.schema import load_config
from results_helpers import invoke

ANSI = re.compile(r"\x1b\[")
CONFIG = Path(__file__).resolve().parent.parent / "examples" / "quadratic" / "adaptive.yaml"


@pytest.fixture
def created(tmp_path):
    """A freshly created experiment (no driver has run): (root, layout)."""
    return tmp_path, experiment.create(load_config(str(CONFIG)), CONFIG, tmp_path, "fresh", "local")


def trial(trial_id: int, state: str, restarts: int = 0, preemptions: int = 0, time_limits: int = 0):
    return {"id": trial_id, "state": state, "hparams": {"optimizer": {"lr": 0.01}, "layers": 3},
            "parent": None, "length_done": 4, "target_length": 16, "latest_metric": 0.5, "best_metric": 0.4,
            "restarts": restarts, "preemptions": preemptions, "time_limits": time_limits, "checkpoint_bytes": 0,
            "message": None,
            "runs": [{"run_id": f"t{trial_id}-r1", "job_id": "123", "from_length": 0, "to_length": 16,
                      "state": "RUNNING", "reason": None}]}


STATES = {"RUNNING": "36", "PAUSED": "33", "COMPLETED": "32", "ERRORED": "31"}  # cyan, yellow, green, red


def render(renderable, terminal: bool, width: int = 160) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system="standard" if terminal else None)
    console.print(renderable)
    return buffer.getvalue()


def test_state_colours_on_a_terminal_and_none_when_piped():
    table = views.trials_table([trial(i, state) for i, state in enumerate(STATES, 1)])
    coloured = render(table, terminal=True)
    for state, code in STATES.items():
        assert re.search(rf"\x1b\[{code}m{state}", coloured), state
    plain = render(table, terminal=False)
    assert not ANSI.search(plain)
    assert all(state in plain for state in STATES)


def test_narrow_tables_never_cut_states_or_numbers():
    trials = [trial(1, "STOPPED_EARLY", restarts=2), trial(2, "RUNNING")]
    text = render(views.trials_table(trials, width=80), terminal=False, width=80)
    assert "STOPPED_EARLY" in text and "0.4" in text and "2/0/0" in text and "rst/pre" in text and "/lim" in text
    assert "optimizer.lr=0.01" in text and "layers=3" in text  # one per line, not folded mid-word
    assert max(len(line) for line in text.splitlines()) <= 80


def test_the_trials_table_counts_preemptions_and_time_limits_apart():
    wide = render(views.trials_table([trial(1, "COMPLETED", preemptions=3, time_limits=2)], width=200), False, 200)
    header, row = [line for line in wide.splitlines() if "restarts" in line or "COMPLETED" in line][:2]
    cells = {name: row[header.index(name):].split()[0] for name in ("restarts", "preempt", "time lim")}
    assert cells == {"restarts": "0", "preempt": "3", "time lim": "2"}
    narrow = render(views.trials_table([trial(1, "COMPLETED", preemptions=3, time_limits=2)], width=80), False, 80)
    assert "rst/pre" in narrow and "/lim" in narrow and "0/3/2" in narrow


def test_status_when_piped_has_no_ansi_codes(created):
    root, layout = created
    for args in (["status", "--root", str(root)], ["status", "fresh", "--root", str(root)]):
        done = invoke(*args)
        assert done.exit_code == 0, done.output
        assert "fresh" in done.stdout and not ANSI.search(done.stdout)


def test_watch_when_piped_prints_a_plain_record_each_interval(created):
    _, layout = created
    buffer = io.StringIO()
    live.watch_status(layout, console=Console(file=buffer, width=120), interval=0.01, iterations=3)
    text = buffer.getvalue()
    assert not ANSI.search(text)
    assert len(re.findall(r"^--- \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ---$", text, re.M)) == 3
    assert text.count("╭─ fresh") == 3


def test_watch_on_a_terminal_redraws_in_place(created):
    _, layout = created
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, height=40, force_terminal=True, color_system="standard")
    live.watch_status(layout, console=console, interval=0.01, iterations=3)
    text = buffer.getvalue()
    assert "\x1b[?1049h" not in text  # no alternate screen: the view stays in the scrollback
    assert "\x1b[2J" not in text  # never clears the screen (the flicker)
    assert text.count("\x1b[1A") >= 2 * 10  # moves the cursor up over the previous frame instead
    assert text.count("╭─ fresh") >= 3  # first frame, two refreshes (and the final one on exit)


def test_progress_bars_only_on_a_terminal():
    buffer = io.StringIO()
    with live.progress("copying", unit="bytes", console=Console(file=buffer)) as update:
        update(10, 100)
        update(100)
    assert buffer.getvalue() == ""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with live.progress("drawing", console=console) as update:
        for done in range(1, 5):
            update(done, 4)
        console.file.flush()
    assert "drawing" in buffer.getvalue()
