"""Draining a searcher's actions: the one loop every caller of a searcher runs (the driver, preview's
simulation, a sweep's plan, the tests)."""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Iterable, Optional

from hpo_slurm.core.types import Action


def drain(actions: Iterable[Action], handle: Callable[[Action], Optional[Iterable[Action]]]) -> None:
    """Handle ``actions`` in order. ``handle(action)`` returns the actions the searcher answered with
    when told about it (``on_created`` after a Create, ``on_closed`` after a Close), or None; they are
    handled after every action already waiting, so the order is the searcher's own order."""
    queue: Deque[Action] = deque(actions)
    while queue:
        answer = handle(queue.popleft())
        if answer:
            queue.extend(answer)
