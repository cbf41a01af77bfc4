"""A pool of worker jobs that run a search's runs one after another (``slurm.pool``)."""
