"""The scripts and manifests of a submission's arrays, rendered from the experiment's config and
written to their ``jobs/array-<n>/`` folders before anything is submitted (a task or a wave job may
start the moment sbatch returns, and a wave job reads them long after the sweep returned).

An array's job is named ``<prefix>array-<n>`` and its wave job ``<prefix>wave-<n>`` (the prefix is
``hpo.<uid>.``), so anything submitted but not recorded is found by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from hpo_slurm.config.schema import ExperimentConfig
from hpo_slurm.executors.array.caps import Plan, PlannedArray
from hpo_slurm.executors.array.files import ARRAY_SCRIPT, WAVE_SCRIPT, ArrayFolders
from hpo_slurm.executors.array.manifest import ArrayManifest
from hpo_slurm.executors.array.render import (
    array_spec, load_template, option_lines, render_array, render_wave, wave_option_lines,
)


def array_job_name(prefix: str, index: int) -> str:
    return f"{prefix}array-{index}"


def wave_job_name(prefix: str, index: int) -> str:
    return f"{prefix}wave-{index}"


class ArrayScripts:
    """Renders and writes the files of planned arrays. ``throttle`` is K in ``--array=0-N%K`` (0: no
    throttle); ``python`` is the interpreter the tasks and wave jobs run."""

    def __init__(self, config: ExperimentConfig, experiment_dir: Path, folders: ArrayFolders, throttle: int,
                 python: str):
        self.config = config
        self.dir = experiment_dir
        self.folders = folders
        self.throttle = throttle
        self.python = python
        self._template: Optional[Tuple[str, str]] = None

    @property
    def template(self) -> Tuple[str, str]:
        """(template text, where it came from), loaded and checked once; UserError for a bad one."""
        if self._template is None:
            self._template = load_template(self.config)
        return self._template

    def render(self, array: PlannedArray, prefix: str) -> str:
        """The script of ``array`` (``array.sbatch``)."""
        text, _ = self.template
        return render_array(
            text, job_name=array_job_name(prefix, array.index),
            array=array_spec(len(array.requests), self.throttle),
            output=f"jobs/array-{array.index}/%A_%a.out", signal_delay=self.config.slurm.signal_delay_s,
            options=option_lines(self.config.slurm, array.gpus, array.time_minutes, array.requests[0].placement),
            setup=self.config.slurm.setup,
            experiment_dir=self.dir, python=self.python, manifest=self.folders.manifest_path(array.index),
        )

    def render_wave(self, index: int, prefix: str) -> str:
        """The script of the wave job that submits array ``index`` (``wave.sbatch``)."""
        return render_wave(
            job_name=wave_job_name(prefix, index), output=f"jobs/array-{index}/wave-%j.out",
            options=wave_option_lines(self.config.slurm), setup=self.config.slurm.setup, python=self.python,
            manifest=self.folders.manifest_path(index),
        )

    def manifest(self, arrays: Sequence[PlannedArray], position: int, plan: Plan, prefix: str) -> ArrayManifest:
        """The manifest of ``arrays[position]``, with its runs' specs (every request must carry its
        ``spec``: the executor delivers specs); in a wave chain it names its wave job and the arrays
        before and after it."""
        array = arrays[position]
        missing = [r.run_id for r in array.requests if r.spec is None]
        if missing:
            raise ValueError(f"runs {', '.join(missing)} have no spec to put in the manifest of array {array.index}")
        chained = plan.waves and position > 0
        return ArrayManifest.of(
            array.index, str(self.dir), array_job_name(prefix, array.index),
            tuple(r.spec for r in array.requests if r.spec is not None),
            wave_name=wave_job_name(prefix, array.index) if chained else None,
            previous=arrays[position - 1].index if chained else None,
            next=arrays[position + 1].index if plan.waves and position + 1 < len(arrays) else None,
            gpus=array.gpus, time_minutes=array.time_minutes, throttle=self.throttle,
        )

    def write(self, arrays: List[PlannedArray], plan: Plan, prefix: str) -> None:
        """Manifests and scripts of every array (and wave job), before anything is submitted."""
        for position, array in enumerate(arrays):
            self.folders.write_manifest(self.manifest(arrays, position, plan, prefix))
            self.folders.write_script(array.index, ARRAY_SCRIPT, self.render(array, prefix))
            if plan.waves and position > 0:
                self.folders.write_script(array.index, WAVE_SCRIPT, self.render_wave(array.index, prefix))
