"""The experiment config: Determined's experiment YAML plus a ``slurm:`` section, parsed and checked into
typed objects, and the hyperparameter spaces it declares.
May import: hpo_slurm.core, PyYAML."""
