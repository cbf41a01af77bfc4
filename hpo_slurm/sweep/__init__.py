"""Grid and random searches as plain Slurm job arrays with no resident driver: ``kind`` (which
searches and experiments are sweeps), ``plan`` (the trials a sweep creates), ``launch`` (start, dry
run), ``refresh`` (status refresh, ``--resubmit``), ``driving`` (the short-lived driver they use).
The command itself is ``hpo_slurm.cli.sweep``.
May import: engine, searchers, executors, experiment, config, core."""
