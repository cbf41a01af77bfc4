"""One run on a pool's worker: ``python -m hpo_slurm.tasks.pool_run SPEC``, started by
``tasks.pool_worker`` in a process of its own so that each run starts clean (its own module imports,
working folder and signal handlers). Exit status 0 when the attempt ended (its result file says how),
1 when the trial failed, 2 when the spec could not be read. Imports nothing heavy."""

from __future__ import annotations

import sys
from typing import List, Optional

from hpo_slurm.core.protocol import ProtocolError
from hpo_slurm.tasks.job import TrialFailed, run_job


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hpo_slurm.tasks.pool_run SPEC", file=sys.stderr)
        return 2
    try:
        run_job(args[0])
    except TrialFailed as exc:
        print(f"hpo-slurm: {exc}", file=sys.stderr)
        return 1
    except ProtocolError as exc:
        print(f"hpo-slurm: {args[0]}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
