"""A trial whose hyperparameters cannot train: it raises det.InvalidHP inside the core context, or
reports the early exit itself (hparams["how"])."""

import sys

import determined as det

if __name__ == "__main__":
    info = det.get_cluster_info()
    with det.core.init() as core_context:
        if info.trial.hparams["how"] == "raise":
            raise det.InvalidHP("increment_by cannot be negative")
        core_context.train.report_early_exit(det.core.EarlyExitReason.INVALID_HP)
        sys.exit(0)
