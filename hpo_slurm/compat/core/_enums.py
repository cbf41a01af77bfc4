"""The enums of Determined's Core API, with Determined's names and values."""

from __future__ import annotations

import enum


class PreemptMode(enum.Enum):
    """Who calls ``should_preempt()``: every rank in step, the chief deciding (``WorkersAskChief``);
    the chief alone (``ChiefOnly``); every rank for itself (``WorkersAskMaster``)."""

    WorkersAskChief = "WORKERS_ASK_CHIEF"
    ChiefOnly = "CHIEF_ONLY"
    WorkersAskMaster = "WORKERS_ASK_MASTER"


class EarlyExitReason(enum.Enum):
    """Why a trial ends early: ``INVALID_HP`` makes hpo-slurm replace the trial's hyperparameters."""

    INVALID_HP = "EXITED_REASON_INVALID_HP"
    USER_REQUESTED_STOP = "EXITED_REASON_USER_REQUESTED_STOP"


class TensorboardMode(enum.Enum):
    """Accepted for compatibility; hpo-slurm writes no TensorBoard files for a trial itself."""

    AUTO = "AUTO"
    MANUAL = "MANUAL"


class SearcherMode(enum.Enum):
    """Who calls ``searcher.operations()``: every rank in step (``WorkersAskChief``), or the chief alone."""

    WorkersAskChief = "WORKERS_ASK_CHIEF"
    ChiefOnly = "CHEIF_ONLY"  # Determined's spelling


class DownloadMode(enum.Enum):
    """How ranks of one node share a ``download()``: the local chief copies, the others wait
    (``LocalWorkersShareDownload``), or each rank copies for itself (``NoSharedDownload``)."""

    LocalWorkersShareDownload = "LOCAL_WORKERS_SHARE_DOWNLOAD"
    NoSharedDownload = "NO_SHARED_DOWNLOAD"


class Unit(enum.Enum):
    """The unit of ``searcher.max_length`` in the experiment config."""

    EPOCHS = "EPOCHS"
    RECORDS = "RECORDS"
    BATCHES = "BATCHES"
