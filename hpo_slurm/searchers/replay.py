"""Searcher events as the driver logs them, and their replay: a resumed driver feeds the events logged
after the last snapshot back to the restored searcher, which then makes the same decisions again."""

from __future__ import annotations

from typing import Any, Iterable, List

from hpo_slurm.core.types import Action, ExitReason
from hpo_slurm.searchers.wrapper import Searcher

EVENT_KINDS = ("initial", "created", "validation", "early_exit", "closed")


def feed_event(searcher: Searcher, kind: str, args: Iterable[Any]) -> List[Action]:
    """Deliver one logged event (``kind`` one of EVENT_KINDS, ``args`` as logged, JSON-decoded) to the
    searcher and return its actions. Raises ValueError for an unknown kind."""
    args = list(args)
    if kind == "initial":
        return searcher.initial()
    if kind == "created":
        return searcher.on_created(*args)
    if kind == "validation":
        return searcher.on_validation(*args)
    if kind == "early_exit":
        return searcher.on_early_exit(args[0], ExitReason(args[1]))
    if kind == "closed":
        return searcher.on_closed(*args)
    raise ValueError(f"unknown searcher event {kind!r}")
