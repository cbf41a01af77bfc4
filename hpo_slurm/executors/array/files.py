"""The files of a sweep's arrays: one folder ``jobs/array-<n>/`` per array, numbered in submission
order across the experiment's whole life (a ``--resubmit`` adds the next numbers).

    manifest.json   the array (``manifest.ArrayManifest``): its runs in task order with their specs,
                    its job and wave names, the arrays before and after it in a wave chain (written
                    before anything is submitted)
    array.sbatch    the array's script (written before anything is submitted)
    wave.sbatch     the script of the wave job that submits the array (arrays after the first of a chain)
    submitted.json  {"job_id": ...} of the array, written once it is out (by the sweep or a wave job)
    wave.json       {"job_id": ...} of the array's wave job, written once that is out

Scripts and manifests are published by rename and synced: a wave job reads them long after the sweep
returned. A file that cannot be read (or is not what it should be) counts as absent: ``manifest``
and ``submitted_id`` say None.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

from hpo_slurm.core.fsio import read_json, write_bytes_atomic, write_json_atomic
from hpo_slurm.executors.array.manifest import ArrayManifest

MANIFEST = "manifest.json"
ARRAY_SCRIPT = "array.sbatch"
WAVE_SCRIPT = "wave.sbatch"
SUBMITTED = "submitted.json"
WAVE_SUBMITTED = "wave.json"
_ARRAY_DIR = re.compile(r"^array-(\d+)$")


def read_job_id(record: Path) -> Optional[str]:
    """The job id in a ``submitted.json`` / ``wave.json`` record, or None when there is none to read."""
    try:
        return str(read_json(record)["job_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_job_id(record: Path, job_id: str) -> None:
    write_json_atomic(record, {"job_id": job_id})


class ArrayFolders:
    """The ``jobs/array-<n>/`` folders of one experiment (``jobs_dir`` is its ``jobs/`` folder)."""

    def __init__(self, jobs_dir: Path):
        self.jobs_dir = Path(jobs_dir)

    def folder(self, index: int) -> Path:
        return self.jobs_dir / f"array-{index}"

    def manifest_path(self, index: int) -> Path:
        return self.folder(index) / MANIFEST

    def indexes(self) -> List[int]:
        """The numbers of every array folder, ascending."""
        if not self.jobs_dir.is_dir():
            return []
        return sorted(int(match.group(1)) for path in self.jobs_dir.iterdir()
                      if (match := _ARRAY_DIR.match(path.name)))

    def next_index(self) -> int:
        """The number the next array gets."""
        return max(self.indexes(), default=-1) + 1

    def manifest(self, index: int) -> Optional[ArrayManifest]:
        """The array's manifest; None when it cannot be read or is not one (``ProtocolError`` is a
        ValueError)."""
        try:
            return ArrayManifest.read(self.manifest_path(index))
        except (OSError, ValueError):
            return None

    def write_manifest(self, manifest: ArrayManifest) -> None:
        self.folder(manifest.index).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.manifest_path(manifest.index), manifest.to_json())

    def write_script(self, index: int, name: str, text: str) -> Path:
        """Publish a script (``ARRAY_SCRIPT`` or ``WAVE_SCRIPT``) by rename, synced first."""
        path = self.folder(index) / name
        write_bytes_atomic(path, text.encode("utf-8"))
        return path

    def submitted_id(self, index: int) -> Optional[str]:
        """The array's job id as recorded when it was submitted (by the sweep or a wave job)."""
        return read_job_id(self.folder(index) / SUBMITTED)

    def record_submitted(self, index: int, job_id: str) -> None:
        write_job_id(self.folder(index) / SUBMITTED, job_id)

    def wave_recorded(self, index: int) -> bool:
        """Whether the array's wave job was recorded as submitted."""
        return (self.folder(index) / WAVE_SUBMITTED).exists()

    def record_wave(self, index: int, job_id: str) -> None:
        write_job_id(self.folder(index) / WAVE_SUBMITTED, job_id)
