"""A trial of several ranks for the distributed tests: each rank records what it was given, trains in
lockstep with the others over a gloo process group (one all_reduce per step), reports, checkpoints a
shard per rank, and stops at a step the ranks agree on.

Hyperparameters: ``sleep`` (seconds a step), ``fail_rank``/``fail_step`` (that rank exits 1 there;
with ``fail_once`` only in the trial's first run), ``dist`` (false: no process group),
``checkpoint_every`` (every rank checkpoints its shard every that many steps).
``runs/<run>/probe/rank-<k>.json`` holds what rank k saw in the run's last attempt, and
``runs/<run>/probe/stops.jsonl`` a line per rank and stop: rank, step, reason, attempt.
"""

import json
import os
import sys
import time
from pathlib import Path

from hpo_slurm import trial

ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
       "CUDA_VISIBLE_DEVICES", "SLURMD_NODENAME")


def main() -> None:
    ctx = trial.init()
    hp = ctx.hparams
    probe = Path(ctx.spec["experiment_dir"]) / "runs" / ctx.run_id / "probe"
    probe.mkdir(parents=True, exist_ok=True)
    record = {"env": {k: os.environ.get(k) for k in ENV}, "rank": ctx.rank, "local_rank": ctx.local_rank,
              "world_size": ctx.world_size, "is_chief": ctx.is_chief, "pid": os.getpid(),
              "latest": str(ctx.latest_checkpoint) if ctx.latest_checkpoint else None, "steps": []}

    def save() -> None:
        path = probe / f"rank-{ctx.rank}.json"
        path.with_suffix(".tmp").write_text(json.dumps(record))
        os.replace(path.with_suffix(".tmp"), path)

    torch = None
    if hp.get("dist", True):
        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo")
    start = ctx.latest_checkpoint_length
    if ctx.latest_checkpoint is not None:
        shards = sorted(p.name for p in ctx.latest_checkpoint.glob("shard-*"))
        record["resumed_shards"] = shards
    total = start
    save()
    for step in range(start + 1, ctx.target_length + 1):
        time.sleep(hp.get("sleep", 0.05))
        if step == hp.get("fail_step") and ctx.rank == hp.get("fail_rank"):
            marker = ctx.trial_dir / "failed-once"
            if not (hp.get("fail_once") and marker.exists()):
                marker.touch()
                sys.exit(1)
        if torch is not None:
            value = torch.tensor([float(step)])
            torch.distributed.all_reduce(value)
            total = int(value.item()) // ctx.world_size
        else:
            total = step
        record["steps"].append(total)
        ctx.report_training(step, {"loss": 1.0 / step, "reporting_rank": ctx.rank})
        if hp.get("checkpoint_every") and step % hp["checkpoint_every"] == 0 and step < ctx.target_length:
            with ctx.checkpoint(step) as path:
                (path / f"shard-{ctx.rank}").write_text(str(step))
        if ctx.should_stop():
            with ctx.checkpoint(step) as path:
                (path / f"shard-{ctx.rank}").write_text(str(step))
            record["stopped_at"] = step
            record["stop_reason"] = ctx.stop_reason
            save()
            line = {"rank": ctx.rank, "step": step, "reason": ctx.stop_reason,
                    "attempt": os.environ.get("HPO_SLURM_ATTEMPT")}
            with open(probe / "stops.jsonl", "a") as stops:
                stops.write(json.dumps(line) + "\n")
            return
        save()
    ctx.report_validation(ctx.target_length, {"validation_loss": 1.0 / (1 + float(hp.get("x", 1)) ** 2),
                                              "reporting_rank": ctx.rank})
    with ctx.checkpoint(ctx.target_length) as path:
        (path / f"shard-{ctx.rank}").write_text(str(ctx.target_length))
    record["finished"] = True
    save()


if __name__ == "__main__":
    main()
