"""Determined's core_api tutorial stage 4 as torch.distributed runs it: started by
`python3 -m determined.launch.torch_distributed python3 distributed.py`, one process per rank. Each
batch x grows by the sum of every rank's increment_by (an allgather); every 10 batches the chief
reports, every rank saves its shard of a sharded checkpoint, and all ask should_preempt(). Each rank
writes what it saw to probe-<rank>.json next to the run's spec (test instrumentation only)."""

import json
import os
import pathlib
import time

import torch.distributed as dist

import determined as det


def main():
    dist.init_process_group("gloo")
    distributed = det.core.DistributedContext.from_torch_distributed()
    info = det.get_cluster_info()
    rank = distributed.rank
    data = info.user_data
    probe = {"rank": rank, "size": distributed.size, "local_rank": distributed.local_rank,
             "cross_rank": distributed.cross_rank, "cross_size": distributed.cross_size,
             "group_rank": os.environ.get("GROUP_RANK")}
    with det.core.init(distributed=distributed) as core_context:
        x, start = 0, 0
        if info.latest_checkpoint is not None:
            with core_context.checkpoint.restore_path(info.latest_checkpoint) as path:
                x, start = [int(v) for v in pathlib.Path(path, f"shard-{rank}").read_text().split(",")]
                probe["restored_metadata"] = core_context.checkpoint.get_metadata(info.latest_checkpoint)
        probe["start"] = start
        probe["broadcast"] = distributed.broadcast(f"from rank {rank}")
        probe["gather"] = distributed.gather(rank * 10)
        probe["allgather_local"] = distributed.allgather_local(rank)
        probe["broadcast_local"] = distributed.broadcast_local(rank + 100)
        for batch in range(start, data["max_length"]):
            x += sum(distributed.allgather(info.trial.hparams["increment_by"] * (rank + 1)))
            steps = batch + 1
            time.sleep(data.get("sleep_per_batch", 0.0))
            if steps % 10 == 0:
                if rank == 0:
                    core_context.train.report_validation_metrics(steps_completed=steps, metrics={"x": x})
                metadata = {"steps_completed": steps, "shards": {f"rank-{rank}": steps}}
                with core_context.checkpoint.store_path(metadata, shard=True) as (path, storage_id):
                    pathlib.Path(path, f"shard-{rank}").write_text(f"{x},{steps}")
                probe["storage_id"] = storage_id
                if core_context.preempt.should_preempt():
                    probe["preempted_at"] = steps
                    break
        probe["x"] = x
    spec = pathlib.Path(os.environ["HPO_SLURM_SPEC"])
    (spec.parent / f"probe-{rank}.json").write_text(json.dumps(probe))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
