"""A trial's output: submitit keeps each run's stdout and stderr in the run's folder.

``hpo-slurm logs NAME TRIAL`` prints every run's files, each after a ``==> run ... <==`` header.
With ``--follow`` it then keeps printing, like ``tail -f`` over the whole trial: new output of every
run's files (a header again whenever the file being printed changes, so each line stands under the
file it came from), the runs the trial gets later (ASHA promotions, PBT rounds, restarts) as soon as
their files appear, and it exits 0 once the trial has ended and its last output is printed. Files are
polled every ``POLL_S``; the database (new runs, trial and experiment state) is read at most every
``REFRESH_S``, with a short read-only connection as ``status`` does.
"""

from __future__ import annotations

import codecs
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, TextIO, Tuple

from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.experiment.lock import driver_alive
from hpo_slurm.experiment.rows import RunRow, TrialRow
from hpo_slurm.experiment.store import Store
from hpo_slurm.core.types import TrialState, awaits_submission, run_may_be_out

POLL_S = 0.5  # how often the followed files are checked for new output
REFRESH_S = 1.0  # how often the database is read for new runs and the trial's state
SWEEP_REFRESH_S = 10.0  # how often a sweep's tasks are polled in Slurm (no driver does it)
PARTIAL_HOLD_S = 1.0  # an unfinished last line (a progress bar) is printed after waiting this long
JOB_ID_WAIT_S = 5.0  # a run's files can appear just before the driver records its job id


def run_log_files(layout: ExperimentLayout, run_id: str) -> List[Path]:
    run_dir = layout.run_dir(run_id)
    if not run_dir.is_dir():
        return []
    return sorted(run_dir.glob("*_log.out")) + sorted(run_dir.glob("*_log.err"))


def print_trial_logs(layout: ExperimentLayout, trial_id: int, follow: bool,
                     refresh: Optional[Callable[[], None]] = None) -> None:
    """Print the trial's output run by run; with ``follow``, keep printing until the trial ends.
    ``refresh`` brings the store up to date for an experiment no driver watches (a sweep: one
    Slurm poll); it is called every SWEEP_REFRESH_S while following."""
    snapshot = _read(layout, trial_id)
    if snapshot is None or (not snapshot.runs and not follow):
        raise UserError(f"{layout.name}: no trial {trial_id} (or it has not run yet)")
    printer = _Printer(layout, sys.stdout)
    try:
        if follow:
            try:
                _follow(layout, trial_id, snapshot, printer, refresh)
            except KeyboardInterrupt:
                pass  # Ctrl-C ends following quietly
        else:
            printer.runs = snapshot.runs
            printer.scan(force_headers=True, final=True)
    except BrokenPipeError:  # `hpo-slurm logs ... -f | head`: the reader is gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush does not complain
        os.close(devnull)


# ---- reading the database ------------------------------------------------------------------------
class _Snapshot:
    """What following needs from the database, read in one consistent snapshot."""

    def __init__(self, experiment_state: str, trial: TrialRow, runs: List[RunRow]):
        self.experiment_state = experiment_state
        self.trial = trial
        self.runs = runs

    def live_runs(self) -> List[RunRow]:
        """Runs whose job may still be out: submitted, running, or cancelled and not yet seen to end."""
        return [r for r in self.runs if run_may_be_out(r)]

    def waits_for_resubmit(self) -> bool:
        """A sweep's trial whose failed task left a retry run that no job runs yet (and none will
        until ``sweep --resubmit``)."""
        unsubmitted = any(awaits_submission(r) for r in self.runs)
        return unsubmitted and not any(r["job_id"] for r in self.live_runs())

    def trial_over(self, layout: ExperimentLayout) -> bool:
        """The trial gets no more runs (its state is terminal, or the search is no longer running) and
        none of its runs can write any more (none is live, or no driver is left to see them end)."""
        ended = TrialState(self.trial["state"]).terminal or self.experiment_state != "RUNNING"
        if not ended:
            return False
        return not self.live_runs() or not driver_alive(layout.lock)["alive"]


def _read(layout: ExperimentLayout, trial_id: int) -> Optional[_Snapshot]:
    """The experiment's state, the trial and its runs; None when there is no such trial."""
    with Store.reading(layout.database) as store, store.snapshot_read():
        experiment_state = store.experiment_state()
        trial = store.trial(trial_id)
        runs = store.runs(trial_id)
    if trial is None:
        return None
    return _Snapshot(experiment_state or "RUNNING", trial, runs)


# ---- printing --------------------------------------------------------------------------------------
class _File:
    """How far one log file has been read, and the text read but not printed yet (an unfinished line)."""

    def __init__(self) -> None:
        self.offset = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.pending_since = 0.0


class _Printer:
    """Prints the runs' log files to ``out``, each piece after the header of the file it comes from."""

    def __init__(self, layout: ExperimentLayout, out: TextIO):
        self.layout = layout
        self.out = out
        self.runs: List[Dict[str, Any]] = []  # the trial's runs in order, as last read from the database
        self.files: Dict[Path, _File] = {}
        self.announced: Set[str] = set()  # runs whose header has been printed
        self.retired: Set[str] = set()  # ended runs whose files have been read to the end
        self.first_seen: Dict[str, float] = {}  # when a run's files were first seen without a job id
        self.current: Optional[Tuple[str, Path]] = None  # the file whose header was printed last
        self.at_line_start = True
        self.wants_refresh = False  # a run has files but no job id yet: read the database again soon

    def scan(self, force_headers: bool = False, final: bool = False) -> None:
        """Print what the runs' files gained since the last scan. ``force_headers`` prints the header
        of every file, even an empty one (the first listing); ``final`` prints unfinished lines too."""
        now = time.monotonic()
        for run in self.runs:
            if run["id"] in self.retired:
                continue
            paths = run_log_files(self.layout, run["id"])
            if not paths:
                continue
            if not run["job_id"] and not final:
                # The job has started but the driver has not recorded its id yet: wait a moment for it
                # (it goes in the header), but not forever.
                self.wants_refresh = True
                if now - self.first_seen.setdefault(run["id"], now) < JOB_ID_WAIT_S:
                    continue
            for path in paths:
                if force_headers:
                    self._switch(run, path)
                text = self._take(path, now, final)
                if text:
                    self._switch(run, path)
                    self._write(text)
            if run["id"] not in self.announced:  # a new run without output yet: show that it started
                self._switch(run, paths[0])
        self.out.flush()

    def retire_ended(self, live: List[Dict[str, Any]]) -> None:
        """Read the files of runs that have ended to their end, then stop polling them."""
        live_ids = {r["id"] for r in live}
        ended = [r for r in self.runs if r["id"] not in live_ids and r["id"] not in self.retired]
        if not ended:
            return
        now = time.monotonic()
        for run in ended:
            paths = run_log_files(self.layout, run["id"])
            for path in paths:
                text = self._take(path, now, final=True)
                if text:
                    self._switch(run, path)
                    self._write(text)
            if paths and run["id"] not in self.announced:
                self._switch(run, paths[0])
            self.retired.add(run["id"])
        self.out.flush()

    def _take(self, path: Path, now: float, final: bool) -> str:
        """New text of ``path`` that is ready to print: whole lines, or everything when ``final`` or
        when an unfinished line has waited PARTIAL_HOLD_S."""
        state = self.files.setdefault(path, _File())
        try:
            size = path.stat().st_size
        except OSError:
            size = state.offset
        if size < state.offset:  # truncated or replaced: start again from its beginning
            state.offset, state.pending = 0, ""
            state.decoder.reset()
        if size > state.offset:
            try:
                with open(path, "rb") as handle:
                    handle.seek(state.offset)
                    data = handle.read(size - state.offset)  # to the size seen: a whole scan is one snapshot
            except OSError:
                data = b""
            state.offset += len(data)
            if data:
                if not state.pending:
                    state.pending_since = now
                state.pending += state.decoder.decode(data)
        if final:
            text = state.pending + state.decoder.decode(b"", final=True)
            state.pending = ""
            return text
        cut = max(state.pending.rfind("\n"), state.pending.rfind("\r")) + 1
        if cut < len(state.pending) and now - state.pending_since >= PARTIAL_HOLD_S:
            cut = len(state.pending)  # an unfinished line that has waited long enough (a progress bar)
        text, state.pending = state.pending[:cut], state.pending[cut:]
        if text and state.pending:
            state.pending_since = now
        return text

    def _switch(self, run: Dict[str, Any], path: Path) -> None:
        """Print ``path``'s header unless it is the file printed last."""
        key = (run["id"], path)
        if key == self.current:
            return
        if not self.at_line_start:
            self.out.write("\n")
        self.out.write(f"==> run {run['id']} (job {run['job_id']}) {path.name} <==\n")
        self.current = key
        self.at_line_start = True
        self.announced.add(run["id"])

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.at_line_start = text.endswith("\n")


def _follow(layout: ExperimentLayout, trial_id: int, snapshot: _Snapshot, printer: _Printer,
            refresh: Optional[Callable[[], None]]) -> None:
    """Print everything so far, then follow the trial's runs until the trial has ended. A sweep has no
    driver to record its tasks' ends: it is refreshed from Slurm (as ``status`` does) every
    SWEEP_REFRESH_S."""
    sweep = refresh is not None
    printer.runs = snapshot.runs
    if snapshot.trial_over(layout):
        printer.scan(force_headers=True, final=True)
        return
    printer.scan(force_headers=True)
    next_refresh = time.monotonic() + REFRESH_S
    next_sweep_refresh = time.monotonic()
    while True:
        time.sleep(POLL_S)
        if printer.wants_refresh or time.monotonic() >= next_refresh:
            printer.wants_refresh = False
            next_refresh = time.monotonic() + REFRESH_S
            if sweep and time.monotonic() >= next_sweep_refresh:
                refresh()
                next_sweep_refresh = time.monotonic() + SWEEP_REFRESH_S
            try:
                fresh = _read(layout, trial_id)
            except UserError:
                fresh = None  # a busy or briefly unreadable database: try again at the next refresh
            if fresh is not None:
                snapshot = fresh
                printer.runs = snapshot.runs
                if snapshot.trial_over(layout):
                    printer.scan(final=True)  # the last output, unfinished lines included
                    return
                if sweep and snapshot.waits_for_resubmit():
                    printer.scan(final=True)
                    print(f"trial {trial_id}: its retry waits for `hpo-slurm sweep --resubmit {layout.name}`",
                          file=sys.stderr, flush=True)
                    return
                printer.retire_ended(snapshot.live_runs())
        printer.scan()
