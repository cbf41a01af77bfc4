"""``jobs/array-<n>/manifest.json``: one array of a sweep (``ArrayManifest``).

On disk it is a ``protocol.BatchManifest`` (``runs`` in task order, each run's spec in ``specs``,
the protocol version) whose other top-level keys describe the array:

    array           its number n            experiment_dir  the experiment folder
    job_name        ``hpo.<uid>.array-<n>``  wave_name       ``hpo.<uid>.wave-<n>`` (null: no wave job)
    previous, next  the arrays before and after it in a wave chain (null: none)
    gpus, time_minutes, throttle            what its tasks were given

Task ``i`` (``hpo_slurm.tasks.sweep_task``) writes ``runs/<runs[i]>/spec.json`` from ``specs[i]``.
Arrays queued by hpo-slurm 0.1.0 have no version and list spec.json paths in ``specs``; they are read
too (``spec_paths``), so they keep running and their chains keep being followed after an upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hpo_slurm.core.fsio import read_json
from hpo_slurm.core.protocol import BatchManifest, ProtocolError, RunSpec, check_version


@dataclass(frozen=True)
class ArrayManifest:
    """One array: its runs in task order with their specs (``specs``; empty in a manifest of
    hpo-slurm 0.1.0, which has ``spec_paths`` instead) and its place in a wave chain."""

    index: int
    experiment_dir: str
    job_name: str
    runs: Tuple[str, ...]
    specs: Tuple[RunSpec, ...] = ()
    spec_paths: Tuple[str, ...] = ()
    wave_name: Optional[str] = None
    previous: Optional[int] = None
    next: Optional[int] = None
    gpus: int = 0
    time_minutes: Optional[int] = None
    throttle: int = 0

    @classmethod
    def of(cls, index: int, experiment_dir: str, job_name: str, specs: Tuple[RunSpec, ...],
           **fields: Any) -> "ArrayManifest":
        """The manifest of an array running ``specs`` in this order."""
        return cls(index=index, experiment_dir=experiment_dir, job_name=job_name,
                   runs=tuple(spec.run_id for spec in specs), specs=tuple(specs), **fields)

    @property
    def batch(self) -> BatchManifest:
        """The runs and specs as the protocol's batch manifest, the array's keys as its ``extra``."""
        return BatchManifest(self.specs, extra=self._array_fields())

    def to_json(self) -> Dict[str, Any]:
        if self.spec_paths:
            return {**self._array_fields(), "runs": list(self.runs), "specs": list(self.spec_paths)}
        return self.batch.to_json()

    @classmethod
    def from_json(cls, data: Any, what: str = "array manifest") -> "ArrayManifest":
        """Read a manifest of this hpo-slurm or of 0.1.0; ``ProtocolError`` naming ``what`` when it is
        neither (a key missing or mistyped, a newer protocol)."""
        if not isinstance(data, dict):
            raise ProtocolError(f"{what}: expected a JSON object, got {type(data).__name__}")
        check_version(data, what)
        entries = data.get("specs")
        if isinstance(entries, list) and entries and all(isinstance(entry, str) for entry in entries):
            runs = _list_of_str(data.get("runs"), "runs", what)
            if len(runs) != len(entries):
                raise ProtocolError(f"{what}: {len(runs)} runs but {len(entries)} specs")
            return cls(runs=tuple(runs), spec_paths=tuple(entries), **_array_fields_of(data, what))
        batch = BatchManifest.from_json(data, what)
        return cls(runs=tuple(batch.run_ids), specs=batch.specs, **_array_fields_of(batch.extra, what))

    @classmethod
    def read(cls, path: Path) -> "ArrayManifest":
        """The manifest in ``path``: OSError when it cannot be read, ProtocolError (a ValueError) when
        it is not a manifest."""
        return cls.from_json(read_json(path), str(path))

    def _array_fields(self) -> Dict[str, Any]:
        return {"array": self.index, "experiment_dir": self.experiment_dir, "job_name": self.job_name,
                "wave_name": self.wave_name, "previous": self.previous, "next": self.next, "gpus": self.gpus,
                "time_minutes": self.time_minutes, "throttle": self.throttle}


def _array_fields_of(data: Dict[str, Any], what: str) -> Dict[str, Any]:
    def value(key: str, kind: type, required: bool = False, default: Any = None) -> Any:
        found = data.get(key)
        if found is None:
            if required:
                raise ProtocolError(f"{what}: no {key!r}")
            return default
        if not isinstance(found, kind) or (kind is int and isinstance(found, bool)):
            raise ProtocolError(f"{what}: {key!r} must be {kind.__name__}, got {found!r}")
        return found

    return {"index": value("array", int, required=True), "experiment_dir": value("experiment_dir", str, required=True),
            "job_name": value("job_name", str, required=True), "wave_name": value("wave_name", str),
            "previous": value("previous", int), "next": value("next", int), "gpus": value("gpus", int, default=0),
            "time_minutes": value("time_minutes", int), "throttle": value("throttle", int, default=0)}


def _list_of_str(value: Any, key: str, what: str) -> List[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError(f"{what}: {key!r} must be a list of strings")
    return value
