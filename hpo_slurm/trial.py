"""The API a training script uses inside its job. Imports nothing heavy (no torch, sqlite or rich).

    from hpo_slurm import trial
    ctx = trial.init()
    start = ctx.latest_checkpoint and load(ctx.latest_checkpoint)
    for step in range(start_length, ctx.target_length):
        ...
        if ctx.should_stop():
            with ctx.checkpoint(step) as path: save(path)
            return
    ctx.report_validation(ctx.target_length, {"validation_loss": loss})
    with ctx.checkpoint(ctx.target_length) as path: save(path)

Trials never open the experiment database: they append metric lines and publish checkpoint folders
under the experiment folder, and the driver ingests them (``hpo_slurm.core.protocol`` describes the files).

A trial of several ranks (``resources.slots_per_trial`` > 1) runs this script once per rank, each with
torch.distributed's ``env://`` variables set, so ``init_process_group(backend)`` needs nothing more
(``hpo_slurm.torch.init_distributed`` does it). Every rank gets the same hyperparameters, target and
latest checkpoint, and its place in ``ctx.rank``, ``ctx.local_rank``, ``ctx.world_size``,
``ctx.is_chief``. Reports are recorded from rank 0 (the other ranks' are accepted and dropped).
``ctx.checkpoint(length)`` is entered by every rank, gives them the same folder and publishes it once,
after every rank has left the block: save from rank 0 only, or a shard from each rank.
``ctx.should_stop()`` is a collective over the process group when one is initialized: every rank calls
it at the same points of its loop and all get the same answer at the same call, so a preemption that
reaches one rank first stops every rank at the same step. Without a process group each rank answers
for itself (Slurm signals every rank of a job at once).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from hpo_slurm.core import interruption
from hpo_slurm.core.fsio import append_line, read_json, write_json_atomic
from hpo_slurm.core.layout import CHECKPOINT_META, ExperimentLayout, checkpoint_name
from hpo_slurm.core.protocol import SPEC_ENV, RunSpec, StopReason, checkpoint_length, latest_checkpoint_in

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")
INVALID_HP_FILE = "invalid_hp.json"
ENDED_EARLY_FILE = "ended_early.json"
ATTEMPT_ENV = "HPO_SLURM_ATTEMPT"  # which start of the job the ranks belong to (set by the launcher)
PREPARED_AS = "prepared_as"  # a checkpoint's metadata key: the hidden folder it was prepared in
CHECKPOINT_WAIT_S = 3600.0  # how long a rank waits for the others to leave a checkpoint block
# stop reasons as the numbers ranks agree on (the largest wins); 4: a reason a script gave itself
_STOP_CODES = {StopReason.SEARCH_STOPPED.value: 1, StopReason.TIME_LIMIT.value: 2, StopReason.PREEMPTED.value: 3}
_OWN_REASON = 4


class InvalidHP(Exception):
    """Raise when this trial's hyperparameters cannot train; the searcher replaces the trial."""


class TrialContext:
    """This run of a trial: its hyperparameters, the length to reach, and where to report.

    Built from the run's spec: a ``RunSpec``, or the ``spec.json`` object (``ProtocolError`` when it
    is not a valid one; ``context_dir`` and ``entrypoint`` may be left out). ``spec`` is that object as
    a dict; ``run_spec`` the typed spec. When the spec has several ranks, this process's rank comes
    from ``environ`` (default ``os.environ``): RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
    NODE_RANK; otherwise it is rank 0 of 1."""

    def __init__(self, spec: Union[RunSpec, Mapping[str, Any]], environ: Optional[Mapping[str, str]] = None):
        if isinstance(spec, RunSpec):
            self.run_spec = spec
            self.spec: Dict[str, Any] = spec.to_json()
        else:
            # what the job needs to start the trial (its folder, its entrypoint) the trial itself does not
            self.run_spec = RunSpec.from_json({"context_dir": "", "entrypoint": "", **spec})
            self.spec = spec if isinstance(spec, dict) else dict(spec)
        self.trial_id: int = self.run_spec.trial_id
        self.run_id: str = self.run_spec.run_id
        self.hparams: Dict[str, Any] = self.run_spec.hparams
        self.target_length: int = self.run_spec.target_length
        self.unit: str = self.run_spec.unit
        self.data: Dict[str, Any] = self.run_spec.data
        self.records_per_epoch: int = self.run_spec.records_per_epoch
        self._layout = ExperimentLayout(Path(self.run_spec.experiment_dir))
        self._stop_reason: Optional[str] = None
        self._last_stop_check = 0.0
        # the spec says whether hpo-slurm launched ranks; a lone process is rank 0 of 1 whatever its
        # environment holds (a script may run its own torchrun)
        env = (os.environ if environ is None else environ) if self.run_spec.world_size > 1 else {}
        self.rank: int = int(env.get("RANK", 0))
        self.local_rank: int = int(env.get("LOCAL_RANK", 0))
        self.world_size: int = int(env.get("WORLD_SIZE", 1))
        self.local_world_size: int = int(env.get("LOCAL_WORLD_SIZE", 1))
        self.node_rank: int = int(env.get("NODE_RANK", 0))
        self._attempt = env.get(ATTEMPT_ENV, "0")
        self._checkpoints_entered = 0
        self._stop_group: Any = None
        self._stop_told = False

    @property
    def is_chief(self) -> bool:
        """Rank 0: the rank whose reports are recorded."""
        return self.rank == 0

    # ---- where to resume from -------------------------------------------------------------
    @property
    def trial_dir(self) -> Path:
        return self._layout.trial_dir(self.trial_id)

    @property
    def latest_checkpoint(self) -> Optional[Path]:
        """The newest published checkpoint of this trial, else its PBT parent's, else None."""
        found = latest_checkpoint_in(self._layout.checkpoints_dir(self.trial_id))
        if found is not None:
            return found
        parent = self.run_spec.parent_checkpoint
        if parent and Path(parent).is_dir():
            return Path(parent)
        return None

    @property
    def latest_checkpoint_length(self) -> int:
        """The length stored with ``latest_checkpoint`` (0 when there is none)."""
        path = self.latest_checkpoint
        return checkpoint_length(path) if path is not None else 0

    # ---- reporting ----------------------------------------------------------------------------
    def report_validation(self, length: int, metrics: Dict[str, Any]) -> None:
        self._report("validation", length, metrics)

    def report_training(self, length: int, metrics: Dict[str, Any]) -> None:
        self._report("training", length, metrics)

    def _report(self, kind: str, length: int, metrics: Dict[str, Any]) -> None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise ValueError(f"length must be a non-negative integer, got {length!r}")
        if not isinstance(metrics, dict):
            raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
        if not self.is_chief:
            return
        line = {
            "kind": kind,
            "length": length,
            "metrics": {str(k): _jsonable_metric(v) for k, v in metrics.items()},
            "run": self.run_id,
            "time": time.time(),
        }
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        append_line(self._layout.metrics_file(self.trial_id), json.dumps(line, allow_nan=True))

    # ---- checkpoints --------------------------------------------------------------------------
    @contextlib.contextmanager
    def checkpoint(self, length: int, metadata: Optional[Dict[str, Any]] = None, *,
                   chief_only: bool = False) -> Iterator[Path]:
        """A fresh directory to save into; published atomically (by rename) when the block exits
        without an exception. A checkpoint at the same length replaces the older one. With several
        ranks every rank must enter the block: all get the same directory, and it is published once
        every rank has left the block (each rank returns after that). When any rank's block raises, nothing
        is published and every other rank raises ``RuntimeError`` once it leaves its block (the unpublished
        folder stays until the job's next attempt starts). ``chief_only=True``: only rank 0
        enters the block (``RuntimeError`` on another rank), and it publishes as a trial of one
        process does, waiting for no other rank."""
        if chief_only and not self.is_chief:
            raise RuntimeError(f"checkpoint(chief_only=True) called on rank {self.rank}: only rank 0 may")
        parent = self._layout.checkpoints_dir(self.trial_id)
        parent.mkdir(parents=True, exist_ok=True)
        if self.world_size > 1 and not chief_only:
            self._checkpoints_entered += 1  # counted by every rank alike: names the block's shared folder
            tmp, sync = self._layout.shared_checkpoint_dirs(self.trial_id, self.run_id, length, self._attempt,
                                                            self._checkpoints_entered)
            sync.mkdir(exist_ok=True)
            _raise_if_failed(sync, checkpoint_name(length))  # a rank that comes late to a failed block
            tmp.mkdir(exist_ok=True)
        else:
            tmp, sync = parent / f".tmp-{checkpoint_name(length)}-{os.getpid()}", None
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        final = parent / checkpoint_name(length)
        try:
            try:
                yield tmp
            except BaseException:
                if sync is not None:  # the others stop waiting; the marker stays for a rank still to come
                    (sync / f"failed-{self.rank}").touch()
                raise
            if sync is not None and not self.is_chief:
                (sync / f"rank-{self.rank}").touch()
                _wait_for(lambda: not tmp.exists() or _failed_ranks(sync), f"rank 0 to publish checkpoint {tmp.name}")
                _raise_if_failed(sync, final.name)
                if _prepared_as(final) != tmp.name:
                    raise RuntimeError(f"checkpoint {final.name} was not published by rank 0")
                return
            if sync is not None:
                others = [sync / f"rank-{rank}" for rank in range(1, self.world_size)]
                _wait_for(lambda: all(p.exists() for p in others) or _failed_ranks(sync),
                          f"every rank to leave checkpoint {tmp.name}")
                _raise_if_failed(sync, final.name)
            self._publish(tmp, final, length, metadata)
            if sync is not None:
                shutil.rmtree(sync, ignore_errors=True)
        finally:
            # a failed shared block keeps its folder: other ranks may still be writing into it (the next
            # attempt of the job removes it, with the other stale shared folders)
            if sync is None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _publish(self, tmp: Path, final: Path, length: int, metadata: Optional[Dict[str, Any]]) -> None:
        meta = {"length": length, "run": self.run_id, "trial_id": self.trial_id, "time": time.time()}
        meta.update(metadata or {})
        meta[PREPARED_AS] = tmp.name  # tells the other ranks this block's folder was the one published
        write_json_atomic(tmp / CHECKPOINT_META, meta)
        if final.exists():
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)

    # ---- stopping -----------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True once the job is being preempted, reaches its time-limit warning, or the search
        stopped this trial. Checkpoint and return when it is. With several ranks and an initialized
        torch.distributed process group this is a collective (see the module's docstring)."""
        if self._stop_reason is None:
            now = time.monotonic()
            if now - self._last_stop_check >= 1.0:
                self._last_stop_check = now
                if stop_requested(self._layout, self.run_id):
                    self._stop_reason = StopReason.SEARCH_STOPPED.value
        if self.world_size > 1:
            agreed = self._agree_on_stop()
            if agreed is not None and not self._stop_told:
                self._stop_told = True  # the rank's own process may not have had the signal: tell it
                self._layout.ranks_dir(self.run_id).mkdir(parents=True, exist_ok=True)
                write_json_atomic(self._layout.rank_stop_file(self.run_id, self.rank), {"reason": agreed})
            return agreed is not None
        return self._stop_reason is not None

    def _agree_on_stop(self) -> Optional[str]:
        """The stop reason every rank agrees on (None: go on), over a gloo group of torch.distributed's
        process group (made at the first call, which every rank makes) when torch.distributed is
        initialized; else this rank's own. A signal that arrives after the ranks agreed counts at the
        next call, so every rank answers the same at every call."""
        reason = self._stop_reason
        dist = sys.modules.get("torch.distributed")
        if dist is None or not dist.is_available() or not dist.is_initialized():
            return reason
        torch = sys.modules["torch"]
        # gloo's default group is named by None: a reference kept to it would keep it alive after
        # destroy_process_group(), and its threads would then race the interpreter's exit (an abort)
        if dist.get_backend() != "gloo" and self._stop_group is None:
            self._stop_group = dist.new_group(backend="gloo")
        code = 0 if reason is None else _STOP_CODES.get(reason, _OWN_REASON)
        flag = torch.tensor([code], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=None if dist.get_backend() == "gloo" else self._stop_group)
        agreed = int(flag.item())
        if not agreed:
            return None
        if reason is None or _STOP_CODES.get(reason, _OWN_REASON) != agreed:
            names = {number: name for name, number in _STOP_CODES.items()}
            reason = names.get(agreed, reason if reason is not None else "stopped by another rank")
        self._stop_reason = reason
        return reason

    @property
    def stop_reason(self) -> Optional[str]:
        """Why the run was asked to stop: a ``StopReason`` value, or the reason given to
        ``request_stop``; None until then."""
        return self._stop_reason

    def end_trial(self, message: str = "") -> None:
        """End this trial for good once the script returns: the search closes it (STOPPED_EARLY) and
        its searcher counts it as a trial that exited early, as Determined does for
        ``set_stop_requested``. Where the search has no target for it (no ``searcher.max_length``) a
        trial that validated simply ends with its last validation. Recorded from rank 0 only."""
        if self.is_chief:
            write_json_atomic(self._layout.run_dir(self.run_id) / ENDED_EARLY_FILE, {"message": str(message)})

    def request_stop(self, reason: str) -> None:
        """Mark this run as asked to stop (signal handlers call this)."""
        if self._stop_reason is None:
            self._stop_reason = reason


def _failed_ranks(sync: Path) -> List[str]:
    """The ranks whose block of a shared checkpoint raised (their markers in its ``sync`` folder)."""
    return sorted(p.name[len("failed-"):] for p in sync.glob("failed-*"))


def _raise_if_failed(sync: Path, name: str) -> None:
    failed = _failed_ranks(sync)
    if failed:
        raise RuntimeError(f"checkpoint {name} was not published: rank {', '.join(failed)} failed inside the block")


def _prepared_as(folder: Path) -> Optional[str]:
    """The name of the hidden folder a published checkpoint was prepared in (None: not published)."""
    try:
        return read_json(folder / CHECKPOINT_META).get(PREPARED_AS)
    except (OSError, ValueError):
        return None


def _wait_for(condition: Callable[[], bool], what: str, limit_s: float = CHECKPOINT_WAIT_S) -> None:
    """Poll ``condition`` until it holds; ``RuntimeError`` naming ``what`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    pause = 0.005
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {limit_s:.0f} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def init(install_signal_handlers: bool = True) -> TrialContext:
    """The context of the run this process belongs to, read from the job's environment.

    Installs handlers so the stop signals (SIGTERM, SIGUSR1, SIGUSR2: a preemption or the time limit,
    told apart by ``core.interruption``) make ``should_stop()`` true instead of killing the process, and records ``InvalidHP`` for the driver.
    """
    spec_path = os.environ.get(SPEC_ENV)
    if not spec_path:
        raise RuntimeError(f"{SPEC_ENV} is not set: run this script through hpo-slurm")
    ctx = TrialContext(read_json(Path(spec_path)))
    if install_signal_handlers:
        install_stop_handlers(ctx.request_stop, ctx.run_spec)
        _install_invalid_hp_hook(ctx)
    return ctx


def stop_reason_for(signum: int, spec: Union[RunSpec, Mapping[str, Any]], started: float) -> str:
    """``preempted`` or ``time_limit`` (``StopReason`` values) for a stop signal that reaches a run of
    ``spec`` (a ``RunSpec`` or a spec object) now, decided from the time left in the job's allocation
    and Slurm's record of the job (``core.interruption``). ``started`` (epoch seconds) stands in for
    the job's start when the job did not say when its allocation ends (a process started by hand)."""
    limit, signal_delay = _time_limit(spec)
    now = time.time()
    seconds_left = interruption.time_left(os.environ, now)
    if seconds_left is None and limit is not None:
        seconds_left = started + limit - now
    return interruption.stop_reason(signum, seconds_left, signal_delay, interruption.slurm_record(os.environ), now).value


def _time_limit(spec: Union[RunSpec, Mapping[str, Any]]) -> Tuple[Optional[float], float]:
    """The run's time limit (None: none) and how long before it the warning signal comes."""
    if isinstance(spec, RunSpec):
        return spec.time_limit_s, spec.signal_delay_s
    return spec.get("time_limit_s"), spec.get("signal_delay_s", 0)


def stop_requested(layout: ExperimentLayout, run_id: str) -> bool:
    """Whether the driver asked the whole search, or this run, to stop (its stop files exist)."""
    return layout.stop_request.exists() or layout.run_stop_file(run_id).exists()


def install_stop_handlers(on_stop: Callable[[str], None], spec: Union[RunSpec, Mapping[str, Any]],
                          forward: Optional[Callable[[int], None]] = None) -> None:
    """Pass the stop signals on to ``forward(signum)``, when given (a launcher's children get what it
    got, at once), then tell ``on_stop(reason)`` (see ``stop_reason_for``, which may ask Slurm: up to
    a few seconds). The reason is decided at the first signal; later ones repeat it."""
    started = time.time()
    decided: List[str] = []

    def handler(signum: int, frame: Any) -> None:
        if forward is not None:
            forward(signum)
        if not decided:
            decided.append(stop_reason_for(signum, spec, started))
        on_stop(decided[0])

    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), handler)


def forward_to_installed_handlers() -> Callable[[int], None]:
    """A ``forward`` for ``install_stop_handlers`` that passes a stop signal on to the handler of it
    installed now (before the new ones): code that routes the signals to a trial keeps what the
    script or a library set up."""
    previous = {int(getattr(signal, name)): signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}

    def forward(signum: int) -> None:
        handler = previous.get(int(signum))
        if callable(handler):
            handler(signum, None)

    return forward


def record_invalid_hp(run_dir: Path, message: str) -> None:
    write_json_atomic(run_dir / INVALID_HP_FILE, {"message": message})


def _install_invalid_hp_hook(ctx: TrialContext) -> None:
    previous = sys.excepthook
    run_dir = ctx._layout.run_dir(ctx.run_id)

    def hook(kind, value, traceback):  # type: ignore[no-untyped-def]
        if isinstance(value, InvalidHP):
            record_invalid_hp(run_dir, str(value))
        previous(kind, value, traceback)

    sys.excepthook = hook


def _jsonable_metric(value: Any) -> Any:
    """Numbers stay numbers (NaN and infinities included); numpy/torch scalars become floats."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if not math.isnan(number) else float("nan")
