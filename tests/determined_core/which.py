"""Writes where its `determined` came from next to the run's spec."""

import os
import pathlib

import determined

pathlib.Path(os.environ["HPO_SLURM_SPEC"]).parent.joinpath("which.txt").write_text(determined.__file__)
