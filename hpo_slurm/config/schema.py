"""The experiment config: Determined's experiment config plus a ``slurm:`` section.

``load_config(path)`` reads a YAML file into frozen, typed objects, or raises ``ConfigError`` naming the
file, the key path and what was expected. ``parse_config(data, source)`` does the same for a mapping
already in memory. Keys Determined knows but hpo-slurm does not use are accepted; each adds one line
to ``ExperimentConfig.warnings`` for the CLI to print. Any other key is an error with a did-you-mean.
Nothing here touches the filesystem beyond reading that file (and checking ``slurm.array_template``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from hpo_slurm.config import checks, hyperparameters, json_values, yaml12
from hpo_slurm.config.sampler_section import SAMPLING_SEARCHERS, SamplerConfig, check_population, parse_sampler
from hpo_slurm.config.pool_section import PoolSettings
from hpo_slurm.config.slurm_section import DEFAULT_POLL_INTERVAL_S, DEFAULT_SIGNAL_DELAY_S, parse_slurm
from hpo_slurm.config.checks import LENGTH_UNITS, MAX_LENGTH, MAX_POWER, MAX_RUNGS, MAX_TRIALS, Checker, Length, show
from hpo_slurm.core.errors import ConfigError
from hpo_slurm.core.placement import PlacementError, place
from hpo_slurm.config.space import Nested
from hpo_slurm.config.training_code import check_training_code_keys

SEARCHER_NAMES = ("single", "grid", "random", "adaptive_asha", "async_halving", "pbt")
# searchers that never stop a trial early: searcher.max_length may be left out (Determined 0.38)
OPEN_ENDED_SEARCHERS = ("single", "grid", "random")
NO_TARGET = 0  # a Train's, run's and RunSpec's target without max_length: train until the trial's code stops


@dataclass(frozen=True)
class SearcherConfig:
    """Every searcher's settings; fields that a searcher does not use keep their defaults.

    Lengths (``max_length``, ``length_per_round``) are integers in ``unit``. ``max_length`` is None
    when a search of OPEN_ENDED_SEARCHERS leaves it out (``open_ended``): each trial then trains as
    long as its own code decides, and its last validation is its result.
    """

    name: str
    metric: str
    smaller_is_better: bool = True
    max_length: Optional[int] = 1  # None: open-ended (single, grid and random only)
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
    # random, adaptive_asha, async_halving and pbt: how new hyperparameters are drawn
    sampler: SamplerConfig = SamplerConfig()

    @property
    def open_ended(self) -> bool:
        """No max_length: trials train until their code stops (runs target NO_TARGET)."""
        return self.max_length is None

    @property
    def train_length(self) -> int:
        """The length single, grid and random train every trial to: max_length, or NO_TARGET."""
        return NO_TARGET if self.max_length is None else self.max_length


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
    # GPUs per node of the partition (slurm.gpus_per_node or Determined's slurm.slots_per_node); None:
    # not known, so a trial of resources.slots_per_trial GPUs must fit on one node
    gpus_per_node: Optional[int] = None
    # extra sbatch options, name without dashes -> value; "" is a bare flag (--exclusive)
    extra_args: Tuple[Tuple[str, str], ...] = ()
    setup: Tuple[str, ...] = ()  # shell lines run before the trial: module load ..., conda activate ...
    signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S  # warning signal this long before the time limit
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S  # at most one squeue/sacct call this often
    array_template: Optional[str] = None  # a copy of templates/sbatch/array.sbatch to use instead
    pool: Optional[PoolSettings] = None  # worker jobs that run one run after another (config.pool_section)


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
    slots_per_trial: int = 1  # GPUs per trial; more than 1 runs one rank per GPU (core.placement)
    records_per_epoch: int = 0
    checkpoint_storage: CheckpointStorage = CheckpointStorage()
    slurm: SlurmConfig = SlurmConfig()
    data: Dict[str, Any] = field(default_factory=dict)  # Determined's free-form `data:`, handed to trials
    raw: Dict[str, Any] = field(default_factory=dict)  # the YAML mapping as read
    # Determined's training-loop hints, for the trial: (amount, unit) or None when not set / zero
    min_validation_period: Optional[Length] = None
    min_checkpoint_period: Optional[Length] = None
    perform_initial_validation: bool = False
    scheduling_unit: int = 100  # batches between a Determined PyTorchTrial's training reports
    share_with_group: bool = False  # the experiment's folder and files group-readable (core.fsio.Access)
    # one line per accepted-but-ignored key: "search.yaml: bind_mounts: not used by hpo-slurm, ignored"
    warnings: Tuple[str, ...] = ()

    def uncapped(self) -> "ExperimentConfig":
        """This config with no cap on trials in flight (a sweep's searcher creates every trial at once:
        the same trials, in the same order, as a capped search creates one by one)."""
        return dataclasses.replace(self, searcher=dataclasses.replace(self.searcher, max_concurrent_trials=0))


# Top-level keys, and Determined's keys that hpo-slurm accepts and ignores (with a hint, or None).
TOP_KEYS = ("name", "description", "entrypoint", "hyperparameters", "searcher", "max_restarts",
            "reproducibility", "resources", "checkpoint_storage", "records_per_epoch", "data",
            "min_validation_period", "min_checkpoint_period", "perform_initial_validation", "scheduling_unit",
            "checkpoint_policy", "optimizations", "slurm", "share_with_group")
IGNORED_TOP_KEYS = {
    "bind_mounts": "Slurm jobs see the cluster's filesystems as they are",
    "environment": "load modules, activate environments and export variables in slurm.setup",
    "workspace": None, "project": None, "labels": None, "debug": None, "internal": None,
    "data_layer": None, "integrations": None, "log_policies": None, "retention_policy": None,
    "profiling": None, "security": None,
    "tensorboard_storage": None, "pbs": None,
    "preemption_timeout": "preempted jobs get slurm.signal_delay seconds of warning",
}
RESOURCES_KEYS = ("slots_per_trial",)
IGNORED_RESOURCES_KEYS = {
    "resource_pool": "Slurm partitions are set with slurm.partition",
    "max_slots": "cap running trials with searcher.max_concurrent_trials",
    "priority": "use slurm.qos", "weight": None, "shm_size": None, "devices": None,
    "native_parallel": None, "agent_label": None, "slots": None, "is_single_node": None,
}
CHECKPOINT_KEYS = ("save_trial_best", "save_trial_latest", "save_experiment_best")
STORAGE_KEYS = ("type", "host_path", "storage_path", "container_path", "propagation", "checkpoint_path",
                "tensorboard_path", "bucket", "prefix", "access_key", "secret_key", "endpoint_url",
                "connection_string", "container", "account_url", "credential", "user", "hdfs_url",
                "hdfs_path")

_COMMON = ("name", "metric", "smaller_is_better", "max_length", "time_metric", "max_time",
           "max_concurrent_trials")
SEARCHER_KEYS = {
    "single": _COMMON + ("max_trials",),
    "random": _COMMON + ("max_trials", "sampler", "tpe"),
    "grid": _COMMON + ("max_trials",),
    "adaptive_asha": _COMMON + ("max_trials", "mode", "divisor", "max_rungs", "bracket_rungs", "stop_once",
                                "sampler", "tpe"),
    "async_halving": _COMMON + ("max_trials", "num_rungs", "divisor", "stop_once", "sampler", "tpe"),
    "pbt": ("name", "metric", "smaller_is_better", "max_concurrent_trials", "population_size",
            "num_rounds", "length_per_round", "replace_function", "explore_function", "sampler", "tpe"),
}
IGNORED_SEARCHER_KEYS = {
    "source_trial_id": "trials start from scratch", "source_checkpoint_uuid": "trials start from scratch",
    "budget": None, "train_stragglers": None,
}
_SEARCHER_ALIASES = {"adaptive": "adaptive_asha", "adaptive_simple": "adaptive_asha", "asha": "adaptive_asha",
                     "hyperband": "adaptive_asha", "sync_halving": "async_halving"}
ASHA_MODES = ("aggressive", "standard", "conservative")
MIN_DIVISOR = 1.001
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_NAME_RULE = "a name of letters, digits, '.', '_' and '-' (1-100 characters, not starting with '.' or '-')"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DISPLAY_NAME_MAX = 256


def is_folder_name(name: Any) -> bool:
    """Whether ``name`` is safe as a folder name as it is (letters, digits, '.', '_', '-')."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def check_display_name(name: Any, source: str, path: str = "name") -> str:
    """Return ``name`` if it can name an experiment (any text, as Determined takes: spaces, slashes and
    all, but no control characters, at most DISPLAY_NAME_MAX characters), else raise ConfigError. The
    experiment's folder gets a safe spelling of it (experiment.folder.folder_for)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(source, path, f"expected the experiment's name as text, got {show(name)}")
    if _CONTROL.search(name):
        raise ConfigError(source, path, f"expected a name without control characters (newlines, tabs), got {show(name)}")
    if len(name) > DISPLAY_NAME_MAX:
        raise ConfigError(source, path, f"expected at most {DISPLAY_NAME_MAX} characters, got {len(name)}")
    return name


def _spelled(name: str) -> str:
    """Runs of characters a folder name cannot hold become '_', no leading '.' or '-', at most 100."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".-")[:100]


def safe_spelling(name: str) -> str:
    """``name`` as a folder name (``_spelled``); "experiment" when nothing is left."""
    return _spelled(name) or "experiment"


def check_name(name: Any, source: str, path: str = "name") -> str:
    """Return ``name`` if it is safe as a directory name, else raise ConfigError(source, path, ...)
    suggesting a safe spelling. The CLI calls it for ``--name``."""
    if is_folder_name(name):
        return name
    safe = _spelled(name) if isinstance(name, str) else ""
    hint = f"; try {safe!r}" if safe else ""
    raise ConfigError(source, path, f"expected {_NAME_RULE}, got {show(name)}{hint}")


def load_config(path: "str | os.PathLike[str]") -> ExperimentConfig:
    """Read and validate a YAML experiment config. Raises ConfigError on any bad input, including a
    missing or unreadable file and YAML syntax errors (with the line number). ``source`` is the path
    as given; relative paths inside the config resolve against the file's folder."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError(source, "", "is a directory, expected a YAML file") from None
    except PermissionError:
        raise ConfigError(source, "", "cannot read the file: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "cannot read the file: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    data = yaml12.yaml_load(text, source)
    if data is None:
        raise ConfigError(source, "", "the file is empty; expected a mapping of config keys")
    return parse_config(data, source, base_dir=os.path.dirname(os.path.abspath(source)))


def parse_config(data: Any, source: str, base_dir: Optional[str] = None) -> ExperimentConfig:
    """Validate an experiment config already read into ``data``. ``source`` names it in messages and
    gives the default experiment name (its file stem); ``base_dir`` (default: the current folder)
    is where relative paths resolve. Raises ConfigError on any bad input."""
    ck = Checker(source)
    if not isinstance(data, dict):
        ck.fail("", f"expected a mapping of config keys at the top level, got {show(data)}")
    top = ck.mapping(data, "")
    ck.check_keys(top, "", TOP_KEYS, IGNORED_TOP_KEYS)

    name = top.get("name")
    if name is None:
        name = os.path.splitext(os.path.basename(source))[0]
    name = check_display_name(name, source)
    description = top.get("description")
    description = "" if description is None else ck.string(description, "description", multiline=True)
    entrypoint = _entrypoint(ck, ck.required(
        top, "entrypoint", "", "the command that trains one trial, e.g. entrypoint: python3 train.py"))
    space = hyperparameters.parse_hyperparameters(ck, top.get("hyperparameters"))
    searcher = _searcher(ck, ck.required(top, "searcher", ""), space)
    resources = ck.mapping(top.get("resources"), "resources")
    ck.check_keys(resources, "resources", RESOURCES_KEYS, IGNORED_RESOURCES_KEYS)
    reproducibility = ck.mapping(top.get("reproducibility"), "reproducibility")
    ck.check_keys(reproducibility, "reproducibility", ("experiment_seed",))
    settings = dict(
        max_restarts=_optional(top, "max_restarts", "", ck.integer, 5, minimum=0),
        seed=_optional(reproducibility, "experiment_seed", "reproducibility", ck.integer, 0,
                       minimum=0, maximum=2**32 - 1),
        slots_per_trial=_optional(resources, "slots_per_trial", "resources", ck.integer, 1, minimum=0),
        records_per_epoch=_optional(top, "records_per_epoch", "", ck.integer, 0, minimum=0),
        checkpoint_storage=_checkpoint_storage(ck, top.get("checkpoint_storage")),
        slurm=SlurmConfig(**parse_slurm(ck, top.get("slurm"), "slurm", base_dir or os.getcwd())),
        data=copy.deepcopy(json_values.json_value(ck, ck.mapping(top.get("data"), "data"), "data")),
        min_validation_period=_period(ck, top, "min_validation_period"),
        min_checkpoint_period=_period(ck, top, "min_checkpoint_period"),
        perform_initial_validation=_optional(top, "perform_initial_validation", "", ck.boolean, False),
        scheduling_unit=_optional(top, "scheduling_unit", "", ck.integer, 100, minimum=1),
        share_with_group=_optional(top, "share_with_group", "", ck.boolean, False),
    )
    check_training_code_keys(ck, top)
    _check_placement(ck, settings["slots_per_trial"], settings["slurm"].gpus_per_node)
    return ExperimentConfig(
        source=source, name=name, entrypoint=entrypoint, hyperparameters=space, searcher=searcher,
        description=description, raw=copy.deepcopy(top), warnings=tuple(ck.warnings), **settings)


def _optional(section: Dict[str, Any], key: str, path: str, read, default, **limits):
    """``read(section[key], path.key, **limits)``, or ``default`` when the key is absent or null."""
    value = section.get(key)
    return default if value is None else read(value, checks.join(path, key), **limits)


def _check_placement(ck: Checker, slots: int, gpus_per_node: Optional[int]) -> None:
    """A trial of ``slots`` GPUs must have a node layout on nodes of ``gpus_per_node`` GPUs (when that
    is known): else an error on resources.slots_per_trial saying what would fit."""
    try:
        place(slots, gpus_per_node)
    except PlacementError as exc:
        ck.fail("resources.slots_per_trial", str(exc))


def _period(ck: Checker, top: Dict[str, Any], key: str) -> Optional[Length]:
    value = top.get(key)
    if value is None:
        return None
    length = ck.length(value, key, minimum=0)
    return length if length[0] > 0 else None


def _entrypoint(ck: Checker, value: Any) -> str:
    """A shell command or ``module:function``; a list of strings is joined with shell quoting."""
    if isinstance(value, list):
        if not value:
            ck.fail("entrypoint", "expected a command or a non-empty list of arguments, got an empty list")
        for i, arg in enumerate(value):
            if not isinstance(arg, str):
                ck.fail(f"entrypoint[{i}]", f"expected a string, got {show(arg)}")
        return shlex.join(value)
    return ck.string(value, "entrypoint", what="a command such as 'python3 train.py'")


def _checkpoint_storage(ck: Checker, value: Any) -> CheckpointStorage:
    section = ck.mapping(value, "checkpoint_storage")
    storage = ck.check_keys(section, "checkpoint_storage", CHECKPOINT_KEYS,
                            dict.fromkeys(STORAGE_KEYS), warn_ignored=False)
    if storage:
        ck.warn("checkpoint_storage", f"{', '.join(storage)} not used by hpo-slurm (checkpoints live in "
                                      f"the experiment folder), ignored")
    counts = {key: _optional(section, key, "checkpoint_storage", ck.integer, default, minimum=0)
              for key, default in zip(CHECKPOINT_KEYS, (1, 1, 0))}
    return CheckpointStorage(**counts)


def _searcher(ck: Checker, value: Any, space: Nested) -> SearcherConfig:
    """The searcher section; needs the hyperparameter space to size a grid."""
    path = "searcher"
    section = ck.mapping(value, path)
    name = ck.choice(ck.required(section, "name", path), "searcher.name", SEARCHER_NAMES, "searcher",
                     _SEARCHER_ALIASES)
    elsewhere = {key: f"not used by the {name} searcher (a setting of {', '.join(owners)})"
                 for key, owners in _SEARCHER_KEY_OWNERS.items() if key not in SEARCHER_KEYS[name]}
    if name == "pbt":
        elsewhere["max_length"] = "not used by the pbt searcher: a trial trains num_rounds x length_per_round"
    ck.check_keys(section, path, SEARCHER_KEYS[name], IGNORED_SEARCHER_KEYS, elsewhere)
    get, need = _readers(ck, section, path)

    out: Dict[str, Any] = dict(
        name=name,
        metric=ck.string(ck.required(section, "metric", path, "the validation metric to optimize"),
                         "searcher.metric", what="a metric name"),
        smaller_is_better=get("smaller_is_better", ck.boolean, True),
        max_concurrent_trials=get("max_concurrent_trials", ck.integer, 16, minimum=0),
    )
    if name in SAMPLING_SEARCHERS:
        out["sampler"] = parse_sampler(ck, section, path)
    if name == "pbt":
        pbt = _pbt(ck, section, path)
        check_population(ck, out["sampler"], pbt["population_size"], len(space.searched()), path)
        return SearcherConfig(**out, **pbt)
    out["max_length"], out["unit"] = _max_length(ck, section, name)
    if name == "single":
        out["max_trials"] = get("max_trials", ck.integer, 1, minimum=1, maximum=1)
    elif name == "grid":
        hyperparameters.require_grid_counts(ck, space)
        size = hyperparameters.require_grid_size(ck, space)
        given = get("max_trials", ck.integer, size, minimum=1)
        if given != size:
            ck.fail("searcher.max_trials", f"grid search trains every point of the grid ({size} trials); "
                                           f"remove max_trials or set it to {size}, got {given}")
        out["max_trials"] = size
    else:
        out["max_trials"] = ck.at_most(need("max_trials", ck.integer, minimum=1), "searcher.max_trials",
                                       MAX_TRIALS, "trials")
    if name in ("adaptive_asha", "async_halving"):
        out["divisor"] = get("divisor", ck.number, 4.0, above=1)
        if out["divisor"] < MIN_DIVISOR:  # adaptive_asha counts rungs up to max_length one power at a time
            ck.fail("searcher.divisor", f"expected a number >= {MIN_DIVISOR:g}, got {show(section['divisor'])}")
        out["stop_once"] = get("stop_once", ck.boolean, False)
    if name == "async_halving":
        out["num_rungs"] = need("num_rungs", lambda v, p: _rungs(ck, v, p, out["divisor"]))
    if name == "adaptive_asha":
        out["mode"] = get("mode", lambda v, p: ck.choice(v, p, ASHA_MODES, "mode"), "standard")
        # a bracket has at most ilog(max_length) + 1 rungs, so divisor ** (rungs - 1) <= max_length
        out["max_rungs"] = ck.at_most(get("max_rungs", ck.integer, 5, minimum=1), "searcher.max_rungs",
                                      MAX_RUNGS, "rungs")
        out["bracket_rungs"] = get("bracket_rungs", lambda v, p: _bracket_rungs(ck, v, p, out["divisor"]),
                                   ()) or None
    return SearcherConfig(**out)


_SEARCHER_KEY_OWNERS = {key: tuple(n for n in SEARCHER_NAMES if key in SEARCHER_KEYS[n])
                        for n in SEARCHER_NAMES for key in SEARCHER_KEYS[n]}


def _readers(ck: Checker, section: Dict[str, Any], path: str):
    """``get(key, read, default, **limits)`` for optional keys, ``need(key, read, **limits)`` for
    required ones; both read ``section[key]`` with its key path below ``path``."""

    def get(key, read, default, **limits):
        return _optional(section, key, path, read, default, **limits)

    def need(key, read, **limits):
        return read(ck.required(section, key, path), checks.join(path, key), **limits)

    return get, need


def _rungs(ck: Checker, value: Any, path: str, divisor: float) -> int:
    """A bracket's rung count: at most MAX_RUNGS, and ``divisor ** (rungs - 1)`` (the shortest rung's
    share of max_length) within 1e300."""
    rungs = ck.at_most(ck.integer(value, path, minimum=1), path, MAX_RUNGS, "rungs")
    if (rungs - 1) * math.log10(divisor) > MAX_POWER:
        ck.fail(path, f"expected divisor ** ({rungs} - 1) to be at most 1e{MAX_POWER}, got {divisor:g} ** "
                      f"{rungs - 1}; lower divisor or the rungs")
    return rungs


def _bracket_rungs(ck: Checker, value: Any, path: str, divisor: float) -> Tuple[int, ...]:
    if not isinstance(value, list):
        ck.fail(path, f"expected a list of positive integers, got {show(value)}")
    return tuple(_rungs(ck, item, f"{path}[{i}]", divisor) for i, item in enumerate(value))


def _max_length(ck: Checker, section: Dict[str, Any], name: str) -> Tuple[Optional[int], str]:
    """(``max_length``, unit), or Determined 0.38's ``time_metric`` + ``max_time`` when the time metric
    is a length unit; when both forms are given they must agree. OPEN_ENDED_SEARCHERS may leave both
    out, (None, "batches"), or give ``time_metric`` alone: (None, that unit)."""
    get, need = _readers(ck, section, "searcher")
    length = get("max_length", ck.length, None)
    if section.get("time_metric") is not None or section.get("max_time") is not None:
        unit = ck.required(section, "time_metric", "searcher",
                           "max_time needs time_metric: batches, records or epochs")
        if unit not in LENGTH_UNITS:
            ck.fail("searcher.time_metric", f"hpo-slurm measures training length in batches, records or "
                                            f"epochs, got {show(unit)}")
        if name in OPEN_ENDED_SEARCHERS and length is None and section.get("max_time") is None:
            return None, unit  # the unit of the lengths trials report; they train until their code stops
        amount = need("max_time", ck.integer, minimum=1)
        if length is not None and length != (amount, unit):
            ck.fail("searcher.max_time", f"{unit} {amount} disagrees with max_length "
                                         f"({length[1]} {length[0]}); keep one of them")
        length = (amount, unit)
    if length is None:
        if name in OPEN_ENDED_SEARCHERS:
            return None, "batches"  # trials train until their code stops
        example = "max_length: {batches: 1000}"
        if name in ("adaptive_asha", "async_halving"):
            example += " (or time_metric: batches with max_time: 1000)"
        ck.fail("searcher.max_length", f"missing required key; the training length of a trial, "
                                       f"e.g. {example}")
    return length


def _pbt(ck: Checker, section: Dict[str, Any], path: str) -> Dict[str, Any]:
    """PBT's settings. A trial trains at most ``num_rounds * length_per_round``; the search creates
    ``population_size + (num_rounds - 1) * int(truncate_fraction * population_size)`` trials."""
    _, need = _readers(ck, section, path)
    population = ck.at_most(need("population_size", ck.integer, minimum=1), "searcher.population_size",
                            MAX_TRIALS, "trials")
    rounds = need("num_rounds", ck.integer, minimum=1)
    per_round, unit = need("length_per_round", ck.length)
    ck.at_most(rounds * per_round, "searcher.num_rounds", MAX_LENGTH,
               f"{unit} (num_rounds x length_per_round, the longest a trial trains)")
    replace = need("replace_function", ck.mapping)
    ck.check_keys(replace, "searcher.replace_function", ("truncate_fraction",))
    explore = need("explore_function", ck.mapping)
    ck.check_keys(explore, "searcher.explore_function", ("resample_probability", "perturb_factor"))
    _, replace_need = _readers(ck, replace, "searcher.replace_function")
    _, explore_need = _readers(ck, explore, "searcher.explore_function")
    truncate = replace_need("truncate_fraction", ck.number, minimum=0, maximum=0.5)
    trials = population + (rounds - 1) * int(truncate * population)
    ck.at_most(trials, "searcher.num_rounds", MAX_TRIALS,
               "trials (population_size + (num_rounds - 1) x the trials replaced each round)")
    return dict(
        population_size=population,
        num_rounds=rounds,
        length_per_round=per_round,
        unit=unit,
        max_length=rounds * per_round,
        max_trials=trials,
        truncate_fraction=truncate,
        resample_probability=explore_need("resample_probability", ck.number, minimum=0, maximum=1),
        perturb_factor=explore_need("perturb_factor", ck.number, minimum=0, maximum=1),
    )
