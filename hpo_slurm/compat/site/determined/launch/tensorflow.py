"""``python3 -m determined.launch.tensorflow``: not supported on hpo-slurm (one line, exit status 2)."""

from hpo_slurm.compat.launch import unsupported_main

if __name__ == "__main__":
    unsupported_main("tensorflow")
