"""A real ``torchrun --nproc_per_node 2`` launch of the training loop on the CPU (gloo).

The launcher is run as ``python -m torch.distributed.run`` (the module behind the ``torchrun`` command) with this
interpreter, so the ranks import the same ``recon`` as the test. Each rank trains on its shard of the data with
batch size 1; after every step DDP averages the gradients, so both ranks must end with identical weights, equal to
those of a single process trained with batch size 2 on the concatenated batches (same data order, see
:func:`recon.training.loop._batches`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from helpers import TINY, tiny_dataset
from safetensors.torch import load_file

from recon.training import TrainConfig, train

STEPS = 3  # crosses an epoch boundary: 4 samples = 2 steps per epoch on each of 2 ranks

SCRIPT = """
import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, {helpers_dir!r})
from helpers import TINY, tiny_dataset  # noqa: E402

from recon.training import TrainConfig, train  # noqa: E402

torch.set_num_threads(1)
config = TrainConfig(
    model="rim", model_config=TINY["rim"], max_steps={steps}, batch_size=1, lr=1e-2, seed=0, device="cpu"
)
result = train(config, tiny_dataset(n=4))
assert dist.is_initialized() and dist.get_world_size() == 2, "the loop did not join the process group"
rank = dist.get_rank()
state = {{k: v.detach().clone().contiguous() for k, v in result.model.state_dict().items()}}
save_file(state, os.path.join({out_dir!r}, f"rank{{rank}}.safetensors"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_two_ranks_match_single_process(tmp_path: Path, torchrun) -> None:
    script = tmp_path / "train_ddp.py"
    helpers_dir = str(Path(__file__).parent)
    script.write_text(textwrap.dedent(SCRIPT).format(helpers_dir=helpers_dir, steps=STEPS, out_dir=str(tmp_path)))
    proc = torchrun([str(script)])
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    w0 = load_file(tmp_path / "rank0.safetensors")
    w1 = load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "the ranks ended with different weights"

    torch.manual_seed(0)
    base = {"model": "rim", "model_config": TINY["rim"], "max_steps": STEPS, "lr": 1e-2, "seed": 0, "device": "cpu"}
    single = train(TrainConfig(batch_size=2, **base), tiny_dataset(n=4)).model.state_dict()
    assert w0.keys() == single.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], single[k], rtol=1e-4, atol=1e-6, msg=f"parameter {k}")
    # the check has teeth: one rank's shard alone (no averaging) gives other weights
    alone = train(TrainConfig(batch_size=1, **base), tiny_dataset(n=4)).model.state_dict()
    assert not all(torch.allclose(w0[k], alone[k], rtol=1e-4, atol=1e-6) for k in w0)
