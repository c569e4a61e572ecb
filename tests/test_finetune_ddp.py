"""The fine-tuning script under ``torchrun --nproc_per_node 2`` on the CPU (gloo).

Each rank reads its half of every global batch through the ``DistributedSampler``. DDP averages the gradients, so
after a few SGD steps both ranks must hold identical weights, equal to those of ONE process trained with the doubled
batch on the same data order. SGD is used because its update is linear in the gradient: had DDP summed instead of
averaged, the single-process weights would differ (AdamW would hide that, being invariant to the gradient's scale).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recvision.finetune import create_finetune_model, parse_args, run, seed_everything

STEPS = 3
COMMON = [
    "--model", "test_vir", "--data", "digits", "--img-size", "32", "--epochs", "1", "--steps-per-epoch", str(STEPS),
    "--opt", "sgd", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "0", "--sched", "step",
    "--no-progress", "--eval-splits", "val", "--seed", "3",
]  # fmt: skip

SCRIPT = """
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from recvision.finetune import parse_args, run

torch.set_num_threads(1)
result = run(parse_args({argv!r}))
assert dist.is_initialized() and dist.get_world_size() == 2, "the script did not join the process group"
state = {{k: v.detach().clone().contiguous() for k, v in result.model.state_dict().items()}}
save_file(state, {out_dir!r} + f"/rank{{dist.get_rank()}}.safetensors")
# one file per rank: the two ranks' stdout lines interleave
with open({out_dir!r} + f"/val_count{{dist.get_rank()}}.txt", "w") as fh:
    fh.write(str(result.results["val"]["count"]))
"""


@pytest.mark.slow
def test_torchrun_two_ranks_average_gradients(tmp_path: Path, torchrun) -> None:
    script = tmp_path / "ddp_finetune.py"
    argv = [*COMMON, "--batch-size", "8", "--output", str(tmp_path / "ckpt")]
    script.write_text(textwrap.dedent(SCRIPT).format(argv=argv, out_dir=str(tmp_path)))
    proc = torchrun([str(script)])
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # evaluation is sharded without duplicates and summed over the ranks: every val image counted once
    assert [(tmp_path / f"val_count{r}.txt").read_text() for r in range(2)] == ["359", "359"]
    assert proc.stdout.count("| split |") == 1  # the table is printed by rank 0 only
    assert (tmp_path / "ckpt" / "last.safetensors").is_file()

    w0 = load_file(tmp_path / "rank0.safetensors")
    w1 = load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "the ranks ended with different weights"

    single = run(parse_args([*COMMON, "--batch-size", "16"]), log=lambda _msg: None).model.state_dict()
    seed_everything(3)  # what run() does before building the model
    initial = create_finetune_model(parse_args(COMMON), num_classes=10).state_dict()
    moved = [k for k in w0 if not torch.allclose(w0[k], initial[k], atol=1e-6)]
    assert moved, "training did not change the weights"
    for k in w0:
        torch.testing.assert_close(w0[k], single[k], rtol=1e-4, atol=1e-6, msg=f"{k}: DDP != single process")
