"""Small file operations that stay correct on shared filesystems: publish by rename, append whole lines,
and create what an experiment holds with the modes that decide who may read it.

Every file written by ``write_json_atomic``, ``write_bytes_atomic`` and ``append_line`` that did not
exist is its owner's only (``OWNER_ONLY``, 0600), whatever the umask: run specs and results,
manifests, sweep array scripts, batch pickles, metrics and attempt lines. An experiment folder and the files
hpo-slurm puts in it when it is created take the experiment's ``Access`` (``experiment.folder``).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OWNER_ONLY = 0o600


@dataclass(frozen=True)
class Access:
    """Who may read an experiment: the mode of its folder (and of a root folder hpo-slurm makes for
    it) and of the files hpo-slurm creates in it. ``PRIVATE`` (0700, 0600) unless the config says
    ``share_with_group: true`` (``GROUP_READABLE``: 0750, 0640: the group reads, only the owner writes)."""

    folder: int
    file: int

    def limit(self, mode: int) -> int:
        """``mode`` (a copied file's or folder's) without the permissions this access does not give:
        an executable script stays executable for whoever may read it."""
        return stat.S_IMODE(mode) & self.folder


PRIVATE = Access(folder=0o700, file=0o600)
GROUP_READABLE = Access(folder=0o750, file=0o640)


def access_for(share_with_group: bool) -> Access:
    """The access a config's ``share_with_group`` asks for."""
    return GROUP_READABLE if share_with_group else PRIVATE


def set_mode(path: Path, mode: int) -> None:
    """Give ``path`` exactly the permission bits ``mode``, keeping a folder's set-group-id bit (its
    new files and folders then keep the folder's group, as a group-shared root wants)."""
    kept = os.stat(path).st_mode & stat.S_ISGID
    os.chmod(path, mode | kept)


def create_empty(path: Path, mode: int) -> None:
    """Create the file ``path``, empty, with exactly ``mode`` (FileExistsError if it exists). Whoever
    opens it later without truncating or replacing it keeps that mode: SQLite gives its -wal, -shm
    and journal files the database's."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` so readers see the old file or the whole new one. ``durable``
    also syncs it to disk first, for anything a job or a later driver reads (specs, results, manifests);
    only files that are rewritten if lost skip that cost. Encodes with the C encoder in one call
    (``json.dump`` to a file runs the pure-Python one)."""
    write_bytes_atomic(path, json.dumps(data, sort_keys=True).encode("utf-8"), durable)


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Publish ``data`` at ``path`` by rename (readers never see a partial file); ``durable`` syncs
    it to disk before the rename. A write that fails (a full disk) leaves no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY), "wb") as handle:
            os.fchmod(handle.fileno(), OWNER_ONLY)  # one left by an earlier process of this pid keeps its mode
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def append_line(path: Path, line: str) -> None:
    """Append one line. If an earlier writer died mid-line, start on a fresh line so only that torn
    line is lost, never this one."""
    path = Path(path)
    data = line.encode("utf-8") + b"\n"
    with open(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, OWNER_ONLY), "ab+") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
