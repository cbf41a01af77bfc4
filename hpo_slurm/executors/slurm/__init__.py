"""The Slurm executor: one batched submitit job per batch of runs, and the Slurm commands (sbatch,
squeue, sacct, scancel) and parsers every Slurm-facing part shares. May import: executors.base, tasks, config, core."""
