"""A synthetic trial with no dependencies: a learning curve whose final loss depends on the
hyperparameters. It uses the whole trial API, so it is the example the end-to-end tests run.

    loss(L) = 10 (lr - 0.1)^2 + (momentum - 0.9)^2 + activation penalty
              + c(layers) / sqrt(L + 1) + drift(L)

``drift`` is a small random walk drawn from the trial's own ``random.Random``; its value and the
generator's state are saved in every checkpoint, so a resumed trial ends with exactly the loss an
uninterrupted one would.

``data:`` knobs (all optional), for demos and tests:
  sleep_per_unit: 0.002         seconds slept per unit of length, so signals can land mid-run
  report_every: 4               a training report every this many units
  fail_always: true             raise RuntimeError in every run
  fail_once_trial: N            trial N's first run raises RuntimeError halfway to its target
  invalid_hp_if_layers_above: K raise trial.InvalidHP when layers > K
  never_report: true            exit 0 at once, reporting nothing
"""

from __future__ import annotations

import json
import math
import random
import time
import zlib
from pathlib import Path

from hpo_slurm import trial

STATE_FILE = "quadratic_state.json"
FAILED_ONCE_MARKER = "quadratic-failed-once"
ACTIVATION_PENALTY = {"relu": 0.0, "tanh": 0.02, "sigmoid": 0.05}


def train(ctx: trial.TrialContext) -> None:
    """Train ``ctx``'s trial from its latest checkpoint to ``ctx.target_length``."""
    data = ctx.data
    hp = ctx.hparams
    if data.get("fail_always"):
        raise RuntimeError("data.fail_always is set")
    limit = data.get("invalid_hp_if_layers_above")
    if limit is not None and hp["layers"] > limit:
        raise trial.InvalidHP(f"layers={hp['layers']} > {limit}")
    if data.get("never_report"):
        return

    sleep = float(data.get("sleep_per_unit", 0.002))
    report_every = max(1, int(data.get("report_every", 4)))
    fail_at = _fail_once_length(ctx)

    state = load(ctx.latest_checkpoint) if ctx.latest_checkpoint is not None else fresh_state(ctx)
    rng = random.Random()
    rng.setstate(state["random"])
    length, drift = state["length"], state["drift"]

    while length < ctx.target_length:
        if ctx.should_stop():
            save(ctx, length, drift, rng)
            return
        if fail_at is not None and length >= fail_at:
            ctx.trial_dir.mkdir(parents=True, exist_ok=True)
            (ctx.trial_dir / FAILED_ONCE_MARKER).write_text(ctx.run_id)
            raise RuntimeError(f"data.fail_once_trial: trial {ctx.trial_id} fails its first run")
        time.sleep(sleep)
        drift += rng.gauss(0.0, 1e-3)
        length += 1
        if length % report_every == 0:
            ctx.report_training(length, {"loss": loss(hp, length, drift)})

    ctx.report_validation(length, {"validation_loss": loss(hp, length, drift)})
    save(ctx, length, drift, rng)


def loss(hp: dict, length: int, drift: float) -> float:
    opt = hp["optimizer"]
    floor = 10 * (opt["lr"] - 0.1) ** 2 + (opt["momentum"] - 0.9) ** 2
    floor += ACTIVATION_PENALTY.get(hp.get("activation", "relu"), 0.1)
    speed = 1.0 / math.sqrt(hp.get("layers", 1))
    return floor + speed / math.sqrt(length + 1) + drift


def fresh_state(ctx: trial.TrialContext) -> dict:
    """The state at length 0, seeded by the trial id and hyperparameters (stable across processes)."""
    seed = zlib.crc32(json.dumps(ctx.hparams, sort_keys=True).encode()) ^ ctx.trial_id
    return {"length": 0, "drift": 0.0, "random": random.Random(seed).getstate()}


def load(checkpoint: Path) -> dict:
    state = json.loads((checkpoint / STATE_FILE).read_text())
    version, internal, gauss = state["random"]  # JSON turned the tuples into lists
    state["random"] = (version, tuple(internal), gauss)
    return state


def save(ctx: trial.TrialContext, length: int, drift: float, rng: random.Random) -> None:
    with ctx.checkpoint(length) as path:
        state = {"length": length, "drift": drift, "random": rng.getstate()}
        (path / STATE_FILE).write_text(json.dumps(state))


def _fail_once_length(ctx: trial.TrialContext):  # type: ignore[no-untyped-def]
    """Where trial ``data.fail_once_trial`` fails (halfway through its first run), else None."""
    if ctx.data.get("fail_once_trial") != ctx.trial_id or (ctx.trial_dir / FAILED_ONCE_MARKER).exists():
        return None
    start = ctx.latest_checkpoint_length
    return start + max(1, (ctx.target_length - start) // 2)


if __name__ == "__main__":
    train(trial.init())
