"""The ``module:function`` entrypoint form (``entrypoint: train_fn:train``): hpo-slurm imports this
module from the context folder and calls ``train(ctx)`` in the job's own process, with the stop
signals already routed to ``ctx.should_stop()``. No ``trial.init()`` and no ``__main__`` block.
"""

from train import train  # the same loop as `python3 train.py`

__all__ = ["train"]
