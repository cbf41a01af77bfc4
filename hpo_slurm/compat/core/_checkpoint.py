"""``core_context.checkpoint``: Determined checkpoints as the trial's published checkpoint folders.

A checkpoint is ``trials/<id>/checkpoints/length-<n>/`` where ``n`` is the metadata's
``steps_completed`` (required, as in Determined: ``ValueError`` without it); its storage id is
``hpo_slurm.compat.storage``'s (stable across runs). The metadata is also written to
``metadata.json`` in the folder, as Determined does, and ``get_metadata`` reads it back. A second
checkpoint at the same length replaces the first.

``store_path(metadata)`` (``shard=False``): only the chief calls it (``RuntimeError`` on another rank);
the folder is published from the chief alone when the block ends without an exception.
``store_path(metadata, shard=True)``: every rank calls it in step and gets the same folder; the ranks'
metadata are merged (a key given different values by two ranks is an error); the folder is published
once every rank has left the block, and every rank returns after that. An exception in any rank's block
publishes nothing (every rank still returns, the failing one raising). With several ranks this runs
over ``DistributedContext``'s collectives (torch.distributed must be initialized).

``restore_path(storage_id)`` yields the published folder itself (shared filesystem: nothing to
download; do not write into it) and needs no collective. ``download`` copies it into a folder (the
local chief alone with ``LocalWorkersShareDownload`` and several ranks on a node, the others waiting).
Storage ids a script passes never lead out of the experiment folder (``ValueError``).

``delete(storage_id)`` checks the id and deletes nothing: hpo-slurm removes checkpoints itself,
following ``checkpoint_storage``'s ``save_trial_latest``/``save_trial_best`` settings, and a trial
must not remove a checkpoint the search may still resume from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Tuple, Union

from hpo_slurm.compat.core._enums import DownloadMode
from hpo_slurm.compat.core._run import CoreRun
from hpo_slurm.compat.core._train import as_length
from hpo_slurm.compat.storage import METADATA_FILE, checkpoint_path, published_checkpoint, storage_id_at
from hpo_slurm.core.fsio import read_json
from hpo_slurm.core.layout import CHECKPOINT_META

log = logging.getLogger("determined.core")

Selector = Callable[[str], bool]


class CheckpointContext:
    """Checkpoints of one ``core.Context`` (see the module docstring)."""

    def __init__(self, run: CoreRun) -> None:
        self._run = run

    # ---- saving -------------------------------------------------------------------------------
    def store_path(self, metadata: Optional[Dict[str, Any]] = None, *,
                   shard: bool = False) -> ContextManager[Tuple[Path, str]]:
        """A context manager yielding ``(path, storage_id)``: save into ``path``; it is published when
        the block ends (see the module docstring)."""
        return self._store_sharded(metadata) if shard else self._store_single(metadata)

    @contextlib.contextmanager
    def _store_single(self, metadata: Optional[Dict[str, Any]]) -> Iterator[Tuple[Path, str]]:
        dist = self._run.dist
        if dist.rank != 0:
            raise RuntimeError(f"cannot call CheckpointContext.store_path(shard=False) from non-chief worker "
                               f"(rank={dist.rank})")
        metadata = dict(metadata or {})
        length = _steps_completed(metadata)
        storage_id = self._storage_id(length)
        with self._run.trial.checkpoint(length, chief_only=True) as path:
            yield path, storage_id
            _write_metadata(path, metadata)
        log.info(f"Reported checkpoint {storage_id}")

    @contextlib.contextmanager
    def _store_sharded(self, metadata: Optional[Dict[str, Any]]) -> Iterator[Tuple[Path, str]]:
        dist = self._run.dist
        if dist.size < 2:
            with self._store_single(metadata) as saved:
                yield saved
            return
        merged = merge_metadata(dist.allgather(dict(metadata or {})))
        length = _steps_completed(merged)
        storage_id = self._storage_id(length)
        saving: Any = None
        if dist.rank == 0:
            saving = self._run.trial.checkpoint(length, chief_only=True)
            path = Path(dist.broadcast(str(saving.__enter__())))
        else:
            path = Path(dist.broadcast(None))
        error: Optional[BaseException] = None
        try:
            yield path, storage_id
        except BaseException as exc:  # every rank must still take part in the collectives below
            error = exc
        failed = [rank for rank, ok in enumerate(dist.allgather(error is None)) if not ok]
        problem: Optional[str] = None
        if dist.rank == 0:
            problem = self._finish_sharded(saving, path, merged, storage_id, failed, error)
        problem = dist.broadcast(problem)  # every rank returns once the folder is published, or not
        if error is not None:
            raise error
        if problem is not None:
            raise RuntimeError(problem)

    def _finish_sharded(self, saving: Any, path: Path, merged: Dict[str, Any], storage_id: str,
                        failed: List[int], error: Optional[BaseException]) -> Optional[str]:
        """Publish (or discard) the chief's sharded checkpoint; what went wrong, or None."""
        if failed:
            problem = f"checkpoint {storage_id} not published: the block raised on rank(s) {failed}"
            stop = error if error is not None else RuntimeError(problem)
            saving.__exit__(type(stop), stop, stop.__traceback__)
            return problem
        try:
            _write_metadata(path, merged)
        except BaseException as exc:
            saving.__exit__(type(exc), exc, exc.__traceback__)
            return f"checkpoint {storage_id} not published: {exc!r}"
        saving.__exit__(None, None, None)
        log.info(f"Reported checkpoint {storage_id}")
        return None

    def upload(self, ckpt_dir: Optional[Union[str, "os.PathLike[str]"]], metadata: Optional[Dict[str, Any]] = None,
               *, shard: bool = False, selector: Optional[Selector] = None) -> str:
        """Copy the files of ``ckpt_dir`` (those ``selector`` accepts, by path relative to it) into a new
        checkpoint; its storage id. ``shard=False``: the chief only. ``shard=True``: every rank, each
        with its folder or None; a folder several ranks share is copied once; the same file from
        two different folders is an error."""
        dist = self._run.dist
        if not shard:
            if dist.rank != 0:
                raise RuntimeError(f"cannot call .upload(shard=False) from non-chief worker (rank={dist.rank})")
            if ckpt_dir is None:
                raise RuntimeError("cannot call .upload(ckpt_dir=None, shard=False), which would result in doing "
                                   "nothing at all")
        source = Path(os.fspath(ckpt_dir)) if ckpt_dir is not None else None
        files = _files(source, selector) if source is not None else []
        if shard and dist.size > 1:
            identity = _identity(source) if source is not None else None
            identities = dist.allgather(identity)
            if identity is not None and identities.index(identity) != dist.rank:
                files = []  # a lower rank copies this shared folder
            owners: Dict[str, int] = {}
            for rank, rank_files in enumerate(dist.allgather(files)):
                for name in rank_files:
                    if owners.setdefault(name, rank) != rank:
                        raise RuntimeError(f"refusing to upload with file conflicts: {name} from ranks "
                                           f"{owners[name]} and {rank}")
        with self.store_path(metadata, shard=shard) as (path, storage_id):
            for name in files:
                assert source is not None
                target = path / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / name, target)
        return storage_id

    # ---- reading ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def restore_path(self, storage_id: str, download_mode: DownloadMode = DownloadMode.LocalWorkersShareDownload,
                     *, selector: Optional[Selector] = None) -> Iterator[Path]:
        """The published folder of ``storage_id`` (see the module docstring); ``selector`` is accepted
        and has nothing to filter (every file is already there)."""
        DownloadMode(download_mode)
        yield self._published(storage_id)

    def download(self, storage_id: str, ckpt_dir: Union[str, "os.PathLike[str]"],
                 download_mode: DownloadMode = DownloadMode.LocalWorkersShareDownload, *,
                 selector: Optional[Selector] = None) -> None:
        """Copy the checkpoint's files (those ``selector`` accepts) into ``ckpt_dir`` (created)."""
        mode = DownloadMode(download_mode)
        source = self._published(storage_id)
        dist = self._run.dist
        shared = mode is DownloadMode.LocalWorkersShareDownload and dist.local_size > 1
        if shared:
            wanted = dist.allgather_local(selector is not None)
            if any(wanted):
                raise RuntimeError("download(selector=...) with LocalWorkersShareDownload and several ranks on a "
                                   "node: use DownloadMode.NoSharedDownload to filter each rank's copy")
        error: Optional[BaseException] = None
        if not shared or dist.local_rank == 0:
            try:
                _copy_checkpoint(source, Path(os.fspath(ckpt_dir)), selector)
            except BaseException as exc:
                if not shared:
                    raise
                error = exc
        if shared:
            problem = dist.broadcast_local(None if error is None else repr(error))
            if error is not None:
                raise error
            if problem is not None:
                raise RuntimeError(f"the local chief's download of {storage_id} failed: {problem}")

    def get_metadata(self, storage_id: str) -> Dict[str, Any]:
        """The metadata the checkpoint was saved with ({} when it has none)."""
        folder = self._published(storage_id)
        if (folder / METADATA_FILE).exists():
            return read_json(folder / METADATA_FILE)
        return {}

    def delete(self, storage_id: str) -> None:
        """Deletes nothing (see the module docstring); ``ValueError`` for an id that is not one."""
        checkpoint_path(storage_id, self._run.layout)
        log.info(f"delete({storage_id}): kept; hpo-slurm removes checkpoints following checkpoint_storage")

    # ---- helpers ------------------------------------------------------------------------------
    def _storage_id(self, length: int) -> str:
        return storage_id_at(self._run.spec.trial_id, length, self._run.layout)

    def _published(self, storage_id: str) -> Path:
        return published_checkpoint(storage_id, self._run.layout)


def _steps_completed(metadata: Dict[str, Any]) -> int:
    if "steps_completed" not in metadata:
        raise ValueError("metadata for reported checkpoints, in the current implementation, requires a "
                         "'steps_completed' item, which has not been provided")
    return as_length(metadata["steps_completed"])


def merge_metadata(all_metadata: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The union of every rank's metadata, dicts merged key by key; ``RuntimeError`` naming the keys
    two ranks gave different values."""
    merged: Dict[str, Any] = {}
    conflicts: List[str] = []

    def merge(into: Dict[str, Any], new: Dict[str, Any], prefix: str) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key, {}), dict):
                merge(into.setdefault(key, {}), value, f"{prefix}/{key}")
            elif key in into and into[key] != value:
                conflicts.append(f"{prefix}/{key}")
            else:
                into[key] = value

    for metadata in all_metadata:
        merge(merged, metadata or {}, "")
    if conflicts:
        raise RuntimeError(f"refusing to upload with metadata conflicts: {sorted(set(conflicts))}")
    return merged


def _write_metadata(path: Path, metadata: Dict[str, Any]) -> None:
    with open(path / METADATA_FILE, "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2)


def _identity(folder: Path) -> Tuple[int, int]:
    stat = folder.stat()
    return stat.st_dev, stat.st_ino


def _files(folder: Path, selector: Optional[Selector]) -> List[str]:
    """The files under ``folder`` (relative POSIX paths, sorted) that ``selector`` accepts."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint folder {folder}")
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            relative = (Path(root) / name).relative_to(folder).as_posix()
            if selector is None or selector(relative):
                found.append(relative)
    return sorted(found)


def _copy_checkpoint(source: Path, target: Path, selector: Optional[Selector]) -> None:
    """The checkpoint's files but hpo-slurm's own record, into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in _files(source, selector):
        if name == CHECKPOINT_META:
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)
