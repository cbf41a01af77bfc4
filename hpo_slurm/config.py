"""The experiment config: Determined's experiment config plus a ``slurm:`` section.

``load_config(path)`` reads a YAML file into frozen, typed objects, or raises ``ConfigError`` naming the
file, the key path and what was expected. Nothing here touches the filesystem beyond reading that file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .space import Nested

LENGTH_UNITS = ("batches", "records", "epochs")
SEARCHER_NAMES = ("single", "grid", "random", "adaptive_asha", "async_halving", "pbt")


@dataclass(frozen=True)
class SearcherConfig:
    """Every searcher's settings; fields that a searcher does not use keep their defaults.

    Lengths (``max_length``, ``length_per_round``) are integers in ``unit``.
    """

    name: str
    metric: str
    smaller_is_better: bool = True
    max_length: int = 1
    unit: str = "batches"
    max_trials: int = 1
    max_concurrent_trials: int = 16  # 0 means no cap
    # adaptive_asha and async_halving
    mode: str = "standard"  # adaptive_asha: aggressive | standard | conservative
    divisor: float = 4.0
    max_rungs: int = 5  # adaptive_asha
    bracket_rungs: Optional[Tuple[int, ...]] = None  # adaptive_asha
    num_rungs: int = 5  # async_halving
    stop_once: bool = False
    # pbt
    population_size: int = 0
    num_rounds: int = 0
    length_per_round: int = 0
    truncate_fraction: float = 0.0
    resample_probability: float = 0.0
    perturb_factor: float = 0.0


@dataclass(frozen=True)
class SlurmConfig:
    """sbatch settings. ``time_minutes`` is the job time limit; None leaves it to the partition."""

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time_minutes: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None  # as sbatch takes it: "16G", "4000M"
    constraint: Optional[str] = None
    gpu_type: Optional[str] = None  # "a100" -> --gpus-per-node=a100:N
    extra_args: Tuple[Tuple[str, str], ...] = ()  # extra sbatch options, name without dashes -> value
    setup: Tuple[str, ...] = ()  # shell lines run before the trial: module load ..., conda activate ...
    signal_delay_s: int = 120  # warning signal this long before the time limit
    poll_interval_s: float = 10.0  # at most one squeue/sacct call this often
    array_template: Optional[str] = None  # a copy of templates/sbatch/array.sbatch to use instead


@dataclass(frozen=True)
class CheckpointStorage:
    save_trial_best: int = 1
    save_trial_latest: int = 1
    save_experiment_best: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    source: str  # the file it came from, for messages
    name: str
    entrypoint: str  # a shell command ("python3 train.py") or "module:function"
    hyperparameters: Nested
    searcher: SearcherConfig
    description: str = ""
    max_restarts: int = 5
    seed: int = 0  # reproducibility.experiment_seed
    slots_per_trial: int = 1  # GPUs per trial
    records_per_epoch: int = 0
    checkpoint_storage: CheckpointStorage = CheckpointStorage()
    slurm: SlurmConfig = SlurmConfig()
    data: Dict[str, Any] = field(default_factory=dict)  # Determined's free-form `data:`, handed to trials
    raw: Dict[str, Any] = field(default_factory=dict)  # the YAML mapping as read


def load_config(path: str) -> ExperimentConfig:
    """Read and validate a YAML experiment config. Raises ConfigError on any bad input."""
    raise NotImplementedError
