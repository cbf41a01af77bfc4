"""A trial that trains its own length, whatever the search's target: ``data.own_length`` + 8 x
``layers`` units (for searches without max_length, whose runs have no target). It validates every
``data.validate_every`` units and at its end, checkpoints at each validation and when asked to stop,
and resumes bit-for-bit from its checkpoint. Its last validation is a little worse than the one before
(it over-trains), so a trial's best is not its result. ``data.never_validate``: return at once, having
reported one training line. ``data.sleep_per_unit``: seconds slept per unit, so signals land mid-run."""

import json
import math
import random
import sys
import time
import zlib

from hpo_slurm import trial


def loss(hp, length, total, drift):
    floor = 10 * (hp["lr"] - 0.1) ** 2 + 0.01 * hp["layers"]
    return floor + 1.0 / math.sqrt(length + 1) + (0.05 if length == total else 0.0) + drift


def save(ctx, length, drift, rng):
    with ctx.checkpoint(length) as path:
        (path / "state.json").write_text(json.dumps({"length": length, "drift": drift, "random": rng.getstate()}))


def main():
    ctx = trial.init()
    if ctx.target_length != 0:
        sys.exit(f"an open-ended trial has no target, got {ctx.target_length}")
    data, hp = ctx.data, ctx.hparams
    if data.get("never_validate"):
        ctx.report_training(1, {"loss": 1.0})
        return
    total = int(data.get("own_length", 24)) + 8 * int(hp["layers"])
    every = int(data.get("validate_every", 8))
    sleep = float(data.get("sleep_per_unit", 0.0))
    rng = random.Random(zlib.crc32(json.dumps(hp, sort_keys=True).encode()) ^ ctx.trial_id)
    length, drift = 0, 0.0
    if ctx.latest_checkpoint is not None:
        state = json.loads((ctx.latest_checkpoint / "state.json").read_text())
        version, internal, gauss = state["random"]
        rng.setstate((version, tuple(internal), gauss))
        length, drift = state["length"], state["drift"]
    while length < total:
        if ctx.should_stop():
            save(ctx, length, drift, rng)
            return
        time.sleep(sleep)
        drift += rng.gauss(0.0, 1e-3)
        length += 1
        if length % 4 == 0:
            ctx.report_training(length, {"loss": loss(hp, length, total, drift)})
        if length % every == 0 or length == total:
            ctx.report_validation(length, {"validation_loss": loss(hp, length, total, drift)})
            save(ctx, length, drift, rng)


if __name__ == "__main__":
    main()
