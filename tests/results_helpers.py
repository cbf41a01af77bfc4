"""Helpers for the tests of the results commands (plot, report, best, export, tensorboard): a real
search launched once per test module, and small readers for the files the commands write."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator, Tuple

from click.testing import CliRunner

from driver_helpers import cli, copy_example
from hpo_slurm.cli import cli as hpo_cli


def launch_example(tmp: Path, config: str) -> Tuple[Path, str]:
    """Run ``examples/quadratic/<config>.yaml`` to the end on the local executor under ``tmp``;
    returns (root, experiment name)."""
    example = copy_example("quadratic", tmp)
    root = tmp / "runs"
    done = cli("launch", str(example / f"{config}.yaml"), "--root", str(root), "--executor", "local", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (experiment,) = [p for p in root.iterdir() if (p / "experiment.db").is_file()]
    return root, experiment.name


def invoke(*args: str, env=None):
    """``hpo-slurm ARGS`` in this process (stdout and stderr kept apart, output is not a terminal)."""
    return CliRunner().invoke(hpo_cli, list(args), env=env, catch_exceptions=False)


def png_size(path_or_bytes) -> Tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; asserts the PNG signature."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def tfrecords(path: Path) -> Iterator[bytes]:
    """Payloads of a TFRecord file, checking both CRCs of every record."""
    from hpo_slurm.reporting.tensorboard_export import _masked_crc

    data = Path(path).read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        assert data[offset + 8:offset + 12] == _masked_crc(header)
        payload = data[offset + 12:offset + 12 + length]
        assert data[offset + 12 + length:offset + 16 + length] == _masked_crc(payload)
        yield payload
        offset += 16 + length
