"""``python3 -m determined.launch.torch_distributed``: see ``hpo_slurm.compat.launch``."""

from hpo_slurm.compat.launch import torch_distributed_main

if __name__ == "__main__":
    torch_distributed_main()
