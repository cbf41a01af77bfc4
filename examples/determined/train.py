"""Train DigitsTrial with Determined's Trainer API: the same script runs on hpo-slurm (``hpo-slurm
launch adaptive.yaml``) and alone (``python3 train.py --batches 50`` with hpo-slurm's ``determined`` on
``PYTHONPATH``, see ../README.md: hyperparameters from const.yaml).
"""

from __future__ import annotations

import argparse
import logging
import pathlib

import yaml

import determined as det
from determined import pytorch
from model_def import DigitsTrial


def run(max_length: pytorch.TrainUnit, local: bool = False) -> None:
    info = det.get_cluster_info()
    if local:
        hparams = yaml.safe_load(pathlib.Path("const.yaml").read_text())["hyperparameters"]
        latest_checkpoint = None
    else:
        hparams = info.trial.hparams
        latest_checkpoint = info.latest_checkpoint

    with pytorch.init(hparams=hparams if local else None) as train_context:
        trial = DigitsTrial(train_context, hparams=hparams)
        trainer = pytorch.Trainer(trial, train_context)
        trainer.fit(max_length=max_length, latest_checkpoint=latest_checkpoint,
                    validation_period=pytorch.Batch(20))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--batches", type=int)
    group.add_argument("--epochs", type=int)
    args = parser.parse_args()
    if args.batches:
        length = pytorch.Batch(args.batches)
    elif args.epochs:
        length = pytorch.Epoch(args.epochs)
    else:
        length = pytorch.Batch(100)
    run(length, local=det.get_cluster_info() is None)
