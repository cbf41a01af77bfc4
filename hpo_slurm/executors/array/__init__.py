"""Sweeps as plain Slurm job arrays: cluster caps, the rendered array scripts, submission in waves
and the wave job. May import: executors.base, executors.slurm, tasks, config, core."""
