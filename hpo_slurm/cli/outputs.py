"""Where a command writes its output (``--out``), checked before anything is drawn or written, so a
mistake is one UserError line instead of a traceback and no folder appears where none was meant."""

from __future__ import annotations

from pathlib import Path

from hpo_slurm.core.errors import UserError


def output_file(path: Path, option: str = "--out") -> Path:
    """``path`` as a file to (over)write: its folder must already exist and it must not be a folder."""
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{option} {path}: {folder} {what}")
    return path


def output_dir(path: Path, option: str = "--out") -> Path:
    """``path`` as a folder to write files into, created (with its parents) when missing."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot create it ({exc.strerror or exc})") from None
    return path


def write_failed(path: Path, exc: OSError, option: str = "--out") -> UserError:
    """The one-line error for a write the file system refused."""
    return UserError(f"{option} {path}: cannot write it ({exc.strerror or exc})")
