"""Counts to data["max_length"] in steps of 5, validating each; the trial whose hparams["ends_at"] is
reached first ends itself there (report_early_exit(USER_REQUESTED_STOP)), as a script with its own
early-stopping rule does."""

import determined as det

if __name__ == "__main__":
    info = det.get_cluster_info()
    ends_at = info.trial.hparams["ends_at"]
    with det.core.init() as core_context:
        for steps in range(5, info.user_data["max_length"] + 1, 5):
            core_context.train.report_validation_metrics(steps_completed=steps, metrics={"x": steps})
            if steps == ends_at:
                core_context.train.report_early_exit(det.core.EarlyExitReason.USER_REQUESTED_STOP)
                break
