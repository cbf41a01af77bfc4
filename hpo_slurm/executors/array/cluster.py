"""What a sweep asks the Slurm cluster before and after it submits: the cluster's configuration and
the room left under the caps on queued jobs (``ClusterView``), and this user's jobs by name
(``jobs_named``), which is how arrays and wave jobs submitted but not recorded are found.

Every query either answers or raises: a lookup that failed is never taken for "no such job", since
that would have a job submitted twice.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Dict, List, Optional, Sequence, Tuple

from hpo_slurm.executors.array.caps import Limits, parse_assoc, parse_qos, positive_int, user_cap
from hpo_slurm.executors.base import JobState
from hpo_slurm.executors.slurm.commands import cluster_config, has_accounting, jobs_named, run_slurm

log = logging.getLogger(__name__)


class ClusterView:
    """One user's view of the cluster, for one executor: ``scontrol show config`` read once, whether
    there is accounting, and the ``Limits`` a sweep's arrays must fit. ``qos`` is the QOS the jobs use
    (``slurm.qos``); ``max_jobs`` is the user's own cap on queued jobs (``--max-jobs``), on top of the
    cluster's."""

    def __init__(self, user: str, qos: Optional[str], max_jobs: Optional[int]):
        self.user = user
        self.qos = qos
        self.max_jobs = max_jobs
        self._config: Optional[Dict[str, str]] = None

    @property
    def config(self) -> Dict[str, str]:
        """``scontrol show config``, read once; SchedulerError while the controller does not answer."""
        if self._config is None:
            self._config = cluster_config()
        return self._config

    @config.setter
    def config(self, value: Dict[str, str]) -> None:
        """Use ``value`` as the cluster's configuration instead of asking scontrol."""
        self._config = dict(value)

    @property
    def accounting(self) -> bool:
        return has_accounting(self.config)

    def limits(self) -> Limits:
        """MaxArraySize, and the room left under the caps on queued jobs: the user's association and
        QOS (MaxSubmitJobs), MaxJobCount (all users' jobs count) and ``max_jobs``. A cap that cannot
        be read (sacctmgr or squeue failing) is logged and planned without."""
        max_array = int(self.config.get("MaxArraySize", "1001") or 1001)
        caps: List[Tuple[int, str, bool]] = []  # (cap, what, per user)
        if self.max_jobs:
            caps.append((self.max_jobs, "--max-jobs", True))
        job_count = positive_int(self.config.get("MaxJobCount") or "")
        if job_count:
            caps.append((job_count, "MaxJobCount", False))
        if self.accounting:
            cap = self._user_cap()
            if cap:
                caps.append((cap, "MaxSubmitJobs", True))
        if not caps:
            return Limits(max_array)
        queued: Dict[bool, int] = {}  # per user? -> jobs queued: each count asked of squeue once
        for _, _, per_user in caps:
            if per_user not in queued:
                queued[per_user] = self._queued(all_users=not per_user)
        room, source = min((cap - queued[per_user], f"{what} {cap}") for cap, what, per_user in caps)
        return Limits(max_array, room=room, source=source)

    def jobs_named(self, names: Sequence[str]) -> Dict[str, List[Tuple[str, JobState]]]:
        """``jobs_named`` for this user, with sacct when the cluster keeps accounting."""
        return jobs_named(names, self.user, self.accounting)

    def _user_cap(self) -> Optional[int]:
        try:
            assoc = parse_assoc(run_slurm(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={self.user}",
                                           "format=MaxSubmit,GrpSubmit,QOS,DefaultQOS"]))
            qos = parse_qos(run_slurm(["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxSubmitPU,GrpSubmit"]))
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot read the queued-jobs caps from sacctmgr (%s); planning without them", _message(exc))
            return None
        return user_cap(assoc, qos, self.qos)

    def _queued(self, all_users: bool) -> int:
        args = ["squeue", "-h", "-r", "-o", "%i"] + ([] if all_users else ["-u", self.user])
        try:
            return len(run_slurm(args).split())
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot count queued jobs with squeue (%s); taking none", _message(exc))
            return 0


def _message(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return " ".join((exc.stderr or exc.stdout or "").split()) or f"exit status {exc.returncode}"
    return str(exc)
