"""``determined.experimental``, the client of a Determined master: not supported on hpo-slurm (importing
it raises a one-line ``Unsupported``)."""

from hpo_slurm.compat.errors import Unsupported

raise Unsupported("determined.experimental (the Determined master's client)",
                  "read results with `hpo-slurm best/export NAME`; checkpoints are folders under trials/<id>/checkpoints/")
