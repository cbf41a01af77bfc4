"""The searcher-operations style of Determined's tutorial (before 0.38): train to each op.length, then
op.report_completed(x). Checkpoints every 10 batches and at the end of the op."""

import pathlib

import determined as det


def main():
    info = det.get_cluster_info()
    increment_by = info.trial.hparams["increment_by"]
    with det.core.init() as core_context:
        x, steps = 0, 0
        if info.latest_checkpoint is not None:
            with core_context.checkpoint.restore_path(info.latest_checkpoint) as path:
                x, steps = [int(v) for v in pathlib.Path(path, "state").read_text().split(",")]
        for op in core_context.searcher.operations():
            while steps < op.length:
                x += increment_by
                steps += 1
                if steps % 10 == 0:
                    core_context.train.report_training_metrics(steps_completed=steps, metrics={"x": x})
                    op.report_progress(steps)
            with core_context.checkpoint.store_path({"steps_completed": steps}) as (path, _):
                pathlib.Path(path, "state").write_text(f"{x},{steps}")
            op.report_completed(x)


if __name__ == "__main__":
    main()
