"""The plain data every layer shares: searcher actions, trial and run states, errors, the experiment
folder layout, the driver-to-job protocol, seeded randomness and safe file writes.
May import: the standard library only (nothing of hpo_slurm outside core)."""
