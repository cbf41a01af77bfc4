"""Stands first on a trial's path when another ``determined`` is installed and ``HPO_SLURM_DETERMINED``
is unset (``hpo_slurm.compat.package_choice``): importing it ends the process with one line."""

import sys

from hpo_slurm.compat.package_choice import conflict_line

raise SystemExit(conflict_line(sys.path))
