"""Sweeps as plain Slurm job arrays. ``executor`` (the ``array`` executor) uses: ``caps`` (how runs
are cut into arrays and waves), ``cluster`` (the cluster's limits, jobs by name), ``render`` and
``scripts`` (the sbatch scripts), ``manifest`` and ``files`` (each array's folder), ``waves`` (where
each array of a wave chain stands); ``wave_job`` is what a wave job runs.
May import: executors.base, executors.slurm, tasks, config, core."""
