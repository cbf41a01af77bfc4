"""A small deterministic random generator whose whole state is one JSON-able integer.

Searchers keep it in their snapshot, so restore -> snapshot is byte-identical and the same seed
with the same events gives the same actions on every platform and Python version.
"""

from __future__ import annotations

import math
from typing import List, Sequence, TypeVar

T = TypeVar("T")
_MASK = (1 << 64) - 1


class Rng:
    """SplitMix64. ``state`` is the only field; ``Rng(rng.state)`` continues the same stream."""

    __slots__ = ("state",)

    def __init__(self, seed: int = 0):
        self.state = seed & _MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def random(self) -> float:
        """Uniform in [0, 1)."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def randint(self, low: int, high: int) -> int:
        """Uniform integer in [low, high], both inclusive."""
        span = high - low + 1
        return low + self.next_u64() % span

    def choice(self, items: Sequence[T]) -> T:
        return items[self.randint(0, len(items) - 1)]

    def shuffle(self, items: List[T]) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.randint(0, i)
            items[i], items[j] = items[j], items[i]

    def gauss(self) -> float:
        """Standard normal (Box-Muller)."""
        u1 = 1.0 - self.random()
        u2 = self.random()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def trial_seed_for(experiment_seed: int, trial_id: int) -> int:
    """The seed of trial ``trial_id`` of an experiment seeded ``experiment_seed``: a 31-bit integer (what
    torch, numpy and random all take), the same on every platform."""
    return Rng((experiment_seed << 32) ^ trial_id).next_u64() >> 33
