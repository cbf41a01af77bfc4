"""Creating and finding experiment folders. ``create`` publishes a complete folder by rename, so a
failed launch leaves nothing half-created.

An experiment's name is any text (as in Determined: 'vision transformer adaptive'); its folder is the
name itself when that is a safe folder name, else a safe spelling of it (``folder_for``), with -2, -3,
... when another experiment already has that folder. The name is kept in the database, and ``find``
takes either.

Who may read an experiment is decided when it is created (``fsio.Access``): its folder is 0700 and
the files ``create`` puts in it (config, database, driver log and lock, the model folder's copy) are
0600, whatever the umask; with ``share_with_group: true`` in the config, 0750 and 0640. A root folder
that ``create`` has to make gets the experiment's folder mode; an existing one is left as it is.
What jobs and trials write later is reachable only through the experiment folder.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from hpo_slurm.config.schema import ExperimentConfig, check_display_name, check_name, is_folder_name, safe_spelling
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.fsio import PRIVATE, Access, access_for, create_empty, set_mode
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.experiment.store import Store

DEFAULT_ROOT = "hpo-runs"
ALWAYS_IGNORED = (".git", "__pycache__", "*.pyc", ".hpo-*", "hpo-runs")


def resolve_root(option: Optional[str]) -> Path:
    """The folder holding experiments: ``--root``, else $HPO_SLURM_ROOT, else ./hpo-runs. A UserError
    naming where it came from when it exists and is not a folder."""
    if option:
        path, source = Path(option), "--root"
    elif os.environ.get("HPO_SLURM_ROOT"):
        path, source = Path(os.environ["HPO_SLURM_ROOT"]), "$HPO_SLURM_ROOT"
    else:
        path, source = Path(DEFAULT_ROOT), "the default root"
    if path.exists() and not path.is_dir():
        raise UserError(f"{source} {path}: not a folder")
    return path


def make_root(root: Path, access: Access = PRIVATE) -> None:
    """Create the experiments folder if needed, with mode ``access.folder`` (folders above it that are
    missing too get the umask's); an existing one is left as it is. A UserError when the file system
    refuses."""
    try:
        try:
            os.makedirs(root, mode=access.folder)  # the mode is the last folder's only
        except FileExistsError:
            if root.is_dir():
                return
            raise
        set_mode(root, access.folder)
    except OSError as exc:
        raise UserError(f"cannot create the experiments folder {root}: {exc.strerror or exc}") from None


def find(root: Path, name: str) -> ExperimentLayout:
    """The experiment under ``root`` whose folder is ``name`` or, failing that, whose name is ``name``;
    a UserError when there is none, or when several share that name (it lists their folders)."""
    if is_folder_name(name):
        layout = ExperimentLayout(Path(root) / name)
        if layout.database.is_file():
            return layout
    named = [layout for layout in list_all(root) if display_name(layout) == name]
    if len(named) == 1:
        return named[0]
    if named:
        raise UserError(f"{len(named)} experiments in {root} are named {name!r}: name one by its folder "
                        f"({', '.join(layout.name for layout in named)})")
    raise UserError(f"no experiment named {name!r} in {root}")


def display_name(layout: ExperimentLayout) -> Optional[str]:
    """The name the experiment was launched with, or None when its database cannot be read."""
    if not layout.database.is_file():
        return None
    try:
        with Store.reading(layout.database) as store:
            return store.experiment_name()
    except UserError:  # unreadable: not the experiment asked for
        return None


def name_and_folder(root: Path, option: Optional[str], config: ExperimentConfig) -> Tuple[str, str]:
    """(the experiment's name, its folder under ``root``) for a launch: ``--name`` when given (a
    UserError when it cannot name an experiment), else the config's name (checked as it was read)."""
    name = check_display_name(option, "--name", "") if option else config.name
    return name, folder_for(root, name)


def folder_for(root: Path, name: str) -> str:
    """The folder an experiment named ``name`` gets under ``root``: ``name`` when it is a safe folder
    name, else its safe spelling; with -2, -3, ... after it while another experiment, launched under
    another name, has that folder. An experiment of the same name keeps its folder, so launching it
    twice is refused (``create``)."""
    base = name if is_folder_name(name) else safe_spelling(name)
    for number in range(1, 10_000):
        candidate = base if number == 1 else f"{base[:94]}-{number}"
        existing = Path(root) / candidate
        if not existing.exists() or display_name(ExperimentLayout(existing)) == name:
            return candidate
    raise UserError(f"too many experiments under {root} are spelled {base!r} as folders")


def list_all(root: Path) -> List[ExperimentLayout]:
    root = Path(root)
    if not root.is_dir():
        return []
    return [ExperimentLayout(p) for p in sorted(root.iterdir()) if (p / "experiment.db").is_file()]


def create(
    config: ExperimentConfig,
    config_path: Path,
    root: Path,
    name: str,
    executor: str,
    context: Optional[Path] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    warn: Optional[Callable[[str], None]] = None,
    *,
    config_text: Optional[str] = None,
    copy_model: bool = True,
    created_at: Optional[float] = None,
    display: Optional[str] = None,
) -> ExperimentLayout:
    """Make ``root/name`` with the config, a copy of the model folder and a new database, published by
    rename: on any failure nothing is left under ``root``. ``progress(copied_bytes, total_bytes)`` is
    called as the model folder is copied; ``warn(message)`` hears about what the copy left out.

    ``config_text`` is written as config.yaml (and kept in the database) instead of the file at
    ``config_path``; ``copy_model=False`` leaves out the model folder (a simulated search runs no
    code); ``created_at`` is the experiment's creation time (default: now); ``display`` is the name it was
    launched with when that is not its folder ``name`` (see ``folder_for``)."""
    root = Path(root)
    final = root / name
    check_name(name, "experiment folder", "")
    if final.exists():
        shown = display or name
        raise UserError(f"experiment {shown!r} already exists in {root}: use `hpo-slurm resume {name}` or another --name")
    context = Path(context) if context else Path(config_path).resolve().parent
    if copy_model and not context.is_dir():
        raise UserError(f"--context {context}: not a folder")
    access = access_for(config.share_with_group)
    make_root(root, access)
    root_mode = stat.S_IMODE(os.stat(root).st_mode)
    if access.folder & stat.S_IXGRP and not root_mode & stat.S_IXGRP and warn:
        warn(f"share_with_group: your group cannot enter {root} (mode {root_mode:04o}); "
             f"`chmod g+x {root}` lets it reach the experiment")
    staging = Path(tempfile.mkdtemp(prefix=f".hpo-{name}-", dir=root))  # 0700 until it is complete
    try:
        layout = ExperimentLayout(staging)
        for path in (layout.config, layout.driver_log, layout.lock):
            create_empty(path, access.file)  # opened later, never replaced: each keeps its mode
        if config_text is None:
            shutil.copyfile(config_path, layout.config)
            config_text = Path(config_path).read_text()
        else:
            layout.config.write_text(config_text)
        if copy_model:
            special = copy_context(context, layout.context, exclude=[root.resolve()], progress=progress)
            limit_modes(layout.context, access)
            if special and warn:
                shown = ", ".join(special[:5]) + (f" and {len(special) - 5} more" if len(special) > 5 else "")
                warn(f"the model folder copy leaves out what is not a file, folder or link: {shown}")
        create_empty(layout.database, access.file)  # SQLite gives its -wal and -shm files the same mode
        store = Store.open(layout.database)
        store.create_experiment(
            name=display or name, uid=uuid.uuid4().hex, state="RUNNING", searcher=config.searcher.name,
            executor=executor, config=config_text, created_at=time.time() if created_at is None else created_at,
            ended_at=None, message=None,
        )
        store.close()
        set_mode(staging, access.folder)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExperimentLayout(final)


def copy_context(
    source: Path, target: Path, exclude: List[Path], progress: Optional[Callable[[int, int], None]] = None,
) -> List[str]:
    """Copy the model folder, leaving out ``.hpoignore`` patterns, VCS folders and the runs root, and
    anything that is not a file, folder or symbolic link (pipes, sockets, devices): those are returned,
    relative to ``source``."""
    patterns = list(ALWAYS_IGNORED) + _read_ignore_file(source / ".hpoignore")
    excluded = {p.resolve() for p in exclude}
    special: List[str] = []

    def ignore(directory: str, names: List[str]) -> List[str]:
        skipped = []
        for name in names:
            full = Path(directory, name)
            relative = full.relative_to(source).as_posix()
            if full.resolve() in excluded or any(
                fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative, pattern.strip("/"))
                for pattern in patterns
            ):
                skipped.append(name)
            elif not (full.is_symlink() or full.is_dir() or full.is_file()):
                skipped.append(name)
                if relative not in special:
                    special.append(relative)
        return skipped

    if progress is None:
        shutil.copytree(source, target, ignore=ignore, symlinks=True)
        return special
    total = sum(path.stat().st_size for path in _kept_files(source, ignore))
    copied = 0

    def copy(src: str, dst: str) -> None:
        nonlocal copied
        shutil.copy2(src, dst)
        copied += os.path.getsize(src)
        progress(copied, total)

    shutil.copytree(source, target, ignore=ignore, symlinks=True, copy_function=copy)
    return special


def limit_modes(folder: Path, access: Access) -> None:
    """Take from ``folder`` and everything in it the permissions ``access`` does not give (symbolic
    links have none of their own)."""
    set_mode(folder, access.limit(os.stat(folder).st_mode))
    for directory, folders, files in os.walk(folder):
        for entry in folders + files:
            path = Path(directory, entry)
            if not path.is_symlink():
                set_mode(path, access.limit(path.stat().st_mode))


def _kept_files(source: Path, ignore: Callable[[str, List[str]], List[str]]) -> List[Path]:
    kept = []
    for directory, folders, files in os.walk(source):
        skipped = set(ignore(directory, folders + files))
        folders[:] = [f for f in folders if f not in skipped]
        kept.extend(Path(directory, f) for f in files if f not in skipped and Path(directory, f).is_file())
    return kept


def _read_ignore_file(path: Path) -> List[str]:
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


