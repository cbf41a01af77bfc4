"""One rank of a trial that runs as several processes: ``python -m hpo_slurm.tasks.rank [--slurm] SPEC``.

Started by ``tasks.ranks`` (by ``srun`` with ``--slurm``, as a local process without). Sets the
variables torch.distributed's ``env://`` reads (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
NODE_RANK; MASTER_ADDR and MASTER_PORT come from the launcher), taken from Slurm's task variables
under ``--slurm``, then runs the entrypoint (``tasks.entrypoint``) and writes how it ended to
``runs/<run>/ranks/rank-<k>.json``. Exits 1 when the rank failed or raised InvalidHP, so the launcher
ends the other ranks. Imports nothing heavy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from hpo_slurm.core.fsio import read_json, write_json_atomic
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import RunResult, RunSpec, RunStatus
from hpo_slurm.tasks.entrypoint import run_entrypoint


def rank_environment(spec: RunSpec, rank: object, local_rank: object, node_rank: object) -> Dict[str, str]:
    """torch.distributed's ``env://`` variables of one rank of ``spec``'s run."""
    return {"RANK": str(rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(spec.world_size),
            "LOCAL_WORLD_SIZE": str(spec.ranks_per_node), "NODE_RANK": str(node_rank)}


def slurm_rank_environment(spec: RunSpec, slurm: Mapping[str, str]) -> Dict[str, str]:
    """The ``env://`` variables of the Slurm task described by ``slurm`` (its environment)."""
    return rank_environment(spec, slurm["SLURM_PROCID"], slurm["SLURM_LOCALID"], slurm["SLURM_NODEID"])


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    from_slurm = "--slurm" in args
    paths = [a for a in args if a != "--slurm"]
    if len(paths) != 1:
        raise SystemExit("usage: python -m hpo_slurm.tasks.rank [--slurm] SPEC")
    spec_path = os.path.abspath(paths[0])
    spec = RunSpec.read(Path(spec_path))
    if from_slurm:
        os.environ.update(slurm_rank_environment(spec, os.environ))
    rank = int(os.environ["RANK"])
    layout = ExperimentLayout(Path(spec.experiment_dir))
    group_file = layout.rank_group_file(spec.run_id, rank)
    result = run_entrypoint(spec, spec_path, on_start=lambda pgid: group_file.write_text(str(pgid)))
    told = layout.rank_stop_file(spec.run_id, rank)
    if result.status is RunStatus.EXITED and told.exists():  # the trial stopped when the ranks agreed to
        result = RunResult(RunStatus.STOPPED, result.exit_code, stop_reason=read_json(told)["reason"])
    path = layout.rank_result_file(spec.run_id, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result.to_json())
    sys.exit(1 if result.status in (RunStatus.FAILED, RunStatus.INVALID_HP) else 0)


if __name__ == "__main__":
    main()
