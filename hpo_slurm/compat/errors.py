"""The one error of the compatibility layer: a Determined feature hpo-slurm does not offer."""

from __future__ import annotations


class Unsupported(Exception):
    """A Determined feature that hpo-slurm does not offer. The message is one line: the feature, then
    what to do instead (``Unsupported("determined.launch.horovod", "use determined.launch.torch_distributed")``
    reads "determined.launch.horovod is not supported on hpo-slurm: use determined.launch.torch_distributed")."""

    def __init__(self, feature: str, instead: str = ""):
        self.feature = feature
        self.instead = instead
        message = f"{feature} is not supported on hpo-slurm"
        if instead:
            message += f": {instead}"
        super().__init__(message)
