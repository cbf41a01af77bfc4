"""``python3 -m determined.launch.wrap_rank``: see ``hpo_slurm.compat.launch``."""

from hpo_slurm.compat.launch import wrap_rank_main

if __name__ == "__main__":
    wrap_rank_main()
