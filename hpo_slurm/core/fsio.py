"""Small file operations that stay correct on shared filesystems: publish by rename, append whole lines."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` so readers see the old file or the whole new one. ``durable``
    also syncs it to disk first, for anything a job or a later driver reads (specs, results, manifests);
    only files that are rewritten if lost skip that cost. Encodes with the C encoder in one call
    (``json.dump`` to a file runs the pure-Python one)."""
    write_bytes_atomic(path, json.dumps(data, sort_keys=True).encode("utf-8"), durable)


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Publish ``data`` at ``path`` by rename (readers never see a partial file); ``durable`` syncs
    it to disk before the rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def append_line(path: Path, line: str) -> None:
    """Append one line. If an earlier writer died mid-line, start on a fresh line so only that torn
    line is lost, never this one."""
    path = Path(path)
    data = line.encode("utf-8") + b"\n"
    with open(path, "ab+") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
