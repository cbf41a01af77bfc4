"""Kept so jobs queued by hpo-slurm 0.1.0 still run: they start ``python -m hpo_slurm.slurm_task FOLDER``
and their pickles name ``hpo_slurm.slurm_task.run_task``. New jobs use ``hpo_slurm.tasks.slurm_task``."""

from hpo_slurm.tasks.slurm_task import main, run_task  # noqa: F401  (names old pickles load)

if __name__ == "__main__":
    main()
