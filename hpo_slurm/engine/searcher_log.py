"""The searcher's durable memory: every event the driver feeds it is logged, and its snapshot is saved
from time to time; a resumed driver restores the snapshot and replays the events logged after it.

Two rules keep the log and the snapshot consistent: an event is logged in the same transaction as the
decisions it led to, and a snapshot is only taken at a committed event sequence."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, List, Tuple

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.types import Action
from hpo_slurm.experiment.store import Store
from hpo_slurm.searchers import Searcher, make_searcher, restore_searcher
from hpo_slurm.searchers.replay import feed_event

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_EVENTS = 5000  # searcher snapshots are O(search); between them, its inputs are logged
SNAPSHOT_EVERY_S = 60.0


def load_searcher(config: ExperimentConfig, store: Store) -> Tuple[Searcher, bool]:
    """The searcher as the last driver left it: its snapshot with the later logged events replayed
    (their actions were already applied). Also whether the search is new (no event yet). A UserError
    when the config no longer describes the search the snapshot is of (another searcher or sampler)."""
    snapshot = store.load_snapshot()
    try:
        searcher = restore_searcher(config, snapshot) if snapshot else make_searcher(config)
    except ValueError as exc:  # the experiment's config.yaml was edited into another search
        raise UserError(f"{config.source}: {exc}") from exc
    events = store.searcher_events(after=store.snapshot_event_seq())
    for event in events:
        feed_event(searcher, event["kind"], json.loads(event["args"]))
    return searcher, snapshot is None and not events


class SearcherLog:
    """Feeds the searcher, numbering and recording each event for the store, and decides when to save
    a snapshot. ``clock`` is the driver's clock."""

    def __init__(self, searcher: Searcher, store: Store, clock: Callable[[], float]):
        self.searcher = searcher
        self.clock = clock
        self.seq = store.last_searcher_event()
        self.persisted_seq = self.seq  # the events durable in the store
        self.snapshot_seq = store.snapshot_event_seq()
        self.snapshot_at = clock()

    def feed(self, kind: str, args: Tuple[Any, ...], logged: List[Dict[str, Any]]) -> List[Action]:
        """Give the searcher one event and append its log row to ``logged`` (written with the tick)."""
        self.seq += 1
        logged.append({"seq": self.seq, "kind": kind, "args": json.dumps(args)})
        return feed_event(self.searcher, kind, args)

    def save_if_due(self, store: Store, trials: int, running: bool) -> None:
        """Inside the tick's transaction: save a snapshot when ``snapshot_due`` says so."""
        if snapshot_due(self.seq - self.snapshot_seq, trials, running, self.clock() - self.snapshot_at):
            store.save_snapshot(self.searcher.snapshot(), self.clock(), self.seq)
            self.snapshot_seq, self.snapshot_at = self.seq, self.clock()

    def committed(self) -> None:
        """The tick's transaction committed: every event fed so far is durable."""
        self.persisted_seq = self.seq

    def save_now(self, store: Store) -> None:
        """Snapshot the searcher now (a driver that is about to exit calls this). Only when every event
        it has seen is durable: a driver interrupted between an event and its commit leaves the
        snapshot as it was, and a resume replays the logged events instead."""
        if self.seq != self.persisted_seq:
            log.info("searcher snapshot skipped: the driver stopped before its last decisions were saved")
            return
        if self.seq > self.snapshot_seq:
            with store.transaction():
                store.save_snapshot(self.searcher.snapshot(), self.clock(), self.seq)
            self.snapshot_seq = self.seq


def snapshot_due(behind: int, trials: int, running: bool, seconds_since_snapshot: float) -> bool:
    """Whether the searcher should be snapshotted now, ``behind`` logged events after its last snapshot.
    A snapshot costs O(trials): at least twice that many events go between two, so snapshots cost O(1)
    per event instead of O(trials) (quadratic in a 100k-trial search); a resume replays at most
    max(SNAPSHOT_EVERY_EVENTS, 2 x trials) events. An old snapshot waits for trials / 4 events. A search
    that is no longer running is snapshotted at once."""
    if behind <= 0:
        return False
    if not running:
        return True
    return behind >= max(SNAPSHOT_EVERY_EVENTS, 2 * trials) or (
        seconds_since_snapshot >= SNAPSHOT_EVERY_S and behind >= trials // 4)
