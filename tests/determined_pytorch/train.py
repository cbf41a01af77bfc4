"""The Trainer form of ``model_def.DigitsTrial``, as Determined's tutorials write it:
``python3 train.py --epochs 2 --validate 10 --checkpoint 0 --report 5`` (batches for the periods;
0: no period)."""

from __future__ import annotations

import argparse
import logging

import determined as det
from determined import pytorch
from model_def import DigitsTrial


def main() -> None:
    parser = argparse.ArgumentParser()
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--batches", type=int)
    length.add_argument("--epochs", type=int)
    parser.add_argument("--validate", type=int, default=0)
    parser.add_argument("--checkpoint", type=int, default=0)
    parser.add_argument("--report", type=int, default=100)
    args = parser.parse_args()
    max_length = pytorch.Batch(args.batches) if args.batches else pytorch.Epoch(args.epochs or 1)
    info = det.get_cluster_info()
    with pytorch.init() as context:
        trial = DigitsTrial(context)
        pytorch.Trainer(trial, context).fit(
            max_length=max_length,
            latest_checkpoint=info.latest_checkpoint,
            validation_period=pytorch.Batch(args.validate) if args.validate else None,
            checkpoint_period=pytorch.Batch(args.checkpoint) if args.checkpoint else None,
            reporting_period=pytorch.Batch(args.report),
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    main()
