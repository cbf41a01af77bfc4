"""Grid and random searches as plain Slurm job arrays with no resident driver.
May import: engine, searchers, executors, experiment, config, core."""
