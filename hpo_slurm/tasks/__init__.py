"""What runs inside a job: the run wrapper around the trial's entrypoint and the Slurm and sweep task
entries. Light: no sqlite, rich, click or yaml.
May import: hpo_slurm.trial, hpo_slurm.core, the standard library (submitit's task side lazily)."""
