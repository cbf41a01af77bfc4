"""Spearman's rank correlation, which the benchmark objectives are characterised by."""

from __future__ import annotations

from typing import List, Sequence


def ranks(values: Sequence[float]) -> List[float]:
    """0-based ranks (ties in input order)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0.0] * len(values)
    for rank, index in enumerate(order):
        result[index] = float(rank)
    return result


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Rank correlation of ``xs`` and ``ys`` (same length, at least two values)."""
    rx, ry = ranks(xs), ranks(ys)
    mean = (len(xs) - 1) / 2.0
    return sum((a - mean) * (b - mean) for a, b in zip(rx, ry)) / sum((a - mean) ** 2 for a in rx)
