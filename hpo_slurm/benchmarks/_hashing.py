"""Deterministic pseudo-random numbers keyed by a configuration, stable across processes and
platforms (no Python ``hash``), so an objective gives the same answer for the same input."""

from __future__ import annotations

import hashlib
import math
import struct
from typing import List, Sequence

_SCALE = 1.0 / (1 << 53)


def hash_uniforms(tag: str, values: Sequence[float], count: int) -> List[float]:
    """``count`` numbers uniform in (0, 1), a function of ``tag`` and ``values`` only."""
    key = tag.encode() + struct.pack(f"<{len(values)}d", *values)
    digest = hashlib.blake2b(key, digest_size=8 * count).digest()
    return [((word >> 11) + 0.5) * _SCALE for word in struct.unpack(f"<{count}Q", digest)]


def hash_normals(tag: str, values: Sequence[float], count: int) -> List[float]:
    """``count`` independent standard normal numbers (Box-Muller), a function of the inputs only."""
    uniforms = hash_uniforms(tag, values, 2 * ((count + 1) // 2))
    normals = []
    for i in range(0, len(uniforms), 2):
        radius = math.sqrt(-2.0 * math.log(uniforms[i]))
        angle = 2.0 * math.pi * uniforms[i + 1]
        normals += [radius * math.cos(angle), radius * math.sin(angle)]
    return normals[:count]
