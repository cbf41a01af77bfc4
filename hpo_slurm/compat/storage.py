"""Determined storage ids <-> hpo-slurm checkpoint folders.

Determined names a checkpoint by a storage id (a string) and keeps its files in checkpoint storage.
On hpo-slurm a checkpoint is a published folder of the experiment,
``trials/<trial id>/checkpoints/length-<length>/``, and its storage id is that folder's place:

    trials/12/checkpoints/length-000000250/   <->   "trial-12-length-000000250"

The id names only the trial and the length, so it is stable: it does not change when the trial is
resumed in another run, promoted to a higher rung, or read by a PBT child (whose
``ClusterInfo.latest_checkpoint`` is its parent's id). A later checkpoint at the same length replaces
the folder, and the id then names the newer one. Ids hold no ``/`` (scripts use them as file names).

``checkpoint_path`` never leaves the experiment folder: an id is accepted only in the form above, and
the folder it names must resolve (symlinks followed) inside the experiment folder, else ``ValueError``.
"""

from __future__ import annotations

import re
from pathlib import Path

from hpo_slurm.core.layout import CHECKPOINT_META, ExperimentLayout, checkpoint_name

METADATA_FILE = "metadata.json"  # Determined's name for the metadata file inside a checkpoint
_ID = re.compile(r"^trial-([0-9]{1,18})-(length-[0-9]{1,18})$")
_FOLDER = re.compile(r"^length-[0-9]{1,18}$")


def storage_id_of(path: Path, layout: ExperimentLayout) -> str:
    """The storage id of the checkpoint folder ``path`` (``trials/<id>/checkpoints/length-<n>`` of
    ``layout``'s experiment). ``ValueError`` when ``path`` is not such a folder's place."""
    root = layout.dir.resolve()
    resolved = Path(path).absolute().resolve()
    try:
        parts = resolved.relative_to(root).parts
    except ValueError:
        raise ValueError(f"{path} is not a checkpoint of the experiment in {layout.dir}") from None
    if (len(parts) != 4 or parts[0] != "trials" or not parts[1].isdigit() or parts[2] != "checkpoints"
            or not _FOLDER.fullmatch(parts[3])):
        raise ValueError(f"{path} is not a checkpoint folder (trials/<id>/checkpoints/length-<n>) of {layout.dir}")
    return f"trial-{int(parts[1])}-{parts[3]}"


def checkpoint_path(storage_id: str, layout: ExperimentLayout) -> Path:
    """The folder of the checkpoint ``storage_id`` (which may not exist: the caller checks).
    ``ValueError`` when ``storage_id`` is not an hpo-slurm storage id, or when its folder resolves
    outside the experiment folder (a symlink pointing out of it)."""
    if not isinstance(storage_id, str):
        raise ValueError(f"a storage id is a string, got {type(storage_id).__name__}")
    found = _ID.fullmatch(storage_id)
    if not found:
        raise ValueError(f"{storage_id!r} is not an hpo-slurm storage id (trial-<id>-length-<n>)")
    trial_id, name = int(found.group(1)), found.group(2)
    folder = layout.checkpoints_dir(trial_id) / name
    root = layout.dir.resolve()
    resolved = folder.resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(f"storage id {storage_id!r} resolves to {resolved}, outside the experiment folder {root}")
    return folder


def storage_id_at(trial_id: int, length: int, layout: ExperimentLayout) -> str:
    """The storage id trial ``trial_id``'s checkpoint at ``length`` has (once it is published)."""
    return storage_id_of(layout.checkpoints_dir(trial_id) / checkpoint_name(length), layout)


def published_checkpoint(storage_id: str, layout: ExperimentLayout) -> Path:
    """The folder of the published checkpoint ``storage_id``: ``checkpoint_path``, and
    ``FileNotFoundError`` when no published checkpoint is there."""
    folder = checkpoint_path(storage_id, layout)
    if not (folder / CHECKPOINT_META).is_file():
        raise FileNotFoundError(f"no published checkpoint {storage_id} (looked for {folder})")
    return folder
