"""The ``slurm:`` section of an experiment config: Slurm's time and memory formats, sbatch options
(``extra_args``, Determined's ``sbatch_args``) checked before any script is rendered, with the options
hpo-slurm sets itself refused by name, the setup lines every job runs first, and the GPUs per node
(``gpus_per_node``, or Determined's name for it, ``slots_per_node``) that a distributed trial is
placed by."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Tuple

from hpo_slurm.config.checks import Checker, is_int, is_number, join, show
from hpo_slurm.config.pool_section import parse_pool
from hpo_slurm.config.slurm_time import slurm_time_minutes

SLURM_KEYS = ("partition", "account", "qos", "time", "cpus_per_task", "mem", "constraint", "gpu_type",
              "gpus_per_node", "slots_per_node", "extra_args", "setup", "signal_delay", "poll_interval",
              "array_template", "sbatch_args", "pool")
DEFAULT_SIGNAL_DELAY_S = 120  # the time-limit warning this long before the end (slurm.signal_delay)
DEFAULT_POLL_INTERVAL_S = 10.0  # at most one squeue/sacct call this often (slurm.poll_interval)
GPUS_PER_NODE_KEYS = ("gpus_per_node", "slots_per_node")  # one setting: hpo-slurm's name, Determined's
_PLACEMENT = "set resources.slots_per_trial and slurm.gpus_per_node instead"
# sbatch options with their own setting: extra_args must not set them, sbatch_args may (and sets it)
_DEDICATED = {"partition": "partition", "account": "account", "qos": "qos", "time": "time",
              "cpus-per-task": "cpus_per_task", "mem": "mem", "constraint": "constraint"}
_MANAGED = {
    "gpus": "set resources.slots_per_trial (and slurm.gpu_type) instead",
    "gpus-per-node": "set resources.slots_per_trial, slurm.gpus_per_node (and slurm.gpu_type) instead",
    "gpus-per-task": "set resources.slots_per_trial (and slurm.gpu_type) instead",
    **{name: _PLACEMENT for name in ("nodes", "ntasks", "ntasks-per-node")},
    "signal": "set slurm.signal_delay instead",
    "no-requeue": "preempted jobs must requeue to resume from their checkpoints",
    "chdir": "hpo-slurm sets the jobs' working folder (their log paths are relative to it)",
    **{name: "hpo-slurm sets it for every job" for name in ("array", "job-name", "output", "error", "wrap")},
}
_OPTION_RE = re.compile(r"[a-z][a-z0-9-]*")
_MEM_RE = re.compile(r"([0-9]+)([KMGTkmgt]?)")
_GPU_TYPE_RE = re.compile(r"[A-Za-z0-9_.-]+")


def slurm_mem(ck: Checker, value: Any, path: str) -> str:
    """Memory per node as sbatch takes it: an integer of megabytes or digits with K, M, G or T."""
    if is_int(value) and value >= 0:
        return f"{value}M"
    match = _MEM_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        ck.fail(path, f'expected a memory size such as "16G", "4000M" or an integer of megabytes, '
                      f"got {show(value)}")
    return match.group(1) + (match.group(2).upper() or "M")


def _word(ck: Checker, value: Any, path: str) -> str:
    """A one-line sbatch value without spaces (partition, account, qos)."""
    text = ck.string(value if not is_int(value) else str(value), path)
    if any(c.isspace() for c in text):
        ck.fail(path, f"expected a value without spaces, got {show(text)}")
    return text


def _option_value(ck: Checker, value: Any, path: str) -> str:
    """An extra sbatch option's value: a string or number, or true for a bare flag (stored as "")."""
    if value is True:
        return ""
    if is_number(value):
        return str(value)
    return ck.string(value, path, what="a string, a number or true")


def _sbatch_args(ck: Checker, value: Any, path: str) -> List[Tuple[str, Any, str]]:
    """Determined's ``slurm.sbatch_args`` (``["--time=1:00:00", "--exclusive"]``) as
    (option name, value or True, key path)."""
    if not isinstance(value, list):
        ck.fail(path, f"expected a list of sbatch options, got {show(value)}")
    options = []
    for i, item in enumerate(value):
        item_path = f"{path}[{i}]"
        text = ck.string(item, item_path, what="an sbatch option such as '--mail-type=END'")
        if not text.startswith("--"):
            ck.fail(item_path, f"expected a long sbatch option such as '--mail-type=END', got {show(text)}")
        name, rest = re.fullmatch(r"([^=\s]*)(?:(?:=|\s+)(.*))?", text[2:], re.S).groups()
        options.append((name, True if rest is None else rest.strip(), item_path))
    return options


def parse_slurm(ck: Checker, value: Any, path: str, base_dir: str) -> Dict[str, Any]:
    """The ``slurm:`` section as keyword arguments of ``SlurmConfig``. ``array_template`` is
    resolved against ``base_dir`` and must exist. ``gpus_per_node`` and ``slots_per_node`` are one
    setting (a positive integer); both given is an error naming both."""
    section = ck.mapping(value, path)
    ck.check_keys(section, path, SLURM_KEYS)
    given = {key: (val, join(path, key)) for key, val in section.items() if val is not None}
    extra: Dict[str, str] = {}
    extra_paths: Dict[str, str] = {}

    def add_extra(name: Any, val: Any, where: str, from_sbatch_args: bool) -> None:
        if not isinstance(name, str) or not _OPTION_RE.fullmatch(name):
            ck.fail(where, f"expected an sbatch option name of lowercase letters, digits and '-', "
                           f"got {show(name)}")
        if name in _MANAGED:
            ck.fail(where, f"--{name} cannot be set here; {_MANAGED[name]}")
        if name == "gres" and "gpu" in str(val).lower():  # other generic resources (local scratch) are fine
            ck.fail(where, f"--gres={val} asks for GPUs; set resources.slots_per_trial (and slurm.gpu_type) instead")
        if name in _DEDICATED:
            field = _DEDICATED[name]
            if not from_sbatch_args:
                ck.fail(where, f"set {join(path, field)} instead of an extra --{name}")
            if field in given:
                ck.fail(where, f"--{name} is also set by {given[field][1]}; keep one")
            given[field] = (val, where)
            return
        if name in extra:
            ck.fail(where, f"--{name} is also set by {extra_paths[name]}; keep one")
        if val is False or val is None:
            ck.fail(where, f"expected a string, a number or true, got {show(val)}")
        extra[name], extra_paths[name] = _option_value(ck, val, where), where

    if "extra_args" in given:
        extra_args, where = given.pop("extra_args")
        for name, val in ck.mapping(extra_args, where).items():
            add_extra(name, val, join(where, name), from_sbatch_args=False)
    if "sbatch_args" in given:
        sbatch_args, where = given.pop("sbatch_args")
        for name, val, item_path in _sbatch_args(ck, sbatch_args, where):
            add_extra(name, val, item_path, from_sbatch_args=True)

    out: Dict[str, Any] = {"extra_args": tuple(extra.items())}
    for key in ("partition", "account", "qos"):
        if key in given:
            out[key] = _word(ck, *given[key])
    if "constraint" in given:
        out["constraint"] = ck.string(*given["constraint"])
    if "time" in given:
        out["time_minutes"] = slurm_time_minutes(ck, *given["time"])
    if "cpus_per_task" in given:
        val, where = given["cpus_per_task"]
        digits = isinstance(val, str) and re.fullmatch(r"[0-9]{1,9}", val)
        out["cpus_per_task"] = ck.integer(int(val) if digits else val, where, minimum=1)
    if "mem" in given:
        out["mem"] = slurm_mem(ck, *given["mem"])
    if "gpu_type" in given:
        val, where = given["gpu_type"]
        if not isinstance(val, str) or not _GPU_TYPE_RE.fullmatch(val):
            ck.fail(where, f"expected a GPU type of letters, digits, '_', '-' and '.', got {show(val)}")
        out["gpu_type"] = val
    gpus_per_node = [key for key in GPUS_PER_NODE_KEYS if key in given]
    if len(gpus_per_node) == 2:
        ck.fail(given["slots_per_node"][1], f"the same setting as {given['gpus_per_node'][1]} (Determined's "
                                            f"name for it); keep one")
    if gpus_per_node:
        out["gpus_per_node"] = ck.integer(*given[gpus_per_node[0]], minimum=1)
    if "setup" in given:
        out["setup"] = _setup_lines(ck, *given["setup"])
    if "signal_delay" in given:
        out["signal_delay_s"] = ck.integer(given["signal_delay"][0], given["signal_delay"][1], 10, 65535)
        if "time_minutes" in out and out["signal_delay_s"] >= out["time_minutes"] * 60:
            ck.fail(given["signal_delay"][1], f"expected fewer seconds than the time limit "
                                              f"({out['time_minutes'] * 60} s), got {out['signal_delay_s']}")
    if "poll_interval" in given:
        out["poll_interval_s"] = ck.number(*given["poll_interval"], above=0)
    if "array_template" in given:
        val, where = given["array_template"]
        text = os.path.expanduser(ck.string(val, where, what="a file path"))
        resolved = os.path.abspath(os.path.join(base_dir, text))
        if not os.path.isfile(resolved):
            ck.fail(where, f"no such file: {resolved}")
        out["array_template"] = resolved
    if "pool" in given:
        out["pool"] = pool = parse_pool(ck, *given["pool"])
        _check_pool(ck, pool, out, given)
    return out


def _check_pool(ck: Checker, pool: Any, out: Dict[str, Any], given: Dict[str, Tuple[Any, str]]) -> None:
    """A worker job's time limit must leave room for its warning; an idle timeout shorter than the
    driver's poll interval ends workers between a run and the next (a warning)."""
    time_minutes = pool.time_minutes if pool.time_minutes else out.get("time_minutes")
    delay = out.get("signal_delay_s", DEFAULT_SIGNAL_DELAY_S)
    if time_minutes is not None and delay >= time_minutes * 60:
        where = join(given["pool"][1], "time") if pool.time_minutes else given["time"][1]
        ck.fail(where, f"a worker job's time limit must be longer than slurm.signal_delay ({delay} s), got "
                       f"{time_minutes * 60} s")
    poll = out.get("poll_interval_s", DEFAULT_POLL_INTERVAL_S)
    if pool.idle_timeout_s < 2 * poll:
        ck.warn(join(given["pool"][1], "idle_timeout"), f"{pool.idle_timeout_s:g} s is less than twice "
                f"slurm.poll_interval ({poll:g} s): on Slurm, workers may end between one run and the next")


def _setup_lines(ck: Checker, value: Any, path: str) -> Tuple[str, ...]:
    """Shell lines from a string (split at newlines) or a list of strings; blank lines dropped."""
    if isinstance(value, str):
        items = [(value, path)]
    elif isinstance(value, list):
        items = [(item, f"{path}[{i}]") for i, item in enumerate(value)]
    else:
        ck.fail(path, f"expected a shell line or a list of shell lines, got {show(value)}")
    lines: List[str] = []
    for item, where in items:
        if not isinstance(item, str):
            ck.fail(where, f"expected a shell line, got {show(item)}")
        lines.extend(line.rstrip() for line in item.splitlines() if line.strip())
    return tuple(lines)
