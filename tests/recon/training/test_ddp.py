from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import TINY, tiny_dataset

from recon.training import TrainConfig, train


def _config(**kw) -> TrainConfig:
    return TrainConfig(model="rim", model_config=TINY["rim"], max_steps=1, lr=1e-2, seed=0, device="cpu", **kw)


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        # data: sample 0 and 1; with batch size 1 each rank sees a different one
        result = train(_config(batch_size=1), tiny_dataset(n=2))
        torch.save({k: v.clone() for k, v in result.model.state_dict().items()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_average_gradients(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "weights")
    mp.spawn(_worker, args=(2, init, out), nprocs=2, join=True)
    w0 = torch.load(f"{out}.0", weights_only=True)
    w1 = torch.load(f"{out}.1", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # single process, both samples in one batch: the mean loss has the ranks' averaged gradient
    single = train(_config(batch_size=2), tiny_dataset(n=2)).model.state_dict()
    for k in w0:
        torch.testing.assert_close(w0[k], single[k], rtol=1e-4, atol=1e-6)
    # and it differs from training on one rank's sample alone
    alone = train(_config(batch_size=1), tiny_dataset(n=1)).model.state_dict()
    assert not all(torch.allclose(w0[k], alone[k], rtol=1e-4, atol=1e-6) for k in w0)
