"""``hpo_slurm.torch`` in distributed trials, without the job side: the tests start two rank processes
themselves (a gloo group on 127.0.0.1, CPU only) and check init_distributed, the rank-0 model save with
every rank's random generators, loading in every rank, and bit-exact resume of DDP and of a model
sharded with FSDP's fully_shard (torch.distributed.checkpoint)."""

from __future__ import annotations

import os
import random
import socket
import types
import warnings

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is needed", allow_module_level=True)

import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from helpers_spec import EXAMPLES, make_run  # noqa: E402
from hpo_slurm.torch import (  # noqa: E402
    RANK_FILE,
    SHARDED_DIR,
    STATE_FILE,
    close_distributed,
    init_distributed,
    load_state,
    save_state,
)

WORLD = 2
SHARD = 8  # examples per rank per step
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


# ---- two ranks on this machine ---------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(fn, *args) -> None:
    """``fn(rank, *args)`` in WORLD fresh processes, each with the environment a rank of a distributed
    trial gets; an exception in any rank fails the test with that rank's traceback."""
    torch.multiprocessing.spawn(_rank_main, args=(_free_port(), fn, args), nprocs=WORLD, join=True)


def _rank_main(rank, port, fn, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      NODE_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="")
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    finally:
        close_distributed()


@pytest.fixture
def one_process(monkeypatch):
    """No rank variables: this test process is a trial of one rank."""
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ---- init_distributed ------------------------------------------------------------------------------
def _check_group(rank, spec_path):
    from hpo_slurm.core.fsio import read_json
    from hpo_slurm.trial import TrialContext

    ctx = TrialContext(read_json(spec_path))
    device = init_distributed(ctx)
    assert device == torch.device("cpu")
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    assert (dist.get_rank(), dist.get_world_size()) == (rank, WORLD)
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    assert total.item() == 3.0
    assert init_distributed(ctx) == device  # a second call keeps the group


def test_init_distributed_joins_a_gloo_group_of_the_trials_ranks(tmp_path):
    spec_path = make_run(tmp_path, EXAMPLES / "digits", "python3 train_ddp.py", {}, 10, ranks_per_node=WORLD)
    spawn(_check_group, spec_path)


def test_one_rank_gets_its_device_and_no_process_group(one_process):
    assert init_distributed() == torch.device("cpu")
    assert not dist.is_initialized()


def test_the_contexts_ranks_come_before_the_environment(one_process, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    ctx = types.SimpleNamespace(rank=0, local_rank=0, world_size=1)
    assert init_distributed(ctx) == torch.device("cpu")
    assert not dist.is_initialized()


def test_missing_or_inconsistent_rank_variables_are_errors(one_process, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match=r"\$MASTER_ADDR and \$MASTER_PORT not set"):
        init_distributed()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(RuntimeError, match="rank 2 .* does not fit a world of 2"):
        init_distributed()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(RuntimeError, match=r"\$RANK: expected an integer"):
        init_distributed()
    assert not dist.is_initialized()


# ---- saving and loading in every rank ------------------------------------------------------------
def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1))


def _step(model, optimizer, scheduler, data, rank):
    batch = torch.randn(WORLD * SHARD, 4, generator=data)
    mine = batch[rank * SHARD:(rank + 1) * SHARD]
    loss = (model(mine).squeeze(1) - mine.sum(dim=1)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def _build(seed):
    torch.manual_seed(seed)
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)


def _draws(data):
    return {"torch": torch.rand(4), "python": random.random(), "data": torch.rand(4, generator=data)}


def _save_then_load_in_every_rank(rank, folder):
    init_distributed()
    model, optimizer, scheduler = _build(seed=0)
    ddp = DistributedDataParallel(model)
    torch.manual_seed(10 + rank)  # each rank its own dropout noise
    random.seed(20 + rank)
    data = torch.Generator().manual_seed(5)
    for _ in range(3):
        _step(ddp, optimizer, scheduler, data, rank)
    save_state(folder / "shared", ddp, optimizer, scheduler, extra={"length": 3, "by": rank}, generators={"data": data})
    if rank == 1:  # alone, so nothing but rank 1's own file can appear there
        save_state(folder / "rank-1-alone", ddp, optimizer, scheduler, extra={"by": rank}, generators={"data": data})
    weights = {name: p.detach().clone() for name, p in model.state_dict().items()}
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    expected = _draws(data)
    torch.save(weights, folder / f"weights-{rank}.pt")
    dist.barrier()  # every rank's files are written

    model, optimizer, scheduler = _build(seed=99)  # a fresh process would start elsewhere
    data = torch.Generator().manual_seed(99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same number of ranks: no warning, no weights_only fallback
        extra = load_state(folder / "shared", model, optimizer, scheduler, generators={"data": data})
    assert extra == {"length": 3, "by": 0}  # rank 0's, in every rank
    assert all(torch.equal(p, weights[name]) for name, p in model.state_dict().items())
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], m) for p, m in zip(model.parameters(), momentum))
    assert scheduler.last_epoch == 3
    got = _draws(data)
    assert torch.equal(got["torch"], expected["torch"]) and got["python"] == expected["python"]
    assert torch.equal(got["data"], expected["data"])


def test_rank_0_saves_the_model_every_rank_its_generators_and_every_rank_loads(tmp_path, one_process):
    spawn(_save_then_load_in_every_rank, tmp_path)
    shared = tmp_path / "shared"
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        [STATE_FILE, RANK_FILE.format(rank=0), RANK_FILE.format(rank=1)])
    assert [p.name for p in (tmp_path / "rank-1-alone").iterdir()] == [RANK_FILE.format(rank=1)]
    ranks = [torch.load(shared / RANK_FILE.format(rank=k), weights_only=True) for k in range(WORLD)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])  # the ranks' generators differ
    state = torch.load(shared / STATE_FILE, weights_only=True)
    assert state["world_size"] == WORLD and state["rng"] is None

    # one process loading a checkpoint of two ranks: the weights come back, with a warning about the rest
    model, optimizer, scheduler = _build(seed=99)
    with pytest.warns(UserWarning, match="saved by 2 rank"):
        extra = load_state(shared, model, optimizer, scheduler, generators={"data": torch.Generator()})
    assert extra["length"] == 3
    weights = torch.load(tmp_path / "weights-0.pt", weights_only=True)
    assert all(torch.equal(p, weights[name]) for name, p in model.state_dict().items())


# ---- bit-exact resume ------------------------------------------------------------------------------
def _train(rank, folder, mode, resume, stop_at, total, out):
    """Train ``mode`` ("ddp" or "fsdp") from scratch or from ``folder/ckpt``, up to ``stop_at`` steps
    (then checkpoint) or ``total``; write this rank's losses and final full parameters to ``out``."""
    init_distributed()
    torch.use_deterministic_algorithms(True)
    model, _, _ = _build(seed=0)  # the same initial weights in every rank
    if mode == "ddp":
        wrapped = DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        wrapped = fully_shard(model)
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    torch.manual_seed(10 + rank)
    random.seed(20 + rank)
    data = torch.Generator().manual_seed(5)
    length = 0
    if resume:
        length = load_state(folder / "ckpt", wrapped, optimizer, scheduler, generators={"data": data})["length"]
    losses = []
    while length < (stop_at or total):
        losses.append(_step(wrapped, optimizer, scheduler, data, rank) + random.random())
        length += 1
    if stop_at:
        save_state(folder / "ckpt", wrapped, optimizer, scheduler, extra={"length": length},
                   generators={"data": data}, sharded=mode == "fsdp")
    full = {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for name, p in model.named_parameters()}
    torch.save({"losses": torch.tensor(losses, dtype=torch.float64), "params": full}, out / f"{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_a_stopped_and_resumed_training_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path, mode, one_process):
    if mode == "fsdp" and not hasattr(pytest.importorskip("torch.distributed.fsdp"), "fully_shard"):
        pytest.skip("this torch has no fully_shard")
    total = 12
    runs = {name: tmp_path / name for name in ("straight", "first", "second")}
    for folder in runs.values():
        folder.mkdir()
    spawn(_train, tmp_path, mode, False, None, total, runs["straight"])
    spawn(_train, tmp_path, mode, False, total // 2, total, runs["first"])
    spawn(_train, tmp_path, mode, True, None, total, runs["second"])

    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    if mode == "fsdp":
        assert SHARDED_DIR in names
        shards = sorted(p.name for p in (tmp_path / "ckpt" / SHARDED_DIR).iterdir() if p.suffix == ".distcp")
        assert len(shards) == WORLD  # each rank wrote its own shard
        assert torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=True)["model"] is None
    else:
        assert SHARDED_DIR not in names
    for rank in range(WORLD):
        straight, first, second = (torch.load(runs[n] / f"{rank}.pt", weights_only=True) for n in runs)
        assert torch.equal(torch.cat([first["losses"], second["losses"]]), straight["losses"])
        assert straight["params"].keys() == second["params"].keys()
        for name, value in straight["params"].items():
            assert torch.equal(second["params"][name], value), (rank, name)
    # the ranks really drew different dropout noise, so each rank's own generators had to come back
    losses = [torch.load(runs["straight"] / f"{rank}.pt", weights_only=True)["losses"] for rank in range(WORLD)]
    assert not torch.equal(losses[0], losses[1])


# ---- sharded form in one process -----------------------------------------------------------------
def test_sharded_checkpoint_in_one_process_round_trips(tmp_path, one_process):
    model, optimizer, scheduler = _build(seed=0)
    data = torch.Generator().manual_seed(5)
    for _ in range(3):
        _step(model, optimizer, scheduler, data, 0)
    save_state(tmp_path, model, optimizer, scheduler, extra={"length": 3}, generators={"data": data}, sharded=True)
    assert (tmp_path / SHARDED_DIR / ".metadata").is_file()
    expected = [_step(model, optimizer, scheduler, data, 0) for _ in range(3)]

    model, optimizer, scheduler = _build(seed=99)
    assert load_state(tmp_path, model, optimizer, scheduler, generators={"data": data}) == {"length": 3}
    assert [_step(model, optimizer, scheduler, data, 0) for _ in range(3)] == expected


def test_a_sharded_save_of_several_ranks_needs_the_process_group(tmp_path, one_process, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="call init_distributed first"):
        save_state(tmp_path, _model(), sharded=True)
