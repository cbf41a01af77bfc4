"""Metrics as TensorBoard event files, one folder per trial, written without TensorFlow or protobuf.

``export(results, out_dir)`` writes ``out_dir/trial-<id>/events.out.tfevents.0.hpo-slurm`` holding a
scalar per reported metric (tag ``<kind>/<name>``, e.g. ``validation/validation_loss``, step = the
trial's length, wall time = when the trial reported it). The file name is fixed, so exporting again
replaces the file instead of adding a duplicate run. View with ``tensorboard --logdir out_dir``.

The format is TFRecord framing (length, masked CRC-32C of the length, payload, masked CRC-32C of the
payload) around ``tensorflow.Event`` protocol buffers, encoded here by hand: Event{1: wall_time double,
2: step int64, 3: file_version string, 5: summary}; Summary{1: repeated Value}; Value{1: tag string,
2: simple_value float}.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from hpo_slurm.reporting.results import Results, finite

EVENT_FILE = "events.out.tfevents.0.hpo-slurm"
Scalar = Tuple[float, int, str, float]  # wall time, step, tag, value


def _crc32c_table() -> Tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord framing uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int = 0, file_version: str = "", scalars: Iterable[Tuple[str, float]] = ()) -> bytes:
    """One serialized ``tensorflow.Event``."""
    body = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version:
        body += _bytes_field(3, file_version.encode())
    values = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value))
        for tag, value in scalars
    )
    if values:
        body += _bytes_field(5, values)
    return body


def record(payload: bytes) -> bytes:
    """``payload`` in TFRecord framing."""
    header = struct.pack("<Q", len(payload))
    return header + _masked_crc(header) + payload + _masked_crc(payload)


def trial_scalars(results: Results) -> Dict[int, List[Scalar]]:
    """Trial id -> its finite numeric metrics as (wall time, length, tag, value), in report order."""
    out: Dict[int, List[Scalar]] = {t["id"]: [] for t in results.trials}
    for row in results.metrics:
        for name, value in row["metrics"].items():
            if finite(value):
                out.setdefault(row["trial_id"], []).append((row["time"], row["length"], f"{row['kind']}/{name}", float(value)))
    return out


def write_event_file(path: Path, scalars: List[Scalar], start_time: float) -> None:
    """Write one event file (published by rename, so a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(record(event(start_time, file_version="brain.Event:2")))
        for wall_time, step, tag, value in scalars:
            handle.write(record(event(wall_time, step, scalars=[(tag, value)])))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def export(results: Results, out_dir: Path, on_trial=None) -> List[Path]:
    """One event file per trial under ``out_dir``; returns the files. ``on_trial(trial_id)`` is called
    after each, for progress display."""
    paths = []
    created = {t["id"]: t["created_at"] for t in results.trials}
    for trial_id, scalars in sorted(trial_scalars(results).items()):
        start = created.get(trial_id) or (scalars[0][0] if scalars else results.read_at)
        path = Path(out_dir) / f"trial-{trial_id}" / EVENT_FILE
        write_event_file(path, scalars, start)
        paths.append(path)
        if on_trial:
            on_trial(trial_id)
    return paths
