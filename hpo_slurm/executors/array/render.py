"""The sbatch scripts of a sweep, as text: job arrays rendered from ``templates/sbatch/array.sbatch``
(or the copy ``slurm.array_template`` names), and the tiny wave job that submits the next array when
the cluster caps queued jobs. Pure: no Slurm, no files written.

Every value that lands in a script is validated (``#SBATCH`` lines: one word of safe characters) or
shell-quoted (the body). Hyperparameters never reach a script: tasks read them from spec files.
"""

from __future__ import annotations

import re
import shlex
import string
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from hpo_slurm.config.schema import ExperimentConfig, SlurmConfig
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.placement import Placement
from hpo_slurm.executors.templates import sbatch_template, sbatch_template_location

TEMPLATE_NAME = "array.sbatch"  # shipped in templates/sbatch/ (hpo_slurm.executors.templates)
PLACEHOLDERS = ("job_name", "array", "output", "signal_delay", "sbatch_options", "setup", "experiment_dir",
                "python", "manifest", "command")
REQUIRED = ("job_name", "array", "command")
# what may follow `#SBATCH --option=`: no spaces, quotes, `$`, backquotes, backslashes or control characters
_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:;=+/@%*!&|()\[\]{}~^-]+")
_JOB_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
_RELATIVE_PATH = re.compile(r"[A-Za-z0-9_.%/-]+")
WAVE_TIME_MINUTES = 60  # a wave job waits (and retries sbatch) at most this long
WAVE_MEM = "256M"


def sbatch_value(value: object, what: str) -> str:
    """``value`` as it may stand after ``#SBATCH --option=``; else a UserError naming ``what``."""
    text = str(value)
    if not _SBATCH_VALUE.fullmatch(text):
        raise UserError(f"{what}: {text!r} cannot go in an #SBATCH line (use letters, digits and "
                        f"_.,:;=+/@%*!&|()[]{{}}~^- only)")
    return text


def array_spec(count: int, throttle: int) -> str:
    """``0-29%4``: task indices 0..count-1, at most ``throttle`` running at once (0: no throttle)."""
    if count < 1:
        raise ValueError("an array needs at least one task")
    spec = f"0-{count - 1}"
    return spec + (f"%{throttle}" if 0 < throttle < count else "")


def option_lines(slurm: SlurmConfig, gpus: int, time_minutes: Optional[int],
                 placement: Placement = Placement()) -> List[str]:
    """``#SBATCH`` lines for one array's tasks: the ``slurm:`` section, GPUs per trial, time limit, and
    for a trial of several ranks its nodes and ranks per node (GPUs are then per node)."""
    options: List[Tuple[str, object]] = []
    if placement.distributed:
        options += [("nodes", placement.nodes), ("ntasks-per-node", placement.ranks_per_node)]
    gpus = placement.node_gpus(gpus)
    for key in ("partition", "account", "qos"):
        if getattr(slurm, key):
            options.append((key, getattr(slurm, key)))
    if time_minutes:
        options.append(("time", int(time_minutes)))
    if slurm.cpus_per_task:
        options.append(("cpus-per-task", int(slurm.cpus_per_task)))
    if slurm.mem:
        options.append(("mem", slurm.mem))
    if slurm.constraint:
        options.append(("constraint", slurm.constraint))
    extra = list(slurm.extra_args)
    if gpus:  # one --gres line: a second one would replace the first
        gres = f"gpu:{slurm.gpu_type}:{int(gpus)}" if slurm.gpu_type else f"gpu:{int(gpus)}"
        other = [value for name, value in extra if name == "gres"]
        extra = [(name, value) for name, value in extra if name != "gres"]
        options.append(("gres", ",".join([gres, *map(str, other)])))
    options.extend(extra)
    return [_line(name, value) for name, value in options]


def wave_option_lines(slurm: SlurmConfig) -> List[str]:
    """A wave job runs no trial: where it may run (partition, account, qos) and a small allocation."""
    options: List[Tuple[str, object]] = [(key, getattr(slurm, key)) for key in ("partition", "account", "qos")
                                         if getattr(slurm, key)]
    options += [("ntasks", 1), ("cpus-per-task", 1), ("mem", WAVE_MEM), ("time", WAVE_TIME_MINUTES)]
    return [_line(name, value) for name, value in options]


def _line(name: str, value: object) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise UserError(f"slurm: {name!r} is not an sbatch option name")
    if value == "" or value is True:
        return f"#SBATCH --{name}"
    return f"#SBATCH --{name}={sbatch_value(value, f'slurm: --{name}')}"


# ---- templates ---------------------------------------------------------------------------------

def load_template(config: ExperimentConfig) -> Tuple[str, str]:
    """(template text, where it came from). A user template must parse and use the required
    placeholders and no unknown ones; otherwise a UserError that names the file."""
    if not config.slurm.array_template:
        return sbatch_template(TEMPLATE_NAME), sbatch_template_location(TEMPLATE_NAME)
    path = Path(config.slurm.array_template)
    source = f"slurm.array_template {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: cannot read the template ({exc})") from None
    check_template(text, source)
    return text, source


def check_template(text: str, source: str) -> None:
    names = set()
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text[: match.start()].count("\n") + 1
            raise UserError(f"{source}: line {line}: a lone '$' (write $$ for a literal $)")
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise UserError(f"{source}: unknown placeholder ${unknown[0]} (known: "
                        f"{', '.join('$' + p for p in PLACEHOLDERS)})")
    missing = [p for p in REQUIRED if p not in names]
    if missing:
        raise UserError(f"{source}: the template must use ${missing[0]} (required: "
                        f"{', '.join('$' + p for p in REQUIRED)})")
    if not text.startswith("#!"):
        raise UserError(f"{source}: an sbatch script must start with a #! line")


def render_array(
    template: str,
    *,
    job_name: str,
    array: str,
    output: str,
    signal_delay: int,
    options: Sequence[str],
    setup: Iterable[str],
    experiment_dir: Path,
    python: str,
    manifest: Path,
) -> str:
    """One array's script. ``options`` come from ``option_lines``; ``setup`` lines are the user's own
    shell lines from the config, placed verbatim (they are what slurm.setup is for)."""
    if not _JOB_NAME.fullmatch(job_name):
        raise ValueError(f"unsafe job name {job_name!r}")
    if not re.fullmatch(r"\d+-\d+(%\d+)?", array):
        raise ValueError(f"unsafe array spec {array!r}")
    if not _RELATIVE_PATH.fullmatch(output) or output.startswith("/") or ".." in output:
        raise ValueError(f"unsafe output path {output!r}")
    python_q, manifest_q = shlex.quote(python), shlex.quote(str(manifest))
    values: Dict[str, str] = {
        "job_name": job_name, "array": array, "output": output, "signal_delay": str(int(signal_delay)),
        "sbatch_options": "\n".join(options), "setup": "\n".join(setup),
        "experiment_dir": shlex.quote(str(experiment_dir)), "python": python_q, "manifest": manifest_q,
        "command": f"{python_q} -m hpo_slurm.tasks.sweep_task {manifest_q}",
    }
    return _tidy(string.Template(template).substitute(values))


def render_wave(
    *,
    job_name: str,
    output: str,
    options: Sequence[str],
    setup: Iterable[str],
    python: str,
    manifest: Path,
) -> str:
    """The wave job: once the previous array has ended (``--dependency=afterany``, given to sbatch),
    it submits the array of ``manifest`` and the wave job after it."""
    if not _JOB_NAME.fullmatch(job_name):
        raise ValueError(f"unsafe job name {job_name!r}")
    if not _RELATIVE_PATH.fullmatch(output) or output.startswith("/") or ".." in output:
        raise ValueError(f"unsafe output path {output!r}")
    lines = ["#!/bin/bash", "# hpo-slurm sweep wave: submits the next job array once the previous one ended",
             f"#SBATCH --job-name={job_name}", f"#SBATCH --output={output}", "#SBATCH --open-mode=append",
             *options, *setup, f"exec {shlex.quote(python)} -m hpo_slurm.executors.array.wave_job {shlex.quote(str(manifest))}"]
    return "\n".join(lines) + "\n"


def _tidy(script: str) -> str:
    """No runs of blank lines where an empty placeholder stood."""
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"\n\n(?=#SBATCH|exec )", "\n", script)).rstrip("\n") + "\n"
