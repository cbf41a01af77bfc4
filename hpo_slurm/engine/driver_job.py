"""``hpo-slurm launch --as-job``: the driver itself runs as a Slurm job that requeues itself before its
time limit (templates/sbatch/driver.sbatch)."""

from __future__ import annotations

import re
import shlex
import string
import subprocess
import sys
from typing import Dict

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.core.errors import UserError
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.executors.templates import sbatch_template

REQUEUE_EXIT_CODE = 75  # the driver stopped for its job's time limit: requeue and resume
DRIVER_TIME_MINUTES = 24 * 60
SIGNAL_DELAY_S = 120
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:@%+=/-]+$")


def job_name(uid: str) -> str:
    return f"hpo-driver.{uid[:8]}"


def render(config: ExperimentConfig, layout: ExperimentLayout, uid: str) -> str:
    """The driver's sbatch script. #SBATCH values are checked against a safe alphabet; the command is
    shell-quoted."""
    slurm = config.slurm
    options = []
    for option in ("partition", "account", "qos"):
        value = getattr(slurm, option)
        if value:
            options.append(f"#SBATCH --{option}={_safe(value, f'slurm.{option}')}")
    command = shlex.join([sys.executable, "-m", "hpo_slurm.cli", "resume", layout.name, "--root", str(layout.dir.parent)])
    values: Dict[str, str] = {
        "job_name": job_name(uid),
        "output": _safe(str(layout.dir / "driver-job.log"), "the experiment folder"),
        "time": str(DRIVER_TIME_MINUTES),
        "signal_delay": str(SIGNAL_DELAY_S),
        "sbatch_options": "\n".join(options),
        "setup": "\n".join(slurm.setup),
        "command": command,
    }
    return string.Template(sbatch_template("driver.sbatch")).substitute(values)


def submit(script: str, layout: ExperimentLayout) -> str:
    """sbatch the script from the experiment folder; the driver job's id."""
    path = layout.dir / "driver.sbatch"
    path.write_text(script)
    try:
        done = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, cwd=layout.dir,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot submit the driver job ({exc}); experiment {layout.name} is created: run its "
                        f"driver with `hpo-slurm resume {layout.name} --detach`") from None
    if done.returncode != 0:
        raise UserError(f"sbatch refused the driver job: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return done.stdout.strip().split(";")[0]  # --parsable prints "id" or "id;cluster"


def _safe(value: str, what: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise UserError(f"{what}: {value!r} cannot go into an #SBATCH line (letters, digits and ._-,:@%+=/ only)")
    return value
