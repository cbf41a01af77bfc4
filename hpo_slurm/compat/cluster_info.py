"""``det.get_cluster_info()`` on hpo-slurm: what Determined tells a task about itself, from the run's spec.

``get_cluster_info()`` returns None outside an hpo-slurm run (no ``$HPO_SLURM_SPEC``), as Determined
does off-cluster, else a ``ClusterInfo`` read from the spec when it is called (a script reads it once,
at its start: ``latest_checkpoint`` is the checkpoint to resume from at that moment).

Values with no hpo-slurm counterpart are documented placeholders:

``trial.experiment_id``
    A stable number for the experiment: the CRC-32 of the experiment folder's name (31 bits), the same
    in every run of every trial of that experiment, different between experiments of other names.
``master_url``
    ``http://hpo-slurm.invalid`` (there is no master; the ``.invalid`` domain never resolves).
``cluster_id``
    ``"hpo-slurm"``. ``session_token``: ``""``. ``task_id``: the run's name (``t12-r3``);
    ``allocation_id``: ``<run>.<attempt>``; ``agent_id``: this host's name.
``gpu_uuids``
    The devices in ``$CUDA_VISIBLE_DEVICES`` (as given there: indices or UUIDs), ``[]`` without any.
``container_rank``
    This process's node in the trial (``NODE_RANK``; 0 for a trial of one process).
"""

from __future__ import annotations

import os
import socket
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

from hpo_slurm.compat.errors import Unsupported
from hpo_slurm.compat.storage import storage_id_of
from hpo_slurm.core.layout import ExperimentLayout
from hpo_slurm.core.protocol import SPEC_ENV, RunSpec
from hpo_slurm.trial import ATTEMPT_ENV, TrialContext

MASTER_URL = "http://hpo-slurm.invalid"
CLUSTER_ID = "hpo-slurm"
TASK_TYPE = "TRIAL"


def experiment_id_of(experiment_name: str) -> int:
    """The number ``TrialInfo.experiment_id`` gives the experiment named ``experiment_name``."""
    return zlib.crc32(experiment_name.encode("utf-8")) & 0x7FFFFFFF


class TrialInfo:
    """The running trial: ``trial_id``, ``experiment_id``, ``trial_seed``, ``hparams``; ``_config`` (also
    ``config``) is the experiment config as read. ``_steps_completed``: the length this run starts
    from; ``_trial_run_id``: the run's number within the trial (``t12-r3`` -> 3)."""

    def __init__(self, trial_id: int, experiment_id: int, trial_seed: int, hparams: Dict[str, Any],
                 config: Dict[str, Any], steps_completed: int, trial_run_id: int, debug: bool = False,
                 inter_node_network_interface: Optional[str] = None):
        self.trial_id = trial_id
        self.experiment_id = experiment_id
        self.trial_seed = trial_seed
        self.hparams = hparams
        self._config = config
        self._steps_completed = steps_completed
        self._trial_run_id = trial_run_id
        self._debug = debug
        self._inter_node_network_interface = inter_node_network_interface

    @property
    def config(self) -> Dict[str, Any]:
        return self._config


class ClusterInfo:
    """What a Determined task knows about itself (see the module docstring for the placeholders)."""

    def __init__(self, spec: RunSpec, environ: Optional[Dict[str, str]] = None):
        env = dict(os.environ if environ is None else environ)
        self._spec = spec
        self._layout = ExperimentLayout(Path(spec.experiment_dir))
        context = TrialContext(spec, env)
        self._rank = context.rank
        self._node_rank = context.node_rank
        latest = context.latest_checkpoint
        self._latest_checkpoint = storage_id_of(latest, self._layout) if latest is not None else None
        self.master_url = MASTER_URL
        self.cluster_id = CLUSTER_ID
        self.agent_id = socket.gethostname()
        self.task_id = spec.run_id
        self.allocation_id = f"{spec.run_id}.{env.get(ATTEMPT_ENV, '0')}"
        self.session_token = ""
        self.task_type = TASK_TYPE
        self.master_cert_name: Optional[str] = None
        self.master_cert_file: Optional[str] = None
        visible = env.get("CUDA_VISIBLE_DEVICES", "")
        self._gpu_uuids = [d.strip() for d in visible.split(",") if d.strip()]
        self.slot_ids = list(range(len(self._gpu_uuids)))
        run_number = spec.run_id.rsplit("-r", 1)[-1]
        self._trial_info = TrialInfo(
            trial_id=spec.trial_id, experiment_id=experiment_id_of(spec.experiment), trial_seed=spec.trial_seed,
            hparams=dict(spec.hparams), config=dict(spec.experiment_config), steps_completed=spec.from_length,
            trial_run_id=int(run_number) if run_number.isdigit() else 0,
            debug=bool(spec.experiment_config.get("debug", False)))

    @property
    def trial(self) -> TrialInfo:
        return self._trial_info

    @property
    def latest_checkpoint(self) -> Optional[str]:
        """The storage id to resume from when the run started: this trial's newest checkpoint, else its
        PBT parent's, else None."""
        return self._latest_checkpoint

    @property
    def user_data(self) -> Dict[str, Any]:
        """The config's ``data`` section ({} without one)."""
        return dict(self._spec.data)

    @property
    def container_rank(self) -> int:
        return self._node_rank

    @property
    def container_slot_counts(self) -> List[int]:
        return [self._spec.ranks_per_node] * self._spec.nodes

    @property
    def container_addrs(self) -> List[str]:
        """``["127.0.0.1"]`` for a trial on one node. The nodes' addresses of a trial on several are not
        known to a rank: ``Unsupported`` (torch.distributed's ``MASTER_ADDR`` names rank 0's node)."""
        if self._spec.nodes == 1:
            return ["127.0.0.1"]
        raise Unsupported("ClusterInfo.container_addrs on several nodes",
                          "use MASTER_ADDR/MASTER_PORT (torch.distributed's env:// variables)")

    @property
    def gpu_uuids(self) -> List[str]:
        return list(self._gpu_uuids)


def get_cluster_info() -> Optional[ClusterInfo]:
    """The running trial's ``ClusterInfo``, or None outside an hpo-slurm run. A spec that cannot be
    read raises (``OSError`` or ``ProtocolError``): a run must not silently look like no run."""
    spec_path = os.environ.get(SPEC_ENV)
    if not spec_path:
        return None
    return ClusterInfo(RunSpec.read(Path(spec_path)))
