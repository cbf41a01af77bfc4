"""hpo-slurm's sbatch templates, installed as the package data ``hpo_slurm.sbatch_templates``
(read through ``hpo_slurm.executors.templates``)."""
