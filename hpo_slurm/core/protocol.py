"""The driver-to-job protocol: everything the driver and a job say to each other through files in the
experiment folder (paths: ``hpo_slurm.core.layout``). Standard library only: both sides import it.

Files, per run ``<run>`` of trial ``<id>`` (all JSON is UTF-8; whole files are published by rename):

``runs/<run>/spec.json`` (``RunSpec``)
    What the run's job reads: written by the driver before it submits the job, or by the job itself
    from its batch manifest. The job finds it through ``$HPO_SLURM_SPEC`` (``SPEC_ENV``); the
    hyperparameters travel only here, never on a command line.
``runs/<run>/result.json`` (``RunResult``)
    How the job's last attempt ended, written by the job when the trial's process is over (removed
    when an attempt starts). No result file: the attempt never got that far.
``runs/<run>/attempts.jsonl``
    One line per start of the job (a job the scheduler requeues starts again under the same id):
    ``{"attempt": n, "host", "pid", "job_id", "array_job_id", "array_task_id", "restart_count",
    "cuda_visible_devices", "nodes", "time"}`` (``nodes``: the names of the nodes the job holds).
``runs/<run>/interruptions.jsonl``
    One line per attempt that stopped for a preemption or at its time limit, written by the job:
    ``{"attempt": n, "reason": "preempted"|"time_limit", "time"}`` (``hpo_slurm.core.interruption``).
``runs/<run>/stop``
    Empty; created by the driver when the search no longer needs the run. ``<experiment>/stop-requested``
    does the same for every run. A trial sees either as ``should_stop()`` (reason ``search_stopped``).
``runs/<run>/ranks/rank-<k>.json`` (``RunResult``)
    How rank ``k`` of a trial of several ranks ended, written by that rank's process; the job merges
    them into ``result.json`` (``hpo_slurm.tasks.ranks``). ``ranks/stopping-<k>.json``: ``{"reason": str}``,
    written by rank ``k``'s trial when ``should_stop()`` first said yes (the rank's process may not
    have received the signal itself). The folder is removed when an attempt starts.
``runs/<run>/invalid_hp.json``
    ``{"message": str}``: the trial raised ``trial.InvalidHP``; its result's status becomes ``invalid_hp``.
``runs/<run>/ended_early.json``
    ``{"message": str}``: the trial's code ended the trial itself (``TrialContext.end_trial``); when
    the code then returns, its result's status becomes ``ended_early``.
``trials/<id>/metrics.jsonl`` (``MetricLine``)
    Appended by the trial, one JSON object a line:
    ``{"kind": "training"|"validation", "length": int >= 0, "metrics": {...}, "run": str, "time": float}``.
    A line without its newline is still being written.
``trials/<id>/checkpoints/length-<9 digits>/``
    A published checkpoint: prepared in a hidden folder, then renamed into place, so a folder that
    holds ``hpo_checkpoint.json`` (``CHECKPOINT_META``: ``{"length": int, "run": str, "trial_id": int,
    "time": float, ...the trial's own metadata}``) is complete. ``latest_checkpoint_in`` and
    ``checkpoint_length`` read them.
``jobs/<batch>/manifest.json`` (``BatchManifest``)
    A batch of runs submitted as one job (a job array when it holds several): the run ids in task
    order and each run's spec; task ``i`` writes ``runs/<runs[i]>/spec.json`` from ``specs[i]``.

Versions: spec.json, result.json and manifest.json carry ``"protocol": PROTOCOL_VERSION`` (2). Version
1 is what hpo-slurm 0.1.0 wrote, with no key: such files read as version 1, so jobs queued before an
upgrade still run (its sweep manifests list spec.json paths where version 2 holds the specs, and a
trial's ``sys.exit(True)`` could leave ``"exit_code": true``). A file with a greater version than this
module's is refused with a ``ProtocolError`` that says to upgrade. Field names and meanings never
change within a version; a new field with a default keeps the version, anything else raises it.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any, Dict, List, Mapping, Optional, Tuple

from hpo_slurm.core.fsio import read_json
from hpo_slurm.core.layout import CHECKPOINT_META

PROTOCOL_VERSION = 2
VERSION_KEY = "protocol"
SPEC_ENV = "HPO_SLURM_SPEC"  # the job's environment variable naming the run's spec.json


class ProtocolError(ValueError):
    """A protocol file that cannot be used: malformed, or written by a newer hpo-slurm."""


def _read_json_file(path: Path) -> Any:
    """The JSON in ``path``: OSError when it cannot be read, ProtocolError when it is not JSON."""
    try:
        return read_json(path)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{path}: not JSON ({exc})") from exc


def check_version(data: Mapping[str, Any], what: str) -> int:
    """The protocol version of ``data`` (1 when it has none: written by hpo-slurm 0.1.0). Raises
    ``ProtocolError`` for a version this hpo-slurm does not speak."""
    version = data.get(VERSION_KEY, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProtocolError(f"{what}: {VERSION_KEY} {version!r} is not a protocol version")
    if version > PROTOCOL_VERSION:
        raise ProtocolError(
            f"{what}: written by a newer hpo-slurm (protocol {version}; this one reads up to "
            f"{PROTOCOL_VERSION}): upgrade hpo-slurm where this runs")
    return version


class StopReason(str, enum.Enum):
    """Why a trial was asked to stop before its target (``RunResult.stop_reason``)."""

    PREEMPTED = "preempted"  # the scheduler preempts the job (SIGTERM, or an early warning signal)
    TIME_LIMIT = "time_limit"  # the warning signal came near the end of the job's time
    SEARCH_STOPPED = "search_stopped"  # the driver no longer needs the run, or the experiment was stopped


class RunStatus(str, enum.Enum):
    """How a job attempt ended (``RunResult.status``)."""

    EXITED = "exited"  # the script returned 0 (the driver checks it reached its target)
    STOPPED = "stopped"  # it ended because it was asked to (see its StopReason)
    FAILED = "failed"  # anything else
    INVALID_HP = "invalid_hp"  # the script raised trial.InvalidHP
    ENDED_EARLY = "ended_early"  # the script returned after ending the trial itself (TrialContext.end_trial)


def _field(data: Mapping[str, Any], key: str, kinds: Tuple[type, ...], what: str) -> Any:
    """``data[key]``, which must be present and one of ``kinds`` (a bool never counts as an int)."""
    if key not in data:
        raise ProtocolError(f"{what}: no {key!r}")
    return _typed(data[key], key, kinds, what)


def _optional(data: Mapping[str, Any], key: str, kinds: Tuple[type, ...], what: str, default: Any) -> Any:
    """``data[key]`` if present and not null, else ``default``; of one of ``kinds`` when present."""
    value = data.get(key)
    return default if value is None else _typed(value, key, kinds, what)


def _typed(value: Any, key: str, kinds: Tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise ProtocolError(f"{what}: {key!r} must be {expected}, got {value!r}")
    return value


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class RunSpec:
    """Everything a run's job reads (``spec.json``). Lengths are absolute, in the search's unit.

    ``target_length``: the length to train to and validate at; 0 means no target (a search without
    ``searcher.max_length``: single, grid or random): train as long as the trial's own code decides,
    validate, and return; the trial's last validation is its result.
    ``parent_checkpoint``: the checkpoint a PBT child starts from when it has none of its own.
    ``time_limit_s`` and ``signal_delay_s``: the job's time limit and how long before it the warning
    signal comes (they tell a time-limit warning from a preemption). ``data`` and
    ``records_per_epoch``: the experiment config's, for the script. ``nodes`` and ``ranks_per_node``:
    where the trial's processes go (``core.placement``); more than one rank in all makes the job launch
    one process per rank (``hpo_slurm.tasks.ranks``). ``trial_seed``: the trial's own seed, drawn from the
experiment seed and the trial id (``core.rng.trial_seed_for``). ``experiment_config``: the experiment's config
as read, JSON values only (Determined's training code asks for it)."""

    experiment_dir: str
    context_dir: str
    trial_id: int
    run_id: str
    hparams: Dict[str, Any]
    target_length: int
    entrypoint: str
    experiment: str = ""
    from_length: int = 0
    unit: str = "batches"
    parent_checkpoint: Optional[str] = None
    metric: Optional[str] = None
    smaller_is_better: bool = True
    time_limit_s: Optional[float] = None
    signal_delay_s: float = 0
    data: Dict[str, Any] = field(default_factory=dict)
    records_per_epoch: int = 0
    nodes: int = 1
    ranks_per_node: int = 1
    trial_seed: int = 0
    experiment_config: Dict[str, Any] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        """The number of processes (ranks) the trial runs as."""
        return self.nodes * self.ranks_per_node

    def to_json(self) -> Dict[str, Any]:
        """The ``spec.json`` object: every field under its own name, and the protocol version."""
        return {VERSION_KEY: PROTOCOL_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_json(cls, data: Any, what: str = "run spec") -> "RunSpec":
        """Read a ``spec.json`` object. Fields after ``entrypoint`` may be missing (their defaults
        apply; ``experiment`` defaults to the experiment folder's name); unknown keys are ignored.
        Raises ``ProtocolError`` naming ``what`` for a missing or mistyped field or a newer version."""
        data = _object(data, what)
        check_version(data, what)
        values: Dict[str, Any] = {}
        for spec_field in fields(cls):
            kinds = _SPEC_TYPES[spec_field.name]
            if spec_field.default is MISSING and spec_field.default_factory is MISSING:
                values[spec_field.name] = _field(data, spec_field.name, kinds, what)
            elif data.get(spec_field.name) is not None:
                values[spec_field.name] = _typed(data[spec_field.name], spec_field.name, kinds, what)
        values.setdefault("experiment", PurePath(values["experiment_dir"]).name)
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> "RunSpec":
        """The spec in the file ``path``. OSError when it cannot be read; ProtocolError otherwise."""
        return cls.from_json(_read_json_file(path), str(path))


# the JSON types of each RunSpec field (a bool never counts as an int)
_SPEC_TYPES: Dict[str, Tuple[type, ...]] = {
    "experiment_dir": (str,), "context_dir": (str,), "trial_id": (int,), "run_id": (str,), "hparams": (dict,),
    "target_length": (int,), "entrypoint": (str,), "experiment": (str,), "from_length": (int,), "unit": (str,),
    "parent_checkpoint": (str,), "metric": (str,), "smaller_is_better": (bool,), "time_limit_s": (int, float),
    "signal_delay_s": (int, float), "data": (dict,), "records_per_epoch": (int,), "nodes": (int,),
    "ranks_per_node": (int,), "trial_seed": (int,), "experiment_config": (dict,),
}


@dataclass(frozen=True)
class RunResult:
    """How a job attempt ended (``result.json``).

    ``exit_code``: the trial script's exit status. ``stop_reason``: why a ``stopped`` run was asked to
    stop: a ``StopReason`` (a reason a script passed to ``TrialContext.request_stop`` itself is kept as
    the string it gave). ``message``: why a ``failed`` or ``invalid_hp`` run failed (None otherwise).
    ``attempt``: which start of the job this was (``attempts.jsonl``); ``ended``: when it ended (epoch
    seconds, the node's clock). Both are None in results that were never written to a file."""

    status: RunStatus
    exit_code: int
    stop_reason: Optional[str] = None
    message: Optional[str] = None
    attempt: Optional[int] = None
    ended: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunStatus(self.status))
        if self.stop_reason is not None:
            object.__setattr__(self, "stop_reason", _stop_reason(self.stop_reason))

    def to_json(self) -> Dict[str, Any]:
        """The ``result.json`` object. ``message``, ``attempt`` and ``ended`` are left out when None."""
        data: Dict[str, Any] = {VERSION_KEY: PROTOCOL_VERSION, "status": self.status.value,
                                "exit_code": self.exit_code, "stop_reason": _plain(self.stop_reason)}
        for key in ("message", "attempt", "ended"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    @classmethod
    def from_json(cls, data: Any, what: str = "run result") -> "RunResult":
        """Read a ``result.json`` object; raises ``ProtocolError`` naming ``what`` when it is not one."""
        data = _object(data, what)
        check_version(data, what)
        status = _field(data, "status", (str,), what)
        try:
            status = RunStatus(status)
        except ValueError as exc:
            raise ProtocolError(f"{what}: unknown status {status!r}") from exc
        return cls(
            status=status,
            exit_code=int(_field(data, "exit_code", (int, bool), what)),  # 0.1.0 wrote sys.exit(True) as true
            stop_reason=_optional(data, "stop_reason", (str,), what, None),
            message=_optional(data, "message", (str,), what, None),
            attempt=_optional(data, "attempt", (int,), what, None),
            ended=_optional(data, "ended", (int, float), what, None),
        )


def _stop_reason(reason: str) -> str:
    """The StopReason member for ``reason``, or ``reason`` itself when it is a script's own."""
    try:
        return StopReason(reason)
    except ValueError:
        return str(reason)


def _plain(value: Optional[str]) -> Optional[str]:
    return value.value if isinstance(value, enum.Enum) else value


@dataclass(frozen=True)
class BatchManifest:
    """The runs of one batch job (``manifest.json``): task ``i`` runs ``specs[i]``.

    ``extra``: top-level keys an executor keeps in the same file for its own use (kept on disk as
    they are, next to ``runs`` and ``specs``)."""

    specs: Tuple[RunSpec, ...]
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def run_ids(self) -> List[str]:
        """The run ids in task order."""
        return [spec.run_id for spec in self.specs]

    def spec_for_task(self, index: int) -> RunSpec:
        """The spec task ``index`` runs; IndexError outside the batch."""
        if not 0 <= index < len(self.specs):
            raise IndexError(f"task {index} is outside the batch of {len(self.specs)} runs")
        return self.specs[index]

    def to_json(self) -> Dict[str, Any]:
        return {**self.extra, VERSION_KEY: PROTOCOL_VERSION, "runs": self.run_ids,
                "specs": [spec.to_json() for spec in self.specs]}

    @classmethod
    def from_json(cls, data: Any, what: str = "batch manifest") -> "BatchManifest":
        """Read a ``manifest.json`` object (with or without its version). Every entry of ``specs`` must
        be a spec object whose run id is the one ``runs`` lists at its index; ``ProtocolError`` else."""
        data = _object(data, what)
        check_version(data, what)
        runs = _field(data, "runs", (list,), what)
        entries = _field(data, "specs", (list,), what)
        if len(runs) != len(entries):
            raise ProtocolError(f"{what}: {len(runs)} runs but {len(entries)} specs")
        specs = []
        for index, (run_id, entry) in enumerate(zip(runs, entries)):
            spec = RunSpec.from_json(entry, f"{what}: task {index}")
            if spec.run_id != run_id:
                raise ProtocolError(f"{what}: task {index} is run {run_id} but its spec is {spec.run_id}")
            specs.append(spec)
        extra = {key: value for key, value in data.items() if key not in (VERSION_KEY, "runs", "specs")}
        return cls(tuple(specs), extra)

    @classmethod
    def read(cls, path: Path) -> "BatchManifest":
        """The manifest in the file ``path``. OSError when it cannot be read; ProtocolError otherwise."""
        return cls.from_json(_read_json_file(path), str(path))


# ---- checkpoints --------------------------------------------------------------------------------
def latest_checkpoint_in(directory: Path) -> Optional[Path]:
    """The published checkpoint with the greatest length in ``directory``, or None."""
    if not directory.is_dir():
        return None
    lengths = {}
    for entry in os.scandir(directory):
        if entry.is_dir() and entry.name.startswith("length-") and (Path(entry.path) / CHECKPOINT_META).exists():
            try:
                lengths[int(entry.name[len("length-"):])] = entry.name
            except ValueError:
                continue
    return directory / lengths[max(lengths)] if lengths else None


def checkpoint_length(path: Path) -> int:
    """The length recorded in the published checkpoint folder ``path``."""
    return int(read_json(Path(path) / CHECKPOINT_META)["length"])


# ---- metric lines -------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricLine:
    """One line of ``metrics.jsonl``."""

    kind: str  # "validation" or "training"
    length: int
    metrics: Dict[str, Any]
    run: str
    time: float


ATTEMPT_TAIL_BYTES = 64 * 1024  # an attempt line is a few hundred bytes: the last one is always in here


def last_attempt(path: Path) -> Optional[Dict[str, Any]]:
    """The last attempt recorded in the attempts file ``path`` (its last line that is a JSON object; a
    line cut short, by a job killed while writing it, is skipped), or None when there is none or the
    file cannot be read. Only the file's end is read: a job requeued many times costs no more."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - ATTEMPT_TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            attempt = json.loads(line)
        except ValueError:
            continue
        if isinstance(attempt, dict):
            return attempt
    return None


def read_new_lines(path: Path, offset: int) -> Tuple[List[MetricLine], int, List[str]]:
    """Complete lines after ``offset``: (parsed lines, the offset after the last complete line,
    warnings for lines that are not valid metric records). A torn last line (no newline yet) is left
    for the next read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset, []
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset, []
    lines, warnings = [], []
    position = offset
    for raw in data[: end + 1].split(b"\n")[:-1]:
        line_offset = position
        position += len(raw) + 1
        if not raw.strip():
            continue
        try:
            lines.append(parse_line(raw))
        except ValueError as exc:
            warnings.append(f"{path}: byte {line_offset}: skipped a malformed metrics line ({exc})")
    return lines, offset + end + 1, warnings


def parse_line(raw: bytes) -> MetricLine:
    """One metrics line; ValueError saying what is wrong when it is not a valid metric record."""
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    kind, length, metrics = record.get("kind"), record.get("length"), record.get("metrics")
    if kind not in ("validation", "training"):
        raise ValueError(f"kind {kind!r}")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError(f"length {length!r}")
    if not isinstance(metrics, dict):
        raise ValueError("metrics is not an object")
    return MetricLine(kind, length, metrics, str(record.get("run", "")), float(record.get("time", 0.0)))
